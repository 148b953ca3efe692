package sts

import (
	"errors"
	"fmt"
	jose "github.com/go-jose/go-jose/v4"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/pki"
)

// Config configures a Server. Zero values get the documented defaults.
type Config struct {
	ListenAddr string // default 127.0.0.1:8443
	StatePath  string // bbolt file; required
	CAFile     string // if set, the CA PEM is written here (point SSL_CERT_FILE at it)
	// CA, if set, is the operator's CA (pki.LoadCA), used instead of the
	// stored one, so clients handed it at install keep trusting the sts.
	CA *pki.CA
	// Hosts are the serving certificate's names (DNS names or IPs). Requests
	// whose Host is one of them get URLs (discovery, v2 issuer) on that host,
	// as MSAL requires the issuer host to equal the authority host.
	// Default: localhost, 127.0.0.1.
	Hosts []string
	// PublicURL is the base URL used when a request's Host is not in Hosts.
	// Default https://{Hosts[0]}:{listen port}.
	PublicURL string

	Bootstrap *Bootstrap // applied idempotently by Open

	TokenLifetime       time.Duration // default 1h
	KeyRotationInterval time.Duration // default 24h
	KeyOverlap          time.Duration // default TokenLifetime+10m; must be ≥ TokenLifetime
	RotationCheck       time.Duration // how often ListenAndServe checks for due rotation; default 1m
	AssertionSkew       time.Duration // leeway for assertion exp/nbf/iat; default 1m
	RSABits             int           // signing key size; default 2048

	// ExternalTrust is what federated-assertion issuers are fetched with.
	ExternalTrust     jwks.Trust
	ExternalTransport http.RoundTripper // optional override (tests, proxies)
	JWKSMinRefresh    time.Duration     // unknown-kid refetch rate limit; default 10s

	// ClusterIssuers are OIDC issuers the sts hosts for clusters whose API
	// server does not publish discovery: name → the API server's
	// service-account public keys. Issuer URL: {PublicURL}/clusters/{name}.
	ClusterIssuers map[string]jose.JSONWebKeySet

	// AdminRole is the app role (on resource https://management.azure.com)
	// that the management API requires. Default "Owner".
	AdminRole string

	// Metrics, if set, receives the sts's Prometheus collectors.
	Metrics prometheus.Registerer
	// MetricsAddr, if set, serves /metrics (plain HTTP, its own mux and
	// listener, nothing else on it) from a registry of its own.
	MetricsAddr string

	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.StatePath == "" {
		return errors.New("sts: StatePath is required")
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:8443"
	}
	if len(c.Hosts) == 0 {
		c.Hosts = []string{"localhost", "127.0.0.1"}
	}
	if c.TokenLifetime == 0 {
		c.TokenLifetime = time.Hour
	}
	if c.TokenLifetime < 5*time.Minute || c.TokenLifetime > 24*time.Hour {
		return fmt.Errorf("sts: token lifetime %s outside [5m, 24h]", c.TokenLifetime)
	}
	if c.KeyRotationInterval == 0 {
		c.KeyRotationInterval = 24 * time.Hour
	}
	if c.KeyOverlap == 0 {
		c.KeyOverlap = c.TokenLifetime + 10*time.Minute
	}
	// A retired key must stay published for as long as its last token lives.
	if c.KeyOverlap < c.TokenLifetime {
		return fmt.Errorf("sts: key overlap %s shorter than token lifetime %s", c.KeyOverlap, c.TokenLifetime)
	}
	if c.KeyRotationInterval < time.Minute {
		return fmt.Errorf("sts: key rotation interval %s below 1m", c.KeyRotationInterval)
	}
	if c.RotationCheck == 0 {
		c.RotationCheck = time.Minute
	}
	if c.AssertionSkew == 0 {
		c.AssertionSkew = time.Minute
	}
	for name := range c.ClusterIssuers {
		if !clusterNameRE.MatchString(name) {
			return fmt.Errorf("sts: cluster issuer name %q must be a DNS label", name)
		}
	}
	if c.AdminRole == "" {
		c.AdminRole = "Owner"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Bootstrap is the declarative initial state. Applying it is idempotent:
// records are upserted by id, secrets and certificates added if missing.
// Nothing is deleted.
type Bootstrap struct {
	Tenants []BootstrapTenant `json:"tenants"`
}

// BootstrapTenant is one tenant and what lives in it.
type BootstrapTenant struct {
	ID              string                    `json:"id"`
	Domains         []string                  `json:"domains,omitempty"`
	Applications    []BootstrapApplication    `json:"applications,omitempty"`
	Identities      []BootstrapIdentity       `json:"identities,omitempty"`
	RoleAssignments []BootstrapRoleAssignment `json:"roleAssignments,omitempty"`
}

// BootstrapApplication is an app registration.
type BootstrapApplication struct {
	ClientID           string                       `json:"clientId"`
	ObjectID           string                       `json:"objectId,omitempty"`
	DisplayName        string                       `json:"displayName,omitempty"`
	IdentifierURIs     []string                     `json:"identifierUris,omitempty"`
	AccessTokenVersion int                          `json:"accessTokenVersion,omitempty"`
	Secrets            []BootstrapSecret            `json:"secrets,omitempty"`
	Certificates       []BootstrapCertificate       `json:"certificates,omitempty"`
	FederatedCreds     []BootstrapFederatedIdentity `json:"federatedIdentityCredentials,omitempty"`
}

// BootstrapSecret gives a secret's value inline, from a file or from an env var.
type BootstrapSecret struct {
	Value    string `json:"value,omitempty"`
	ValueEnv string `json:"valueEnv,omitempty"`
	File     string `json:"file,omitempty"`
}

// BootstrapCertificate gives a PEM certificate inline or from a file.
type BootstrapCertificate struct {
	PEM  string `json:"pem,omitempty"`
	File string `json:"file,omitempty"`
}

// BootstrapIdentity is a user-assigned managed identity.
type BootstrapIdentity struct {
	Subscription   string                       `json:"subscription"`
	ResourceGroup  string                       `json:"resourceGroup"`
	Name           string                       `json:"name"`
	Location       string                       `json:"location,omitempty"`
	ClientID       string                       `json:"clientId,omitempty"`
	PrincipalID    string                       `json:"principalId,omitempty"`
	FederatedCreds []BootstrapFederatedIdentity `json:"federatedIdentityCredentials,omitempty"`
}

// BootstrapFederatedIdentity is a federated identity credential.
type BootstrapFederatedIdentity struct {
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Audiences []string `json:"audiences,omitempty"`
}

// BootstrapRoleAssignment grants Role on Resource to the principal with
// client id Principal.
type BootstrapRoleAssignment struct {
	Principal string `json:"principal"`
	Resource  string `json:"resource"`
	Role      string `json:"role"`
}

// LoadBootstrap reads and strictly decodes a bootstrap YAML file (unknown
// fields are errors, so a typo does not silently drop a credential).
func LoadBootstrap(path string) (*Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bootstrap: %w", err)
	}
	return ParseBootstrap(raw)
}

// ParseBootstrap decodes bootstrap YAML strictly.
func ParseBootstrap(raw []byte) (*Bootstrap, error) {
	var b Bootstrap
	if err := yaml.UnmarshalStrict(raw, &b); err != nil {
		return nil, fmt.Errorf("parse bootstrap: %w", err)
	}
	return &b, nil
}
