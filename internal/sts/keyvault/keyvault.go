// Package keyvault serves the Key Vault data-plane REST API for secrets and
// imported certificates with their keys, as the Azure SDKs call it, for the
// vaults the sts keeps: one vault per host name {vault}.{DNSSuffix}. It authenticates as Key Vault does (a bearer
// challenge naming the vault's tenant and the vault resource; tokens signed
// by the sts, for that tenant and resource), authorizes every operation by
// an Azure RBAC data action, and keeps secrets in the sts's state file.
// Secret values are never logged.
package keyvault

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/sts/tokenverify"
)

// Limits, Azure's where Azure has one.
const (
	MaxValueBytes       = 25 * 1024 // Azure: a secret value is at most 25 KB
	MaxBodyBytes        = 256 << 10 // a JSON-escaped 25 KB value plus attributes
	MaxTags             = 15        // Azure: 15 tags per secret
	MaxTagName          = 512
	MaxTagValue         = 256
	MaxContentType      = 255
	MaxPageSize         = 25 // Azure: maxresults is 1..25
	SecretsPerVault     = 5000
	VersionsPerSecret   = 500
	DefaultDNSSuffix    = "vault.azure.net"
	DefaultRetentionDay = 90
)

// APIVersions are the api-version values accepted: those the azsecrets and
// other Key Vault SDKs send.
var APIVersions = []string{"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"}

var (
	secretNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	versionRE    = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)
	vaultNameRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{1,22}[a-z0-9]$`)
)

// ValidVaultName reports whether name is a vault name Azure accepts: 3-24
// letters, digits and dashes, starting with a letter, ending with a letter
// or digit, no consecutive dashes. Case is ignored (vault names are DNS
// labels).
func ValidVaultName(name string) bool {
	l := strings.ToLower(name)
	return vaultNameRE.MatchString(l) && !strings.Contains(l, "--")
}

// ValidSecretName reports whether name is a secret name Azure accepts.
func ValidSecretName(name string) bool { return secretNameRE.MatchString(name) }

// Keys resolves the sts's signing keys by kid (published ones only).
type Keys interface {
	PublicKey(kid string) (*rsa.PublicKey, bool)
}

// Config configures a Handler.
type Config struct {
	Store      *store.Store
	Keys       Keys
	Authorizer Authorizer
	// DNSSuffix is the vaults' DNS suffix: vault v is served at
	// https://v.{DNSSuffix}/ and tokens are for https://{DNSSuffix}.
	DNSSuffix string
	// Authority returns the token authority's base URL (the challenge's
	// authorization is {Authority}/{tenant}).
	Authority func() string
	// V2Issuer returns the v2 issuer of a tenant (tokens of registered v2
	// apps); v1 tokens carry https://sts.windows.net/{tid}/.
	V2Issuer func(tid string) string
	// Observe, if set, is told of every request: the operation (a bounded
	// set: set, get, update, delete, list, versions, list-deleted,
	// get-deleted, purge, recover, cert-import, cert-get, cert-list,
	// cert-versions, cert-delete, cert-list-deleted, cert-get-deleted,
	// cert-purge, cert-recover, key-get, key-list, key-versions, other), the result ("ok" or Key Vault's
	// error code) and the handling time. Never names, values or tokens.
	Observe func(operation, result string, d time.Duration)
	Now     func() time.Time
	Log     *slog.Logger
}

// Handler serves the vault hosts. Safe for concurrent use.
type Handler struct {
	cfg       Config
	resource  string   // https://{DNSSuffix}
	audiences []string // accepted aud values
}

// New validates cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Keys == nil || cfg.Authorizer == nil || cfg.Authority == nil || cfg.V2Issuer == nil {
		return nil, errors.New("keyvault: Store, Keys, Authorizer, Authority and V2Issuer are required")
	}
	if cfg.DNSSuffix == "" {
		cfg.DNSSuffix = DefaultDNSSuffix
	}
	if err := ValidDNSSuffix(cfg.DNSSuffix); err != nil {
		return nil, err
	}
	cfg.DNSSuffix = strings.ToLower(cfg.DNSSuffix)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	res := "https://" + cfg.DNSSuffix
	auds := []string{res, res + "/"}
	if cfg.DNSSuffix == DefaultDNSSuffix {
		auds = append(auds, VaultAppID)
	}
	return &Handler{cfg: cfg, resource: res, audiences: auds}, nil
}

// VaultAppID is the application id of Azure Key Vault's service principal,
// an audience Key Vault accepts besides its resource URI.
const VaultAppID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidDNSSuffix checks a vault DNS suffix: a DNS name of at least two
// labels (vault.azure.net, vault.podid.test).
func ValidDNSSuffix(s string) error {
	labels := strings.Split(strings.ToLower(s), ".")
	if len(s) > 200 || len(labels) < 2 {
		return fmt.Errorf("vault DNS suffix %q must be a DNS name of at least two labels", s)
	}
	for _, l := range labels {
		if !dnsLabelRE.MatchString(l) {
			return fmt.Errorf("vault DNS suffix %q is not a DNS name", s)
		}
	}
	return nil
}

// Resource is the token audience of the vaults: https://{DNSSuffix}.
func (h *Handler) Resource() string { return h.resource }

// DNSSuffix is the vaults' DNS suffix.
func (h *Handler) DNSSuffix() string { return h.cfg.DNSSuffix }

// VaultURI is the vault's base URL as ARM reports it (trailing "/").
func (h *Handler) VaultURI(name string) string {
	return "https://" + strings.ToLower(name) + "." + h.cfg.DNSSuffix + "/"
}

// VaultName returns the vault a request Host names ({vault}.{DNSSuffix},
// any port), or false when the host is not a vault host.
func (h *Handler) VaultName(host string) (string, bool) {
	hn, _, err := net.SplitHostPort(host)
	if err != nil {
		hn = host
	}
	hn = strings.TrimSuffix(strings.ToLower(hn), ".")
	name, ok := strings.CutSuffix(hn, "."+h.cfg.DNSSuffix)
	if !ok || !ValidVaultName(name) {
		return "", false
	}
	return name, true
}

// kvError is a Key Vault error answer.
type kvError struct {
	status  int
	code    string
	message string
	inner   string // innererror.code
}

func (e *kvError) Error() string { return e.code + ": " + e.message }

func errBadParameter(format string, args ...any) *kvError {
	return &kvError{http.StatusBadRequest, "BadParameter", fmt.Sprintf(format, args...), ""}
}

func errSecretNotFound(name, version string) *kvError {
	id := name
	if version != "" {
		id += "/" + version
	}
	return &kvError{http.StatusNotFound, "SecretNotFound", "A secret with (name/id) " + id + " was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.", ""}
}

func errDeletedNotFound(name string) *kvError {
	return &kvError{http.StatusNotFound, "SecretNotFound", "Deleted Secret not found: " + name, ""}
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, vault *store.Vault, e *kvError) {
	if ow, ok := w.(*observed); ok {
		ow.result = e.code
	}
	if e.status == http.StatusUnauthorized && vault != nil {
		// The SDKs' challenge policy reads the tenant from the last path
		// segment of authorization and the token scope from resource.
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, h.cfg.Authority(), vault.TenantID, h.resource))
	}
	body := map[string]any{"code": e.code, "message": e.message}
	if e.inner != "" {
		body["innererror"] = map[string]string{"code": e.inner}
	}
	writeJSON(w, e.status, map[string]any{"error": body})
	h.cfg.Log.Debug("key vault request refused", "method", r.Method, "host", r.Host, "path", r.URL.Path, "status", e.status, "code", e.code)
}

// caller is an authenticated data-plane caller.
type caller struct {
	tenantID, objectID, appID, issuer string
}

// authenticate verifies the bearer token as Key Vault does: signed by a
// published sts key, issued by the vault's tenant, for the vault resource,
// within its lifetime.
func (h *Handler) authenticate(ctx context.Context, r *http.Request, v *store.Vault) (*caller, *kvError) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return nil, &kvError{http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", ""}
	}
	raw, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok || raw == "" {
		return nil, &kvError{http.StatusUnauthorized, "Unauthorized", "AKV10001: Authorization header is not a Bearer token.", ""}
	}
	ver, err := tokenverify.New(tokenverify.Config{
		JWKSURL:   "sts:signing-keys", // keys are resolved in process, never fetched
		Keys:      keysAdapter{h.cfg.Keys},
		Issuers:   []string{"https://sts.windows.net/" + v.TenantID + "/", h.cfg.V2Issuer(v.TenantID)},
		Audiences: h.audiences,
		Now:       h.cfg.Now,
	})
	if err != nil {
		return nil, &kvError{http.StatusInternalServerError, "InternalServerError", "token verifier", ""}
	}
	c, err := ver.Verify(ctx, raw)
	if err != nil {
		return nil, &kvError{http.StatusUnauthorized, "Unauthorized", "AKV10032: The access token is invalid: " + oneLine(err.Error()), ""}
	}
	if !strings.EqualFold(c.TenantID, v.TenantID) || c.ObjectID == "" {
		return nil, &kvError{http.StatusUnauthorized, "Unauthorized", "AKV10032: Invalid issuer. Expected the vault's tenant " + v.TenantID + ".", ""}
	}
	return &caller{tenantID: c.TenantID, objectID: strings.ToLower(c.ObjectID), appID: c.AppID, issuer: c.Issuer}, nil
}

type keysAdapter struct{ k Keys }

func (a keysAdapter) URLKey(_ context.Context, _, kid string) (*jose.JSONWebKey, error) {
	pub, ok := a.k.PublicKey(kid)
	if !ok {
		return nil, fmt.Errorf("signing key %q is not one of the sts's", kid)
	}
	return &jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}, nil
}

// authorize asks RBAC for action at scope.
func (h *Handler) authorize(ctx context.Context, c *caller, v *store.Vault, scope, action string) *kvError {
	ok, err := h.cfg.Authorizer.HasDataAction(ctx, v.TenantID, c.objectID, scope, action)
	if err != nil {
		h.cfg.Log.Error("key vault authorization failed", "vault", v.Name, "err", err)
		return &kvError{http.StatusInternalServerError, "InternalServerError", "authorization could not be decided", ""}
	}
	if ok {
		return nil
	}
	return &kvError{http.StatusForbidden, "Forbidden", fmt.Sprintf(
		"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=%s;oid=%s;iss=%s\r\nAction: '%s'\r\nResource: '%s'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: %s;location=%s\r\n",
		c.appID, c.objectID, c.issuer, action, strings.ToLower(scope), v.Name, v.Location), "ForbiddenByRbac"}
}

// ServeHTTP serves one vault host. The caller routed here because
// VaultName(r.Host) matched.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Observe != nil {
		ow := &observed{ResponseWriter: w, op: "other", result: "ok"}
		start := time.Now()
		defer func() { h.cfg.Observe(ow.op, ow.result, time.Since(start)) }()
		w = ow
	}
	name, ok := h.VaultName(r.Host)
	if !ok {
		h.writeError(w, r, nil, &kvError{http.StatusNotFound, "NotFound", "Not a vault host.", ""})
		return
	}
	v, err := h.cfg.Store.Vault(name)
	if err != nil {
		// Vault names are public in Azure (DNS); an unknown one is said so.
		h.writeError(w, r, nil, &kvError{http.StatusNotFound, "VaultNotFound", "The vault " + name + " does not exist.", ""})
		return
	}
	c, e := h.authenticate(r.Context(), r, v)
	if e != nil {
		h.writeError(w, r, v, e)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		h.writeError(w, r, v, errBadParameter("The query string is malformed."))
		return
	}
	for k, vs := range q {
		if len(vs) != 1 {
			h.writeError(w, r, v, errBadParameter("The query parameter '%s' is repeated.", k))
			return
		}
	}
	apiVersion := q.Get("api-version")
	if apiVersion == "" {
		h.writeError(w, r, v, errBadParameter("The request URI does not contain the required api-version query parameter."))
		return
	}
	if !slices.Contains(APIVersions, apiVersion) {
		h.writeError(w, r, v, errBadParameter("The specified version (%s) is not recognized. Consider using the latest supported version (%s).", oneLine(apiVersion), APIVersions[len(APIVersions)-1]))
		return
	}
	if strings.Contains(r.URL.RawPath, "%") || strings.Contains(r.URL.Path, "//") || strings.Contains(r.URL.Path, "/.") {
		h.writeError(w, r, v, errBadParameter("The request URI is malformed."))
		return
	}
	op := &operation{h: h, w: w, r: r, v: v, c: c, q: q}
	op.route(strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/"))
}

func newVersion() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// oneLine folds s onto one bounded line (text from a caller or library
// echoed in an error).
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// DialContext is net.Dialer.DialContext's signature.
type DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer returns a DialContext that connects every {vault}.{suffix}
// address to target (host:port) and every other address as asked. It is
// how a client reaches the sts's vaults where no DNS names them (tests,
// the CLI against a local sts): a transport setting, so the SDK still
// addresses https://{vault}.{suffix}/ and checks the challenge against it.
func Dialer(suffix, target string) DialContext {
	var d net.Dialer
	suffix = "." + strings.ToLower(suffix)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err == nil && strings.HasSuffix(strings.ToLower(host), suffix) {
			addr = target
		}
		return d.DialContext(ctx, network, addr)
	}
}

// observed carries what Observe reports through one request.
type observed struct {
	http.ResponseWriter
	op, result string
}

// named records the operation of a request (for Observe).
func named(w http.ResponseWriter, op string) {
	if ow, ok := w.(*observed); ok {
		ow.op = op
	}
}
