package sts

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/keyset"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
)

const (
	maxMgmtBody  = 64 << 10
	armPageSize  = 100
	identityType = "Microsoft.ManagedIdentity/userAssignedIdentities"
	ficType      = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
)

// Accepted api-version values of Microsoft.ManagedIdentity.
var armAPIVersions = []string{"2015-08-31-preview", "2018-11-30", "2021-09-30-preview", "2022-01-31-preview", "2023-01-31", "2023-07-31-preview", "2024-11-30", "2025-01-31-preview"}

type armError struct {
	status  int
	code    string
	message string
}

func writeARMError(w http.ResponseWriter, e armError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer authorization_uri="", error="invalid_token"`)
	}
	writeJSON(w, e.status, map[string]any{"error": map[string]string{"code": e.code, "message": e.message}})
}

func armErrorFor(err error) armError {
	switch {
	case errors.Is(err, ErrNotFound):
		return armError{404, "ResourceNotFound", err.Error()}
	case errors.Is(err, ErrConflict):
		return armError{409, "Conflict", err.Error()}
	case errors.Is(err, ErrInvalid):
		return armError{400, "BadRequest", err.Error()}
	}
	return armError{500, "InternalServerError", "internal error"}
}

// mgmt serves the management APIs — ARM's Microsoft.ManagedIdentity subset
// and podid's /podid/v1 — over the Directory. It verifies callers' tokens
// with the sts's published keys and decides who may manage what; the
// directory does the rest.
type mgmt struct {
	*Directory
	cfg     *Config
	log     *slog.Logger
	keys    *keyset.Set
	vaults  *keyvault.Handler          // vault URIs of Microsoft.KeyVault answers
	baseURL func(*http.Request) string // for ARM nextLinks
}

// caller is an authenticated management API caller.
type caller struct {
	tenantID string
	clientID string
	objectID string
}

// authenticate checks a bearer token the sts itself issued: signature by
// one of our published keys, our issuer, the ARM audience, validity. The
// management API is never open; what the caller may do is decided after,
// by Azure RBAC (authorize) or, for /podid/v1, the admin role at the root.
func (s *mgmt) authenticate(r *http.Request) (*caller, *armError) {
	h := r.Header.Get("Authorization")
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || raw == "" || len(raw) > MaxAssertionBytes {
		return nil, &armError{401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing or not a bearer token."}
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return nil, &armError{401, "InvalidAuthenticationToken", "The access token is invalid."}
	}
	pub, ok := s.keys.PublicKey(tok.Headers[0].KeyID)
	if !ok {
		return nil, &armError{401, "InvalidAuthenticationToken", "The access token signing key is unknown."}
	}
	var c struct {
		jwt.Claims
		Tid   string `json:"tid"`
		Oid   string `json:"oid"`
		AppID string `json:"appid"`
		Azp   string `json:"azp"`
	}
	if err := tok.Claims(pub, &c); err != nil {
		return nil, &armError{401, "InvalidAuthenticationToken", "The access token signature is invalid."}
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Time: s.cfg.Now()}, s.cfg.AssertionSkew); err != nil {
		return nil, &armError{401, "ExpiredAuthenticationToken", "The access token is expired or not yet valid."}
	}
	if c.Issuer != "https://sts.windows.net/"+c.Tid+"/" {
		return nil, &armError{401, "InvalidAuthenticationTokenTenant", "The access token is from the wrong issuer."}
	}
	if len(c.Audience) != 1 || normResource(c.Audience[0]) != ARMResource {
		return nil, &armError{401, "InvalidAuthenticationTokenAudience", "The access token has been obtained for wrong audience or resource."}
	}
	if !guidRE.MatchString(c.Oid) {
		return nil, &armError{401, "InvalidAuthenticationToken", "The access token has no object id."}
	}
	app := c.AppID
	if app == "" {
		app = c.Azp
	}
	return &caller{tenantID: c.Tid, clientID: app, objectID: strings.ToLower(c.Oid)}, nil
}

// authorize decides an ARM call by Azure RBAC: the caller must hold action
// at scope through a role assignment there or above (HasAction). It is the
// one authorization of every ARM route.
func (s *mgmt) authorize(c *caller, action string, scope rbac.Scope) *armError {
	ok, err := s.permits(c.tenantID, c.objectID, action, scope, false)
	if err != nil {
		s.log.Error("authorization failed to evaluate", "err", err)
		return &armError{500, "InternalServerError", "internal error"}
	}
	if !ok {
		return &armError{403, "AuthorizationFailed", "The client '" + c.clientID + "' with object id '" + c.objectID + "' does not have authorization to perform action '" + action + "' over scope '" + scope.String() + "' or the scope is invalid. If access was recently granted, please refresh your credentials."}
	}
	return nil
}

func readBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxMgmtBody+1))
	if err != nil {
		return invalid("could not read body")
	}
	if len(body) > maxMgmtBody {
		return invalid("request body larger than %d bytes", maxMgmtBody)
	}
	if len(body) == 0 {
		return invalid("request body is empty")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return invalid("malformed JSON: %v", err)
	}
	return nil
}

type armIdentityBody struct {
	Location   *string           `json:"location"`
	Tags       map[string]string `json:"tags"`
	Properties json.RawMessage   `json:"properties"`
}

type armFICBody struct {
	Properties *struct {
		Issuer                   string                          `json:"issuer"`
		Subject                  string                          `json:"subject"`
		Audiences                []string                        `json:"audiences"`
		ClaimsMatchingExpression *store.ClaimsMatchingExpression `json:"claimsMatchingExpression"`
	} `json:"properties"`
}

func identityJSON(p *store.Principal) map[string]any {
	out := map[string]any{
		"id":       p.ResourceID,
		"name":     p.DisplayName,
		"type":     identityType,
		"location": p.Location,
		"tags":     p.Tags,
		"properties": map[string]any{
			"tenantId":    p.TenantID,
			"principalId": p.ObjectID,
			"clientId":    p.ClientID,
		},
	}
	if p.Tags == nil {
		out["tags"] = map[string]string{}
	}
	return out
}

func ficJSON(p *store.Principal, f store.FederatedCredential) map[string]any {
	props := map[string]any{
		"issuer":    f.Issuer,
		"subject":   f.Subject,
		"audiences": f.Audiences,
	}
	if e := f.ClaimsMatchingExpression; e != nil {
		props["subject"] = nil
		props["claimsMatchingExpression"] = map[string]any{"value": e.Value, "languageVersion": e.LanguageVersion}
	}
	return map[string]any{
		"id":         p.ResourceID + "/federatedIdentityCredentials/" + f.Name,
		"name":       f.Name,
		"type":       ficType,
		"properties": props,
	}
}

// serveARM handles the ARM subset the sts serves: Microsoft.Authorization
// role definitions and assignments at any scope (serveAuthorization), and
// Microsoft.ManagedIdentity:
//
//	/subscriptions/{s}/providers/Microsoft.ManagedIdentity/userAssignedIdentities                    GET (list)
//	/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities GET (list)
//	  …/userAssignedIdentities/{name}                                  PUT GET PATCH DELETE
//	  …/userAssignedIdentities/{name}/federatedIdentityCredentials        GET (list)
//	  …/userAssignedIdentities/{name}/federatedIdentityCredentials/{fic}  PUT GET DELETE
//
// Literal segments match case-insensitively, as in ARM. Every route is
// authorized by Azure RBAC at its scope (authorize).
func (s *mgmt) serveARM(w http.ResponseWriter, r *http.Request, segs []string) {
	if len(segs) == 1 {
		s.serveAccountList(w, r, listSubscriptions)
		return
	}
	c, ae := s.authenticate(r)
	if ae != nil {
		writeARMError(w, *ae)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeARMError(w, armError{400, "InvalidQueryParameter", "malformed query string"})
		return
	}
	for k, v := range q {
		if len(v) != 1 {
			writeARMError(w, armError{400, "InvalidQueryParameter", "query parameter '" + k + "' is repeated"})
			return
		}
	}
	eq := strings.EqualFold
	notFound := func() { writeARMError(w, armError{404, "NotFound", "The requested resource was not found."}) }
	if i := authorizationIndex(segs); i >= 0 {
		s.serveAuthorization(w, r, c, q, segs[:i], segs[i+2:])
		return
	}
	if !eq(segs[0], "subscriptions") {
		notFound()
		return
	}
	versions := armAPIVersions
	if isVaultPath(segs) {
		versions = vaultAPIVersions
	}
	if !checkAPIVersion(w, q, versions) {
		return
	}
	// segs[0] == "subscriptions"
	if len(segs) < 2 || !guidRE.MatchString(segs[1]) {
		writeARMError(w, armError{400, "InvalidSubscriptionId", "The provided subscription identifier is malformed or invalid."})
		return
	}
	sub := strings.ToLower(segs[1])
	if !s.checkSubscription(w, c, sub) {
		return
	}
	rest := segs[2:]
	if isVaultPath(segs) {
		s.serveVaultARM(w, r, c, sub, rest, q)
		return
	}
	// Subscription-wide list.
	if len(rest) == 3 && eq(rest[0], "providers") && eq(rest[1], "Microsoft.ManagedIdentity") && eq(rest[2], "userAssignedIdentities") {
		if r.Method != http.MethodGet {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return
		}
		if ae := s.authorize(c, identityType+"/read", rbac.MustParseScope("/subscriptions/"+sub)); ae != nil {
			writeARMError(w, *ae)
			return
		}
		s.listIdentities(w, r, c, "/subscriptions/"+sub+"/resourcegroups/", q)
		return
	}
	if len(rest) < 5 || !eq(rest[0], "resourceGroups") || !eq(rest[2], "providers") || !eq(rest[3], "Microsoft.ManagedIdentity") || !eq(rest[4], "userAssignedIdentities") {
		notFound()
		return
	}
	rg := rest[1]
	rgScope, err := rbac.ParseScope("/subscriptions/" + sub + "/resourceGroups/" + rg)
	if err != nil {
		writeARMError(w, armError{400, "InvalidResourceGroup", "The provided resource group name '" + truncate(rg, 100) + "' is invalid."})
		return
	}
	rest = rest[5:]
	// The scope the route acts on, for authorization: the resource group
	// (list), the identity, or the credential.
	scope, action := rgScope.String(), identityType
	if len(rest) >= 1 {
		scope += "/providers/" + identityType + "/" + rest[0]
	}
	if len(rest) >= 2 {
		action = ficType
	}
	if len(rest) == 3 {
		scope += "/federatedIdentityCredentials/" + rest[2]
	}
	switch r.Method {
	case http.MethodGet:
		action += "/read"
	case http.MethodPut, http.MethodPatch:
		action += "/write"
	case http.MethodDelete:
		action += "/delete"
	}
	if len(rest) <= 3 && (len(rest) < 2 || eq(rest[1], "federatedIdentityCredentials")) {
		sc, err := rbac.ParseScope(scope)
		if err != nil {
			writeARMError(w, armError{400, "InvalidResourceName", "The resource name is invalid: " + err.Error()})
			return
		}
		if ae := s.authorize(c, action, sc); ae != nil {
			writeARMError(w, *ae)
			return
		}
	}
	switch {
	case len(rest) == 0:
		if r.Method != http.MethodGet {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return
		}
		s.listIdentities(w, r, c, "/subscriptions/"+sub+"/resourcegroups/"+strings.ToLower(rg)+"/", q)
	case len(rest) == 1:
		s.serveIdentity(w, r, c, sub, rg, rest[0])
	case len(rest) >= 2 && eq(rest[1], "federatedIdentityCredentials") && len(rest) <= 3:
		p, err := s.IdentityByResourceID(IdentityResourceID(sub, rg, rest[0]))
		if err != nil || p.TenantID != c.tenantID {
			writeARMError(w, armError{404, "ResourceNotFound", "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/" + rest[0] + "' under resource group '" + rg + "' was not found."})
			return
		}
		if len(rest) == 2 {
			if r.Method != http.MethodGet {
				writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
				return
			}
			s.listFICs(w, r, p, q)
			return
		}
		s.serveFIC(w, r, p, rest[2])
	default:
		notFound()
	}
}

// checkAPIVersion answers a request whose api-version is missing or not
// one of accepted, as ARM does, and reports whether it may go on.
func checkAPIVersion(w http.ResponseWriter, q url.Values, accepted []string) bool {
	v := q.Get("api-version")
	if v == "" {
		writeARMError(w, armError{400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."})
		return false
	}
	if !slices.Contains(accepted, v) {
		writeARMError(w, armError{400, "NoRegisteredProviderFound", "No registered resource provider found for api version '" + truncate(v, 40) + "'. The supported api-versions are '" + strings.Join(accepted, ", ") + "'."})
		return false
	}
	return true
}

// checkSubscription answers for a subscription another tenant owns: it
// does not exist for this caller (ARM's answer for a subscription outside
// the caller's tenant). It reports whether the request may go on.
func (s *mgmt) checkSubscription(w http.ResponseWriter, c *caller, sub string) bool {
	switch owner, err := s.SubscriptionTenant(sub); {
	case err != nil:
		writeARMError(w, armErrorFor(err))
		return false
	case owner != "" && owner != c.tenantID:
		writeARMError(w, armError{404, "SubscriptionNotFound", "The subscription '" + sub + "' could not be found."})
		return false
	}
	return true
}

func (s *mgmt) serveIdentity(w http.ResponseWriter, r *http.Request, c *caller, sub, rg, name string) {
	rid := IdentityResourceID(sub, rg, name)
	switch r.Method {
	case http.MethodGet:
		p, err := s.IdentityByResourceID(rid)
		if err != nil || p.TenantID != c.tenantID {
			writeARMError(w, armError{404, "ResourceNotFound", "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/" + name + "' under resource group '" + rg + "' was not found."})
			return
		}
		writeJSON(w, 200, identityJSON(p))
	case http.MethodPut, http.MethodPatch:
		var body armIdentityBody
		if err := readBody(r, &body); err != nil {
			writeARMError(w, armError{400, "InvalidRequestContent", err.Error()})
			return
		}
		existing, _ := s.IdentityByResourceID(rid)
		if existing != nil && existing.TenantID != c.tenantID {
			writeARMError(w, armError{409, "Conflict", "identity exists in another tenant"})
			return
		}
		id := Identity{TenantID: c.tenantID, Subscription: sub, ResourceGroup: rg, Name: name}
		if existing != nil {
			// Keep the name's original casing and the current values PATCH does not touch.
			id.Name, id.Location, id.Tags = existing.DisplayName, existing.Location, existing.Tags
		}
		if r.Method == http.MethodPatch && existing == nil {
			writeARMError(w, armError{404, "ResourceNotFound", "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/" + name + "' was not found."})
			return
		}
		if body.Location != nil {
			id.Location = strings.ToLower(strings.ReplaceAll(*body.Location, " ", ""))
		} else if r.Method == http.MethodPut {
			writeARMError(w, armError{400, "LocationRequired", "The location property is required for this definition."})
			return
		}
		if body.Tags != nil || r.Method == http.MethodPut {
			id.Tags = body.Tags
		}
		p, created, err := s.PutIdentity(r.Context(), id)
		if err != nil {
			writeARMError(w, armErrorFor(err))
			return
		}
		status := 200
		if created {
			status = 201
			s.log.Info("identity created", "id", p.ResourceID, "client_id", p.ClientID, "by", c.clientID)
		}
		writeJSON(w, status, identityJSON(p))
	case http.MethodDelete:
		p, err := s.IdentityByResourceID(rid)
		if err != nil || p.TenantID != c.tenantID {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := s.DeletePrincipal(r.Context(), p.ClientID); err != nil {
			writeARMError(w, armErrorFor(err))
			return
		}
		s.log.Info("identity deleted", "id", p.ResourceID, "by", c.clientID)
		w.WriteHeader(http.StatusOK)
	default:
		writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
	}
}

// page applies ARM paging: $top (max armPageSize) and an opaque $skiptoken
// (an offset), with nextLink pointing at the same URL.
func page[T any](r *http.Request, base string, items []T, q url.Values) ([]T, *string, *armError) {
	top := armPageSize
	if v := q.Get("$top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, nil, &armError{400, "InvalidQueryParameter", "$top must be a positive integer"}
		}
		top = min(n, armPageSize)
	}
	off := 0
	if v := q.Get("$skiptoken"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, nil, &armError{400, "InvalidQueryParameter", "invalid $skiptoken"}
		}
		off = n
	}
	if off > len(items) {
		off = len(items)
	}
	end := min(off+top, len(items))
	if end >= len(items) {
		return items[off:end], nil, nil
	}
	nq := url.Values{}
	for k, v := range q {
		nq[k] = v
	}
	nq.Set("$skiptoken", strconv.Itoa(end))
	next := base + r.URL.Path + "?" + nq.Encode()
	return items[off:end], &next, nil
}

func (s *mgmt) listIdentities(w http.ResponseWriter, r *http.Request, c *caller, prefix string, q url.Values) {
	ps, err := s.IdentitiesUnder(prefix)
	if err != nil {
		writeARMError(w, armErrorFor(err))
		return
	}
	var items []map[string]any
	for i := range ps {
		if ps[i].TenantID == c.tenantID {
			items = append(items, identityJSON(&ps[i]))
		}
	}
	s.writePage(w, r, items, q)
}

func (s *mgmt) listFICs(w http.ResponseWriter, r *http.Request, p *store.Principal, q url.Values) {
	var items []map[string]any
	for _, f := range p.FederatedCreds {
		items = append(items, ficJSON(p, f))
	}
	s.writePage(w, r, items, q)
}

func (s *mgmt) serveFIC(w http.ResponseWriter, r *http.Request, p *store.Principal, name string) {
	find := func(p *store.Principal) (store.FederatedCredential, bool) {
		i := slices.IndexFunc(p.FederatedCreds, func(f store.FederatedCredential) bool { return strings.EqualFold(f.Name, name) })
		if i < 0 {
			return store.FederatedCredential{}, false
		}
		return p.FederatedCreds[i], true
	}
	switch r.Method {
	case http.MethodGet:
		f, ok := find(p)
		if !ok {
			writeARMError(w, armError{404, "NotFound", "Federated identity credential '" + name + "' not found."})
			return
		}
		writeJSON(w, 200, ficJSON(p, f))
	case http.MethodPut:
		var body armFICBody
		if err := readBody(r, &body); err != nil {
			writeARMError(w, armError{400, "InvalidRequestContent", err.Error()})
			return
		}
		if body.Properties == nil {
			writeARMError(w, armError{400, "BadRequest", "properties are required"})
			return
		}
		f := store.FederatedCredential{Name: name, Issuer: body.Properties.Issuer, Subject: body.Properties.Subject, Audiences: body.Properties.Audiences,
			ClaimsMatchingExpression: body.Properties.ClaimsMatchingExpression}
		created, err := s.PutFederatedCredential(r.Context(), p.ClientID, f)
		if err != nil {
			writeARMError(w, armErrorFor(err))
			return
		}
		np, err := s.Principal(p.ClientID)
		if err != nil {
			writeARMError(w, armErrorFor(err))
			return
		}
		f, _ = find(np)
		status := 200
		if created {
			status = 201
		}
		writeJSON(w, status, ficJSON(np, f))
	case http.MethodDelete:
		err := s.DeleteFederatedCredential(r.Context(), p.ClientID, name)
		switch {
		case errors.Is(err, ErrNotFound):
			w.WriteHeader(http.StatusNoContent)
		case err != nil:
			writeARMError(w, armErrorFor(err))
		default:
			w.WriteHeader(http.StatusOK)
		}
	default:
		writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
	}
}

// writePage answers an ARM list request with one page of items and, when
// more remain, the nextLink armmsi's pager follows.
func (s *mgmt) writePage(w http.ResponseWriter, r *http.Request, items []map[string]any, q url.Values) {
	pg, next, ae := page(r, s.baseURL(r), items, q)
	if ae != nil {
		writeARMError(w, *ae)
		return
	}
	out := map[string]any{"value": pg}
	if pg == nil {
		out["value"] = []any{}
	}
	if next != nil {
		out["nextLink"] = *next
	}
	writeJSON(w, 200, out)
}
