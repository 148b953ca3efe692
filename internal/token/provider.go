package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/workloadidentity"
)

// DefaultAuthority is Entra ID's public-cloud authority host.
const DefaultAuthority = "https://login.microsoftonline.com"

// TokenRequester obtains a service-account token for the pod's service
// account, bound to the pod (name and UID), for one audience.
type TokenRequester interface {
	RequestToken(ctx context.Context, p Pod, audience string, expirationSeconds int64) (string, error)
}

// SecretReader reads one Secret's data. It is called only when a token is
// needed; the data is not kept.
type SecretReader interface {
	ReadSecret(ctx context.Context, ref types.NamespacedName) (map[string][]byte, error)
}

// Secret data keys, as in AAD Pod Identity.
const (
	SecretKeyClientSecret = "clientsecret"
	SecretKeyCertificate  = "certificate" // PEM: certificate(s) and private key
	SecretKeyPassword     = "password"    // optional, for an encrypted PEM key
)

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	// Authority is the identity provider's base URL; default DefaultAuthority.
	Authority string
	// HTTPClient reaches the identity provider (carry its CA here); default
	// http.DefaultClient.
	HTTPClient *http.Client
	// TokenRequester mints pod-bound service-account tokens. Required for
	// federated identities.
	TokenRequester TokenRequester
	// Secrets reads client secrets and certificates. Nil disables types 1 and 2.
	Secrets SecretReader
	// AssertionExpiration is the lifetime asked for the service-account
	// token; default 10m (the API server's minimum).
	AssertionExpiration time.Duration
	Logger              *slog.Logger
}

// Provider is a Source that obtains tokens from an Entra-compatible identity
// provider with MSAL Go's confidential client.
type Provider struct {
	cfg ProviderConfig

	mu      sync.Mutex // protects clients
	clients map[clientKey]confidential.Client
}

type clientKey struct{ authority, tenant, clientID string }

// maxClients bounds the federated MSAL clients kept for reuse.
const maxClients = 4096

// NewProvider assembles a Provider.
// missingFICCodes are Entra's answers when no federated credential of the
// identity matches the pod's assertion: none at all (70021), or none with
// its issuer, audience or subject (700211, 700212, 700213, 7002138).
var missingFICCodes = []string{"AADSTS70021", "AADSTS700211", "AADSTS700212", "AADSTS700213", "AADSTS7002138"}

func NewProvider(cfg ProviderConfig) *Provider {
	if cfg.Authority == "" {
		cfg.Authority = DefaultAuthority
	}
	cfg.Authority = strings.TrimRight(cfg.Authority, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.AssertionExpiration < 10*time.Minute {
		cfg.AssertionExpiration = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Provider{cfg: cfg, clients: map[clientKey]confidential.Client{}}
}

// Token implements Source.
func (p *Provider) Token(ctx context.Context, r Request) (Token, error) {
	id := r.Identity
	if id.TenantID == "" {
		return Token{}, &Error{Reason: ReasonProviderRejected, Msg: fmt.Sprintf("identity %s (%s) has no tenant id and no default tenant is configured", id.ClientID, id.Origin)}
	}
	authority := id.Authority
	if authority == "" {
		authority = p.cfg.Authority
	}
	authority = strings.TrimRight(authority, "/")
	switch id.Kind {
	case Federated:
		return p.federated(ctx, authority, r)
	case Secret, Certificate:
		return p.withSecret(ctx, authority, r)
	}
	return Token{}, fmt.Errorf("identity %s: unknown kind %v", id.ClientID, id.Kind)
}

type assertionKey struct{}

// federated exchanges a pod-bound service-account token for an access token.
func (p *Provider) federated(ctx context.Context, authority string, r Request) (Token, error) {
	if p.cfg.TokenRequester == nil {
		return Token{}, errors.New("federated identities need a TokenRequester")
	}
	sat, err := p.cfg.TokenRequester.RequestToken(ctx, r.Pod, workloadidentity.TokenAudience, int64(p.cfg.AssertionExpiration/time.Second))
	if err != nil {
		return Token{}, err
	}
	cl, err := p.federatedClient(authority, r.Identity)
	if err != nil {
		return Token{}, err
	}
	res, err := cl.AcquireTokenByCredential(context.WithValue(ctx, assertionKey{}, sat), []string{r.Scope()})
	if err != nil {
		return Token{}, classify(err, r, sat)
	}
	return Token{AccessToken: res.AccessToken, ExpiresOn: res.ExpiresOn, ClientID: r.Identity.ClientID}, nil
}

func (p *Provider) federatedClient(authority string, id Identity) (confidential.Client, error) {
	k := clientKey{authority, id.TenantID, strings.ToLower(id.ClientID)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[k]; ok {
		return c, nil
	}
	cred := confidential.NewCredFromAssertionCallback(func(ctx context.Context, _ confidential.AssertionRequestOptions) (string, error) {
		if a, ok := ctx.Value(assertionKey{}).(string); ok && a != "" {
			return a, nil
		}
		return "", errors.New("no service-account assertion in context")
	})
	c, err := p.newClient(authority, id, cred)
	if err != nil {
		return confidential.Client{}, err
	}
	if len(p.clients) >= maxClients {
		clear(p.clients)
	}
	p.clients[k] = c
	return c, nil
}

func (p *Provider) newClient(authority string, id Identity, cred confidential.Credential) (confidential.Client, error) {
	c, err := confidential.New(authority+"/"+id.TenantID, id.ClientID, cred,
		confidential.WithHTTPClient(p.cfg.HTTPClient),
		confidential.WithInstanceDiscovery(false),
		confidential.WithCache(noCache{}))
	if err != nil {
		return confidential.Client{}, fmt.Errorf("identity %s: build MSAL client for %s: %w", id.ClientID, authority, err)
	}
	return c, nil
}

// withSecret reads the identity's Secret now and authenticates with it.
func (p *Provider) withSecret(ctx context.Context, authority string, r Request) (Token, error) {
	id := r.Identity
	if p.cfg.Secrets == nil {
		return Token{}, &Error{Reason: ReasonSecretInvalid, Msg: fmt.Sprintf("identity %s (%s) is type %s, which this agent is not allowed to serve (it cannot read Secrets; see docs/agent.md)", id.ClientID, id.Origin, id.Kind)}
	}
	data, err := p.cfg.Secrets.ReadSecret(ctx, id.SecretRef)
	if err != nil {
		return Token{}, &Error{Reason: ReasonSecretInvalid, Msg: fmt.Sprintf("identity %s (%s): cannot read Secret %s", id.ClientID, id.Origin, id.SecretRef), Err: err}
	}
	var cred confidential.Credential
	switch id.Kind {
	case Secret:
		s := strings.TrimSpace(string(data[SecretKeyClientSecret]))
		if s == "" {
			return Token{}, &Error{Reason: ReasonSecretInvalid, Msg: fmt.Sprintf("identity %s (%s): Secret %s has no %q key", id.ClientID, id.Origin, id.SecretRef, SecretKeyClientSecret)}
		}
		cred, err = confidential.NewCredFromSecret(s)
	case Certificate:
		pemData := data[SecretKeyCertificate]
		if len(pemData) == 0 {
			return Token{}, &Error{Reason: ReasonSecretInvalid, Msg: fmt.Sprintf("identity %s (%s): Secret %s has no %q key", id.ClientID, id.Origin, id.SecretRef, SecretKeyCertificate)}
		}
		certs, key, cerr := confidential.CertFromPEM(pemData, string(data[SecretKeyPassword]))
		if cerr != nil {
			// The parse error may quote key material: keep only our message.
			return Token{}, &Error{Reason: ReasonSecretInvalid, Msg: fmt.Sprintf("identity %s (%s): Secret %s key %q is not a PEM certificate with its private key", id.ClientID, id.Origin, id.SecretRef, SecretKeyCertificate)}
		}
		cred, err = confidential.NewCredFromCert(certs, key)
	}
	if err != nil {
		return Token{}, &Error{Reason: ReasonSecretInvalid, Msg: fmt.Sprintf("identity %s (%s): unusable credential in Secret %s", id.ClientID, id.Origin, id.SecretRef)}
	}
	c, err := p.newClient(authority, id, cred)
	if err != nil {
		return Token{}, err
	}
	res, err := c.AcquireTokenByCredential(ctx, []string{r.Scope()})
	if err != nil {
		return Token{}, classify(err, r, "")
	}
	return Token{AccessToken: res.AccessToken, ExpiresOn: res.ExpiresOn, ClientID: id.ClientID}, nil
}

// noCache keeps MSAL's in-memory cache empty: Cache owns caching, refresh
// and eviction, and every MSAL call goes to the provider.
type noCache struct{}

func (noCache) Replace(_ context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	return u.Unmarshal([]byte("{}"))
}

func (noCache) Export(context.Context, cache.Marshaler, cache.ExportHints) error { return nil }

// oauthError is the provider's error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
}

// classify turns an MSAL error into an Error with a message that names the
// fix. assertion is the service-account token used (federated only); only
// its issuer is read from it.
func classify(err error, r Request, assertion string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Reason: ReasonProviderUnavailable, Msg: "identity provider did not answer in time", Err: err}
	}
	var ce msalerrors.CallErr
	if !errors.As(err, &ce) || ce.Resp == nil {
		return &Error{Reason: ReasonProviderUnavailable, Msg: "identity provider unreachable", Err: err}
	}
	status := ce.Resp.StatusCode
	var body oauthError
	if i := strings.IndexByte(ce.Err.Error(), '\n'); i >= 0 {
		_ = json.Unmarshal([]byte(ce.Err.Error()[i+1:]), &body)
	}
	desc := body.Description
	if i := strings.IndexAny(desc, "\r\n"); i >= 0 {
		desc = desc[:i]
	}
	if len(desc) > 300 {
		desc = desc[:300]
	}
	code := ""
	if strings.HasPrefix(desc, "AADSTS") {
		code, _, _ = strings.Cut(desc, ":")
	} else if len(body.Codes) > 0 {
		code = "AADSTS" + strconv.Itoa(body.Codes[0])
	}
	switch {
	case slices.Contains(missingFICCodes, code):
		iss := issuerOf(assertion)
		return &Error{Reason: ReasonMissingFederatedCredential, Msg: fmt.Sprintf(
			"identity %s (%s) has no federated identity credential for this pod's service account: add one with issuer %q, subject %q, audience %q (provider said: %s)",
			r.Identity.ClientID, r.Identity.Origin, iss, r.Pod.Subject(), workloadidentity.TokenAudience, desc)}
	case status == http.StatusTooManyRequests:
		ra, _ := strconv.Atoi(ce.Resp.Header.Get("Retry-After"))
		return &Error{Reason: ReasonThrottled, Msg: "identity provider is throttling requests", RetryAfter: time.Duration(ra) * time.Second}
	case status >= 500:
		return &Error{Reason: ReasonProviderUnavailable, Msg: fmt.Sprintf("identity provider failed (HTTP %d)", status)}
	}
	if desc == "" {
		desc = fmt.Sprintf("HTTP %d %s", status, body.Error)
	}
	return &Error{Reason: ReasonProviderRejected, Msg: fmt.Sprintf("identity provider refused identity %s (%s): %s", r.Identity.ClientID, r.Identity.Origin, desc)}
}

// assertionAlgs are the algorithms an API server signs service-account
// tokens with.
var assertionAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512}

// issuerOf reads the iss claim of a JWT without verifying it (it is our own
// service-account token, only quoted in an error message).
func issuerOf(assertion string) string {
	const unknown = "<the cluster's service-account issuer>"
	tok, err := jwt.ParseSigned(assertion, assertionAlgs)
	if err != nil {
		return unknown
	}
	var c jwt.Claims
	if tok.UnsafeClaimsWithoutVerification(&c) != nil || c.Issuer == "" {
		return unknown
	}
	return c.Issuer
}
