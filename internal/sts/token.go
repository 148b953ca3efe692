package sts

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/podid/podid/internal/claimsexpr"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/store"
)

const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// tokenRequest is a validated client_credentials request.
type tokenRequest struct {
	tenant   store.Tenant
	resource string // as requested (v1 resource, or v2 scope without /.default)
	client   *store.Principal
	acr      string // "1" secret, "2" certificate or federated assertion
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tseg string, ver int) {
	start := time.Now()
	code := s.token(w, r, tseg, ver)
	s.metrics.observe(ver, code, start)
}

// token answers one token request and returns the AADSTS code of the error
// it answered with, or 0.
func (s *Server) token(w http.ResponseWriter, r *http.Request, tseg string, ver int) int {
	fail := func(oe *OAuthError) int {
		writeOAuthError(w, r, s.cfg.Now(), oe)
		return oe.Code
	}
	now := s.cfg.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return fail(newErr(405, "invalid_request", CodeMethodNotAllowed, "The request method must be POST."))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxFormBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. Request body larger than %d bytes.", MaxFormBytes))
		}
		return fail(newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. Could not read the request body."))
	}
	form, err := parseForm(r.Header.Get("Content-Type"), body)
	var dup *duplicateFieldError
	switch {
	case errors.As(err, &dup):
		return fail(newErr(400, "invalid_request", CodeDuplicateParameter, "The request is not properly formatted. The parameter '%s' is duplicated.", truncate(dup.name, 64)))
	case err != nil:
		return fail(newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. Request is malformed or invalid: %s.", err))
	}
	if oe := mergeBasicAuth(r, form); oe != nil {
		return fail(oe)
	}
	req, oe := s.authenticate(r.Context(), r, tseg, ver, form, now)
	if oe != nil {
		s.log.Info("token request rejected", "tenant", tseg, "client_id", truncate(form["client_id"], 64), "code", oe.Code, "reason", oe.Description)
		return fail(oe)
	}
	// After authentication, so only a client of the tenant learns which
	// application names the tenant has.
	if !s.knownResource(req.tenant.ID, req.resource) {
		return fail(errResourceNotFound(req.resource, req.tenant.ID))
	}
	tok, exp, err := s.issue(r, req, now)
	if err != nil {
		s.log.Error("issue token", "err", err)
		return fail(newErr(500, "server_error", 90033, "A transient error has occurred. Please try again."))
	}
	// issue counts from now truncated to the second; so does expires_in
	// (3599 for an hour, as Entra's).
	expiresIn := int64(exp.Sub(now.Truncate(time.Second))/time.Second) - 1
	if ver == 2 {
		writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": expiresIn, "ext_expires_in": expiresIn, "access_token": tok})
		return 0
	}
	// v1 answers with strings, as Entra's v1 endpoint does.
	writeJSON(w, 200, map[string]any{
		"token_type": "Bearer", "expires_in": strconv.FormatInt(expiresIn, 10), "ext_expires_in": strconv.FormatInt(expiresIn, 10),
		"expires_on": strconv.FormatInt(exp.Unix(), 10), "not_before": strconv.FormatInt(now.Add(-Backdate).Unix(), 10),
		"resource": req.resource, "access_token": tok,
	})
	return 0
}

// mergeBasicAuth accepts client_secret_basic (RFC 6749 §2.3.1: both parts
// form-urlencoded), refusing a second copy of either field in the body.
func mergeBasicAuth(r *http.Request, form map[string]string) *OAuthError {
	if r.Header.Get("Authorization") == "" {
		return nil
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return newErr(401, "invalid_client", CodeMalformedRequest, "Invalid request. The Authorization header is not valid client_secret_basic.")
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if err1 != nil || err2 != nil {
		return newErr(401, "invalid_client", CodeMalformedRequest, "Invalid request. The Authorization header is not valid client_secret_basic.")
	}
	if _, dup := form["client_secret"]; dup {
		return newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. The client secret was sent both in the Authorization header and in the body.")
	}
	if cid, ok := form["client_id"]; ok && cid != id {
		return newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. client_id in the body differs from the Authorization header.")
	}
	form["client_id"], form["client_secret"] = id, secret
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Server) authenticate(ctx context.Context, r *http.Request, tseg string, ver int, f map[string]string, now time.Time) (*tokenRequest, *OAuthError) {
	tenant, ok := s.tenant(tseg)
	if !ok {
		return nil, errTenantNotFound(tseg)
	}
	gt := f["grant_type"]
	if gt == "" {
		return nil, newErr(400, "invalid_request", CodeMissingParameter, "The request body must contain the following parameter: 'grant_type'.")
	}
	if gt != "client_credentials" {
		return nil, newErr(400, "unsupported_grant_type", CodeUnsupportedGrant, "The provided value for the input parameter 'grant_type' is not valid. Only client_credentials is supported.")
	}
	clientID := f["client_id"]
	if clientID == "" {
		return nil, newErr(400, "invalid_request", CodeMissingParameter, "The request body must contain the following parameter: 'client_id'.")
	}
	var resource string
	if ver == 2 {
		scope, ok := f["scope"]
		if !ok || scope == "" {
			return nil, newErr(400, "invalid_request", CodeMissingParameter, "The request body must contain the following parameter: 'scope'.")
		}
		var err error
		var nd *scopeNotDefaultError
		switch resource, err = resourceFromScope(scope); {
		case errors.As(err, &nd):
			return nil, newErr(400, "invalid_scope", CodeScopeNotDefault, "The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", truncate(nd.scope, 600))
		case err != nil:
			return nil, newErr(400, "invalid_scope", CodeInvalidScope, "The provided value for the input parameter 'scope' is not valid: %s.", err)
		}
	} else {
		resource = f["resource"]
		if resource == "" {
			return nil, newErr(400, "invalid_request", CodeMissingParameter, "The request body must contain the following parameter: 'resource'.")
		}
		if len(resource) > 600 {
			return nil, newErr(400, "invalid_resource", CodeResourceNotFound, "The resource principal is too long.")
		}
	}
	client, err := s.store.Principal(strings.ToLower(clientID))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("load principal", "err", err)
		return nil, newErr(500, "server_error", 90033, "A transient error has occurred. Please try again.")
	}
	if client == nil || client.TenantID != tenant.ID {
		return nil, newErr(400, "unauthorized_client", CodeAppNotFound, "Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", truncate(clientID, 64), tenant.ID)
	}
	req := &tokenRequest{tenant: tenant, resource: resource, client: client}
	secret, hasSecret := f["client_secret"]
	assertionRaw, hasAssertion := f["client_assertion"]
	switch {
	case hasSecret && hasAssertion:
		return nil, newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. Only one of 'client_secret' and 'client_assertion' may be sent.")
	case hasSecret:
		if oe := checkSecret(client, secret, now); oe != nil {
			return nil, oe
		}
		req.acr = "1"
	case hasAssertion:
		if t := f["client_assertion_type"]; t != jwtBearer {
			return nil, newErr(400, "invalid_request", CodeMalformedRequest, "Invalid request. 'client_assertion_type' must be '%s'.", jwtBearer)
		}
		if oe := s.checkAssertion(ctx, r, tseg, tenant, client, assertionRaw, now); oe != nil {
			return nil, oe
		}
		req.acr = "2"
	default:
		return nil, newErr(401, "invalid_client", CodeNoCredential, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
	}
	return req, nil
}

// resourceFromScope accepts "<resource>/.default" plus the OIDC scopes MSAL
// appends, and returns the resource.
func resourceFromScope(scope string) (string, error) {
	var resource string
	for _, sc := range strings.Fields(scope) {
		switch sc {
		case "openid", "profile", "offline_access", "email":
			continue
		}
		r, ok := strings.CutSuffix(sc, "/.default")
		if !ok || r == "" {
			return "", &scopeNotDefaultError{scope: sc}
		}
		if resource != "" {
			return "", errors.New("more than one resource requested")
		}
		if len(r) > 600 {
			return "", errors.New("resource longer than 600 characters")
		}
		resource = r
	}
	if resource == "" {
		return "", errors.New("no '<resource>/.default' scope")
	}
	return resource, nil
}

// scopeNotDefaultError is a scope the client-credentials grant cannot
// serve: a permission or bare resource instead of "<resource>/.default".
type scopeNotDefaultError struct{ scope string }

func (e *scopeNotDefaultError) Error() string {
	return "scope '" + e.scope + "' is not '<resource>/.default'"
}

// hashSecret is a salted SHA-256. Client secrets are random, high-entropy
// values (not passwords), so a slow KDF buys nothing and costs latency.
func hashSecret(salt []byte, secret string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(secret))
	return h.Sum(nil)
}

func checkSecret(p *store.Principal, secret string, now time.Time) *OAuthError {
	expired := false
	for _, sec := range p.Secrets {
		if subtle.ConstantTimeCompare(hashSecret(sec.Salt, secret), sec.Hash) == 1 {
			if !sec.Expires.IsZero() && now.After(sec.Expires) {
				expired = true
				continue
			}
			return nil
		}
	}
	if expired {
		return newErr(401, "invalid_client", CodeExpiredSecret, "The provided client secret keys for app '%s' are expired.", p.ClientID)
	}
	return newErr(401, "invalid_client", CodeInvalidSecret, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", p.ClientID)
}

func errSignature(reason string) *OAuthError {
	return newErr(401, "invalid_client", CodeAssertionSignature, "Client assertion failed signature validation. Reason: %s.", reason)
}

func (s *Server) checkAssertion(ctx context.Context, r *http.Request, tseg string, tenant store.Tenant, client *store.Principal, raw string, now time.Time) *OAuthError {
	a, err := parseAssertion(raw)
	switch {
	case errors.Is(err, errAssertionAlg):
		return errSignature(err.Error())
	case err != nil:
		return newErr(400, "invalid_request", CodeMalformedJWT, "JWT token is invalid or malformed: %s.", err)
	}
	if strings.EqualFold(a.claims.Iss, client.ClientID) && strings.EqualFold(a.claims.Sub, client.ClientID) {
		return s.checkCertAssertion(r, tseg, tenant, client, a, now)
	}
	return s.checkFederatedAssertion(ctx, client, a, now)
}

// checkFederatedAssertion matches the assertion to a federated identity
// credential *before* any network I/O, so only issuers an administrator
// trusted for this client are ever fetched (no SSRF via iss).
func (s *Server) checkFederatedAssertion(ctx context.Context, client *store.Principal, a *assertion, now time.Time) *OAuthError {
	if oe := matchFederatedCredential(client.FederatedCreds, a); oe != nil {
		return oe
	}
	// Only RS256, as Entra requires for federated assertions.
	if a.header.Alg != string(jose.RS256) {
		return errSignature("unsupported algorithm '" + truncate(a.header.Alg, 16) + "', only RS256 is accepted")
	}
	if a.header.Kid == "" {
		return errSignature("the assertion header has no 'kid'")
	}
	key, err := s.ext.IssuerKey(ctx, a.claims.Iss, a.header.Kid)
	switch {
	case errors.Is(err, jwks.ErrUnknownKID):
		return errSignature("the key was not found in the issuer's JWKS")
	case err != nil:
		s.log.Warn("external issuer metadata fetch failed", "issuer", a.claims.Iss, "err", err)
		// Only issuers an administrator trusted for this client get here,
		// so the reason tells that administrator what to fix.
		return newErr(400, "invalid_request", CodeExternalOIDC, "Request to External OIDC endpoint failed. Reason: %s.", truncate(err.Error(), 300))
	}
	if key.Algorithm != "" && key.Algorithm != string(jose.RS256) {
		return errSignature("the issuer's key is published for " + truncate(key.Algorithm, 16) + ", not RS256")
	}
	if err := a.verify(string(jose.RS256), key.Key); err != nil {
		return errSignature(err.Error())
	}
	return s.checkTimes(a, now)
}

// matchFederatedCredential finds a credential with exactly the assertion's
// issuer, subject and one of its audiences. Without one it answers as Entra
// does, naming the first field that no candidate matches: issuer (700211),
// subject (700213, or 7002138 when it matches only ignoring case), audience
// (700212); a client with no federated credentials at all gets 70021.
func matchFederatedCredential(fics []store.FederatedCredential, a *assertion) *OAuthError {
	c := a.claims
	if len(fics) == 0 {
		return newErr(400, "invalid_request", CodeNoMatchingFIC,
			"No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'.",
			truncate(c.Iss, 600), truncate(c.Sub, 600), truncate(strings.Join(c.Aud, ","), 600))
	}
	const hint = " Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
	var byIssuer []store.FederatedCredential
	for _, f := range fics {
		if f.Issuer == c.Iss {
			byIssuer = append(byIssuer, f)
		}
	}
	if len(byIssuer) == 0 {
		return newErr(400, "invalid_client", CodeFICIssuerMismatch, "No matching federated identity record found for presented assertion issuer '%s'."+hint, truncate(c.Iss, 600))
	}
	var bySubject []store.FederatedCredential
	folded := false
	for _, f := range byIssuer {
		switch {
		case f.ClaimsMatchingExpression != nil:
			// Validated when stored; an expression that no longer parses matches nothing.
			if x, err := claimsexpr.Parse(f.ClaimsMatchingExpression.Value, f.ClaimsMatchingExpression.LanguageVersion); err == nil && x.Match(map[string]string{"sub": c.Sub}) {
				bySubject = append(bySubject, f)
			}
		case f.Subject == c.Sub:
			bySubject = append(bySubject, f)
		case strings.EqualFold(f.Subject, c.Sub):
			folded = true
		}
	}
	if len(bySubject) == 0 {
		if folded {
			return newErr(400, "invalid_client", CodeFICSubjectCase, "No matching federated identity record found for presented assertion subject '%s'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison."+hint, truncate(c.Sub, 600))
		}
		return newErr(400, "invalid_client", CodeFICSubjectMismatch, "No matching federated identity record found for presented assertion subject '%s'."+hint, truncate(c.Sub, 600))
	}
	for _, f := range bySubject {
		if slices.ContainsFunc(f.Audiences, func(aud string) bool { return slices.Contains(c.Aud, aud) }) {
			return nil
		}
	}
	return newErr(400, "invalid_client", CodeFICAudienceMismatch, "No matching federated identity record found for presented assertion audience '%s'."+hint, truncate(strings.Join(c.Aud, ","), 600))
}

func (s *Server) checkTimes(a *assertion, now time.Time) *OAuthError {
	skew := s.cfg.AssertionSkew
	c := a.claims
	if c.Exp == nil {
		return newErr(400, "invalid_request", CodeMalformedJWT, "JWT token is invalid or malformed: no 'exp' claim.")
	}
	if now.Add(-skew).After(c.Exp.Time()) {
		return newErr(401, "invalid_client", CodeAssertionTime, "Client assertion is not within its valid time range. Current time: %s, assertion valid to: %s.", now.UTC().Format(time.RFC3339), c.Exp.Time().UTC().Format(time.RFC3339))
	}
	if c.Nbf != nil && now.Add(skew).Before(c.Nbf.Time()) {
		return newErr(401, "invalid_client", CodeAssertionTime, "Client assertion is not within its valid time range. Current time: %s, assertion valid from: %s.", now.UTC().Format(time.RFC3339), c.Nbf.Time().UTC().Format(time.RFC3339))
	}
	if c.Iat != nil && now.Add(skew).Before(c.Iat.Time()) {
		return newErr(401, "invalid_client", CodeAssertionTime, "Client assertion is not within its valid time range: issued in the future.")
	}
	return nil
}

// checkCertAssertion verifies an assertion signed with one of the client's
// registered certificates. MSAL signs PS256 with x5t#S256; ADFS-style
// clients use RS256 with x5t; both are accepted, as Entra does.
func (s *Server) checkCertAssertion(r *http.Request, tseg string, tenant store.Tenant, client *store.Principal, a *assertion, now time.Time) *OAuthError {
	if a.header.Alg != string(jose.RS256) && a.header.Alg != string(jose.PS256) {
		return errSignature("unsupported algorithm '" + truncate(a.header.Alg, 16) + "'")
	}
	var candidates []*x509.Certificate
	for _, c := range client.Certificates {
		cert, err := x509.ParseCertificate(c.DER)
		if err != nil {
			continue
		}
		if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
			continue
		}
		// A registered certificate outside its validity period no longer
		// authenticates, as in Entra.
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			continue
		}
		s256 := sha256.Sum256(cert.Raw)
		s1 := sha1.Sum(cert.Raw)
		switch {
		case a.header.X5tS256 != "":
			if thumbMatches(a.header.X5tS256, s256[:]) {
				candidates = append(candidates, cert)
			}
		case a.header.X5t != "":
			if thumbMatches(a.header.X5t, s1[:]) {
				candidates = append(candidates, cert)
			}
		default:
			candidates = append(candidates, cert)
		}
	}
	if len(candidates) == 0 {
		return errSignature("no certificate registered for the application matches the assertion's thumbprint")
	}
	var err error
	for _, cert := range candidates {
		if err = a.verify(a.header.Alg, cert.PublicKey); err == nil {
			break
		}
	}
	if err != nil {
		return errSignature(err.Error())
	}
	if !s.isOurTokenEndpoint(r, tseg, tenant, a.claims.Aud) {
		return newErr(401, "invalid_client", CodeAssertionSignature, "Client assertion audience claim does not match the token endpoint.")
	}
	return s.checkTimes(a, now)
}

// thumbMatches compares a thumbprint header, accepting base64url (RFC 7515)
// and standard base64 (what MSAL sends).
func thumbMatches(h string, want []byte) bool {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if got, err := enc.DecodeString(h); err == nil {
			return subtle.ConstantTimeCompare(got, want) == 1
		}
	}
	return false
}

// isOurTokenEndpoint accepts the v1 or v2 token endpoint of this tenant (by
// id or by the segment used) on any of our names.
func (s *Server) isOurTokenEndpoint(r *http.Request, tseg string, tenant store.Tenant, aud []string) bool {
	bases := []string{s.baseURL(r), s.PublicURL()}
	for _, b := range bases {
		for _, t := range []string{tseg, tenant.ID} {
			for _, p := range []string{"/oauth2/v2.0/token", "/oauth2/token"} {
				want := b + "/" + t + p
				for _, a := range aud {
					if strings.EqualFold(a, want) {
						return true
					}
				}
			}
		}
	}
	return false
}
