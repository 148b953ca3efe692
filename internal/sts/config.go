package sts

import (
	"errors"
	"fmt"
	jose "github.com/go-jose/go-jose/v4"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/pki"
	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
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
	// whose Host is one of them get endpoint URLs on that host.
	// Default: localhost, 127.0.0.1.
	Hosts []string
	// PublicURL is the canonical base URL: the v2 issuer is always on it
	// (MSAL requires the authority host to equal the issuer host, so MSAL
	// clients use it as their authority), and endpoint URLs are when a
	// request's Host is not in Hosts. Default https://{Hosts[0]}:{listen port}.
	PublicURL string

	Bootstrap *Bootstrap // applied idempotently by Open

	// TokenLifetime is the lifetime of tokens for app registrations (Entra:
	// 1 h); IdentityTokenLifetime that of tokens for managed identities
	// (Entra: 24 h). Default 1h and 24h.
	TokenLifetime         time.Duration
	IdentityTokenLifetime time.Duration
	KeyRotationInterval   time.Duration // how long a key signs; default 24h
	// KeyPublishLead is how long a new signing key is in the JWKS before it
	// signs, so verifiers that cache the JWKS (for JWKSMaxAge) know it when
	// its first token arrives. Default 1h; at least JWKSMaxAge+5m and less
	// than KeyRotationInterval.
	KeyPublishLead time.Duration
	// KeyOverlap is how long a retired key stays published. Default the
	// longest token lifetime + 10m; must be ≥ the longest token lifetime.
	KeyOverlap    time.Duration
	RotationCheck time.Duration // how often ListenAndServe checks for due rotation; default 1m
	AssertionSkew time.Duration // leeway for assertion exp/nbf/iat; default 1m
	RSABits       int           // signing key size; default 2048

	// ExternalTrust is what federated-assertion issuers are fetched with.
	ExternalTrust     jwks.Trust
	ExternalTransport http.RoundTripper // optional override (tests, proxies)
	JWKSMinRefresh    time.Duration     // unknown-kid refetch rate limit; default 10s

	// ClusterIssuers are OIDC issuers the sts hosts for clusters whose API
	// server does not publish discovery: name → the API server's
	// service-account public keys. Issuer URL: {PublicURL}/clusters/{name}.
	ClusterIssuers map[string]jose.JSONWebKeySet

	// SystemTenantID is the tenant whose administrators may create tenants
	// and administer every tenant through /podid/v1 (the operator's own).
	// Administrators of any other tenant manage only their tenant. Default:
	// the first tenant of Bootstrap; without either, no caller can create
	// tenants (the bootstrap file still can).
	SystemTenantID string

	// AdminRole is the Azure built-in role which, assigned at the tenant
	// root "/", makes a principal an administrator of its tenant's
	// directory (/podid/v1). ARM calls are authorized by Azure RBAC at
	// their scope, where a root assignment applies everywhere in the
	// tenant. Default "Owner".
	AdminRole string

	// VaultDNSSuffix is the DNS suffix of the Key Vaults the sts serves:
	// vault v is https://v.{suffix}/ and its tokens are for
	// https://{suffix}. The serving certificate names *.{suffix}. Default
	// vault.azure.net (what the unmodified SDKs expect; point that name at
	// the sts with DNS).
	VaultDNSSuffix string

	// Metrics, if set, receives the sts's Prometheus collectors.
	Metrics prometheus.Registerer
	// MetricsAddr, if set, serves /metrics (plain HTTP, its own listener)
	// from a registry of its own. HealthAddr serves /healthz and /readyz,
	// DebugAddr net/http/pprof; empty disables, equal addresses share a
	// listener.
	MetricsAddr, HealthAddr, DebugAddr string

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
	if c.IdentityTokenLifetime == 0 {
		c.IdentityTokenLifetime = 24 * time.Hour
	}
	if c.IdentityTokenLifetime < 5*time.Minute || c.IdentityTokenLifetime > 24*time.Hour {
		return fmt.Errorf("sts: identity token lifetime %s outside [5m, 24h]", c.IdentityTokenLifetime)
	}
	if c.KeyRotationInterval == 0 {
		c.KeyRotationInterval = 24 * time.Hour
	}
	longest := max(c.TokenLifetime, c.IdentityTokenLifetime)
	if c.KeyOverlap == 0 {
		c.KeyOverlap = longest + 10*time.Minute
	}
	// A retired key must stay published for as long as its last token lives.
	if c.KeyOverlap < longest {
		return fmt.Errorf("sts: key overlap %s shorter than the longest token lifetime %s", c.KeyOverlap, longest)
	}
	if c.KeyPublishLead == 0 {
		c.KeyPublishLead = time.Hour
	}
	if minLead := JWKSMaxAge + 5*time.Minute; c.KeyPublishLead < minLead {
		return fmt.Errorf("sts: key publish lead %s below %s (the JWKS cache lifetime plus margin)", c.KeyPublishLead, minLead)
	}
	if c.KeyRotationInterval <= c.KeyPublishLead {
		return fmt.Errorf("sts: key rotation interval %s not longer than the key publish lead %s", c.KeyRotationInterval, c.KeyPublishLead)
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
	if c.SystemTenantID == "" && c.Bootstrap != nil && len(c.Bootstrap.Tenants) > 0 {
		c.SystemTenantID = c.Bootstrap.Tenants[0].ID
	}
	if c.SystemTenantID != "" && !guidRE.MatchString(c.SystemTenantID) {
		return fmt.Errorf("sts: system tenant id %q is not a GUID", c.SystemTenantID)
	}
	c.SystemTenantID = strings.ToLower(c.SystemTenantID)
	if c.VaultDNSSuffix == "" {
		c.VaultDNSSuffix = keyvault.DefaultDNSSuffix
	}
	if err := keyvault.ValidDNSSuffix(c.VaultDNSSuffix); err != nil {
		return fmt.Errorf("sts: %w", err)
	}
	c.VaultDNSSuffix = strings.ToLower(c.VaultDNSSuffix)
	if c.AdminRole == "" {
		c.AdminRole = rbac.Owner
	}
	if _, ok := rbac.ByName(c.AdminRole); !ok {
		return fmt.Errorf("sts: admin role %q is not an Azure built-in role", c.AdminRole)
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
	Subject   string   `json:"subject,omitempty"`
	Audiences []string `json:"audiences,omitempty"`
	// ClaimsMatchingExpression instead of Subject: a flexible federated
	// credential (e.g. every ServiceAccount of a namespace).
	ClaimsMatchingExpression *store.ClaimsMatchingExpression `json:"claimsMatchingExpression,omitempty"`
}

// BootstrapRoleAssignment grants Role to the principal with client id
// Principal: with Scope, the Azure built-in role at that ARM scope (Azure
// RBAC); with Resource, the app role on that application (the roles claim
// of its tokens), except that a Resource of https://management.azure.com
// means the built-in role at the tenant root "/" (ARM has no app roles).
// Exactly one of Resource and Scope.
type BootstrapRoleAssignment struct {
	Principal string `json:"principal"`
	Resource  string `json:"resource,omitempty"`
	Scope     string `json:"scope,omitempty"`
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
