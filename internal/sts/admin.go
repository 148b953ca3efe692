package sts

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/store"
)

func applicationJSON(p *store.Principal) map[string]any {
	secrets := []map[string]any{}
	for _, s := range p.Secrets {
		m := map[string]any{"id": s.ID, "displayName": s.DisplayName, "hint": s.Hint}
		if !s.Expires.IsZero() {
			m["expires"] = s.Expires.UTC().Format(time.RFC3339)
		}
		secrets = append(secrets, m)
	}
	certs := []map[string]any{}
	for _, c := range p.Certificates {
		m := map[string]any{"id": c.ID}
		if cert, err := x509.ParseCertificate(c.DER); err == nil {
			s1 := sha1.Sum(cert.Raw)
			s256 := sha256.Sum256(cert.Raw)
			m["thumbprint"] = strings.ToUpper(hex.EncodeToString(s1[:]))
			m["x5t#S256"] = base64.RawURLEncoding.EncodeToString(s256[:])
			m["subject"] = cert.Subject.String()
			m["notAfter"] = cert.NotAfter.UTC().Format(time.RFC3339)
		}
		certs = append(certs, m)
	}
	fics := []map[string]any{}
	for _, f := range p.FederatedCreds {
		fics = append(fics, map[string]any{"name": f.Name, "issuer": f.Issuer, "subject": f.Subject, "audiences": f.Audiences})
	}
	v := p.AccessTokenVersion
	if v == 0 {
		v = 1
	}
	return map[string]any{
		"tenantId": p.TenantID, "clientId": p.ClientID, "objectId": p.ObjectID, "kind": p.Kind,
		"displayName": p.DisplayName, "identifierUris": p.IdentifierURIs, "accessTokenVersion": v,
		"secrets": secrets, "certificates": certs, "federatedIdentityCredentials": fics,
	}
}

type appBody struct {
	ClientID           string   `json:"clientId"`
	DisplayName        string   `json:"displayName"`
	IdentifierURIs     []string `json:"identifierUris"`
	AccessTokenVersion int      `json:"accessTokenVersion"`
}

func adminErr(w http.ResponseWriter, err error) { writeARMError(w, armErrorFor(err)) }

type callerKey struct{}

// callerOf returns the administrator adminAuth admitted.
func callerOf(r *http.Request) *caller { return r.Context().Value(callerKey{}).(*caller) }

// adminHandler is podid's own management API for what ARM does not cover
// (tenants, app registrations, their credentials, role assignments); see
// docs/sts.md. Routes are ServeMux patterns behind adminAuth, so no handler
// runs before the caller is authenticated and allowed the target tenant.
func (s *mgmt) adminHandler() http.Handler {
	mux := http.NewServeMux()
	const t = "/podid/v1/tenants/{tid}"
	const app = t + "/applications/{cid}"
	mux.HandleFunc("PUT "+t, s.putTenant)
	mux.HandleFunc("GET "+t+"/applications", s.listApplications)
	mux.HandleFunc("POST "+t+"/applications", s.createApplication)
	mux.HandleFunc("GET "+app, s.withApp(s.getApplication))
	mux.HandleFunc("PUT "+app, s.putApplication)
	mux.HandleFunc("DELETE "+app, s.deleteApplication)
	mux.HandleFunc("POST "+app+"/secrets", s.withApp(s.addSecret))
	mux.HandleFunc("DELETE "+app+"/secrets/{id}", s.withApp(s.deleteSecret))
	mux.HandleFunc("POST "+app+"/certificates", s.withApp(s.addCertificate))
	mux.HandleFunc("DELETE "+app+"/certificates/{id}", s.withApp(s.deleteCertificate))
	mux.HandleFunc("GET "+app+"/federatedIdentityCredentials", s.withApp(s.listAppFICs))
	mux.HandleFunc(app+"/federatedIdentityCredentials/{name}", s.withApp(s.serveAppFIC))
	mux.HandleFunc("GET "+t+"/roleAssignments", s.listRoleAssignments)
	mux.HandleFunc("POST "+t+"/roleAssignments", s.createRoleAssignment)
	mux.HandleFunc("DELETE "+t+"/roleAssignments/{id}", s.deleteRoleAssignment)
	return s.adminAuth(jsonErrorsWith(mux, func(w http.ResponseWriter, status int) {
		if status == http.StatusMethodNotAllowed {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return
		}
		writeARMError(w, armError{404, "NotFound", "not found"})
	}))
}

// adminAuth decides every /podid/v1 request before any route sees it:
// authentication and the admin role (Config.AdminRole assigned at the
// tenant root "/", an Azure role assignment like any other), then the
// target tenant. A caller
// administers its own tenant; only the system tenant's administrators
// administer other tenants, which includes creating them.
func (s *mgmt) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ae := s.authenticate(r)
		if ae != nil {
			writeARMError(w, *ae)
			return
		}
		if role, _ := rbac.ByName(s.cfg.AdminRole); !s.holdsAtRoot(c.tenantID, c.objectID, role.ID) {
			writeARMError(w, armError{403, "AuthorizationFailed", "The client '" + c.clientID + "' with object id '" + c.objectID + "' is not an administrator of its tenant: it needs the role '" + role.Name + "' at the tenant root scope '/'."})
			return
		}
		segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // podid, v1, tenants, {tid}, …
		if len(segs) < 4 || segs[2] != "tenants" {
			writeARMError(w, armError{404, "NotFound", "not found"})
			return
		}
		tid := strings.ToLower(segs[3])
		if !s.mayAdminister(c, tid) {
			s.log.Warn("cross-tenant management call refused", "caller_tenant", c.tenantID, "client_id", c.clientID, "target_tenant", truncate(tid, 64), "method", r.Method)
			writeARMError(w, armError{403, "AuthorizationFailed", "The client '" + c.clientID + "' does not have authorization to manage tenant '" + truncate(tid, 64) + "'."})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// mayAdminister reports whether an authenticated administrator (the admin
// role already checked) may manage tenant tid through /podid/v1.
func (s *mgmt) mayAdminister(c *caller, tid string) bool {
	if c.tenantID == tid {
		return true
	}
	sys := s.cfg.SystemTenantID
	return sys != "" && c.tenantID == sys
}

func tenantOf(r *http.Request) string { return strings.ToLower(r.PathValue("tid")) }

func (s *mgmt) putTenant(w http.ResponseWriter, r *http.Request) {
	tid := tenantOf(r)
	var body struct {
		Domains []string `json:"domains"`
	}
	if err := readBody(r, &body); err != nil {
		adminErr(w, err)
		return
	}
	if err := s.PutTenant(r.Context(), tid, body.Domains); err != nil {
		adminErr(w, err)
		return
	}
	t, _ := s.tenant(tid)
	c := callerOf(r)
	s.log.Info("tenant put", "tenant", tid, "by", c.clientID, "by_tenant", c.tenantID)
	writeJSON(w, 200, t)
}

func (s *mgmt) listApplications(w http.ResponseWriter, r *http.Request) {
	ps, err := s.Principals(tenantOf(r))
	if err != nil {
		adminErr(w, err)
		return
	}
	out := []map[string]any{}
	for i := range ps {
		if ps[i].Kind == store.KindApplication {
			out = append(out, applicationJSON(&ps[i]))
		}
	}
	writeJSON(w, 200, map[string]any{"value": out})
}

func (s *mgmt) createApplication(w http.ResponseWriter, r *http.Request) {
	var b appBody
	if err := readBody(r, &b); err != nil {
		adminErr(w, err)
		return
	}
	if b.ClientID != "" {
		adminErr(w, invalid("POST creates a new client id; use PUT …/applications/{clientId} to choose one"))
		return
	}
	p, _, err := s.PutApplication(r.Context(), tenantOf(r), Application{DisplayName: b.DisplayName, IdentifierURIs: b.IdentifierURIs, AccessTokenVersion: b.AccessTokenVersion})
	if err != nil {
		adminErr(w, err)
		return
	}
	s.log.Info("application created", "client_id", p.ClientID, "by", callerOf(r).clientID)
	writeJSON(w, 201, applicationJSON(p))
}

// tenantApp returns the app registration the path names, if it is an
// application of the path's tenant (another tenant's is not found).
func (s *mgmt) tenantApp(r *http.Request) (*store.Principal, error) {
	p, err := s.Principal(r.PathValue("cid"))
	if err == nil && (p.TenantID != tenantOf(r) || p.Kind != store.KindApplication) {
		err = ErrNotFound
	}
	return p, err
}

// withApp runs h with the path's application, or answers 404.
func (s *mgmt) withApp(h func(http.ResponseWriter, *http.Request, *store.Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.tenantApp(r)
		if err != nil {
			adminErr(w, err)
			return
		}
		h(w, r, p)
	}
}

func (s *mgmt) getApplication(w http.ResponseWriter, _ *http.Request, p *store.Principal) {
	writeJSON(w, 200, applicationJSON(p))
}

func (s *mgmt) putApplication(w http.ResponseWriter, r *http.Request) {
	var b appBody
	if err := readBody(r, &b); err != nil {
		adminErr(w, err)
		return
	}
	np, created, err := s.PutApplication(r.Context(), tenantOf(r), Application{ClientID: strings.ToLower(r.PathValue("cid")), DisplayName: b.DisplayName, IdentifierURIs: b.IdentifierURIs, AccessTokenVersion: b.AccessTokenVersion})
	if err != nil {
		adminErr(w, err)
		return
	}
	status := 200
	if created {
		status = 201
	}
	writeJSON(w, status, applicationJSON(np))
}

func (s *mgmt) deleteApplication(w http.ResponseWriter, r *http.Request) {
	p, err := s.tenantApp(r)
	if err != nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := s.DeletePrincipal(r.Context(), p.ClientID); err != nil {
		adminErr(w, err)
		return
	}
	s.log.Info("application deleted", "client_id", p.ClientID, "by", callerOf(r).clientID)
	w.WriteHeader(http.StatusOK)
}

func (s *mgmt) addSecret(w http.ResponseWriter, r *http.Request, p *store.Principal) {
	var b struct {
		DisplayName   string `json:"displayName"`
		ExpiresInDays int    `json:"expiresInDays"`
	}
	if err := readBody(r, &b); err != nil {
		adminErr(w, err)
		return
	}
	if b.ExpiresInDays < 0 || b.ExpiresInDays > 3650 || len(b.DisplayName) > 120 {
		adminErr(w, invalid("expiresInDays must be 0..3650 and displayName at most 120 characters"))
		return
	}
	var exp time.Time
	if b.ExpiresInDays > 0 {
		exp = s.cfg.Now().Add(time.Duration(b.ExpiresInDays) * 24 * time.Hour)
	}
	id, value, err := s.GenerateSecret(r.Context(), p.ClientID, b.DisplayName, exp)
	if err != nil {
		adminErr(w, err)
		return
	}
	s.log.Info("client secret added", "client_id", p.ClientID, "secret_id", id, "by", callerOf(r).clientID)
	writeJSON(w, 201, map[string]any{"id": id, "hint": value[:3], "secretText": value})
}

func (s *mgmt) deleteSecret(w http.ResponseWriter, r *http.Request, p *store.Principal) {
	if err := s.DeleteSecret(r.Context(), p.ClientID, r.PathValue("id")); err != nil && !errors.Is(err, ErrNotFound) {
		adminErr(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *mgmt) addCertificate(w http.ResponseWriter, r *http.Request, p *store.Principal) {
	var b struct {
		PEM string `json:"pem"`
	}
	if err := readBody(r, &b); err != nil {
		adminErr(w, err)
		return
	}
	id, err := s.AddCertificate(r.Context(), p.ClientID, []byte(b.PEM))
	if err != nil {
		adminErr(w, err)
		return
	}
	writeJSON(w, 201, map[string]any{"id": id})
}

func (s *mgmt) deleteCertificate(w http.ResponseWriter, r *http.Request, p *store.Principal) {
	if err := s.DeleteCertificate(r.Context(), p.ClientID, r.PathValue("id")); err != nil && !errors.Is(err, ErrNotFound) {
		adminErr(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *mgmt) listAppFICs(w http.ResponseWriter, _ *http.Request, p *store.Principal) {
	writeJSON(w, 200, map[string]any{"value": applicationJSON(p)["federatedIdentityCredentials"]})
}

func (s *mgmt) serveAppFIC(w http.ResponseWriter, r *http.Request, p *store.Principal) {
	name := r.PathValue("name")
	switch r.Method {
	case http.MethodGet:
		for _, f := range p.FederatedCreds {
			if strings.EqualFold(f.Name, name) {
				writeJSON(w, 200, f)
				return
			}
		}
		adminErr(w, ErrNotFound)
	case http.MethodPut:
		var b store.FederatedCredential
		if err := readBody(r, &b); err != nil {
			adminErr(w, err)
			return
		}
		b.Name = name
		created, err := s.PutFederatedCredential(r.Context(), p.ClientID, b)
		if err != nil {
			adminErr(w, err)
			return
		}
		status := 200
		if created {
			status = 201
		}
		if len(b.Audiences) == 0 {
			b.Audiences = []string{DefaultFICAudience}
		}
		writeJSON(w, status, b)
	case http.MethodDelete:
		if err := s.DeleteFederatedCredential(r.Context(), p.ClientID, name); err != nil && !errors.Is(err, ErrNotFound) {
			adminErr(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
	}
}

func (s *mgmt) listRoleAssignments(w http.ResponseWriter, r *http.Request) {
	ras, err := s.RoleAssignments(tenantOf(r))
	if err != nil {
		adminErr(w, err)
		return
	}
	if ras == nil {
		ras = []store.RoleAssignment{}
	}
	writeJSON(w, 200, map[string]any{"value": ras})
}

func (s *mgmt) createRoleAssignment(w http.ResponseWriter, r *http.Request) {
	var b store.RoleAssignment
	if err := readBody(r, &b); err != nil {
		adminErr(w, err)
		return
	}
	b.ID, b.TenantID = "", tenantOf(r)
	ra, err := s.PutRoleAssignment(r.Context(), b)
	if err != nil {
		adminErr(w, err)
		return
	}
	s.log.Info("role assigned", "principal", ra.Principal, "resource", ra.Resource, "role", ra.Role, "by", callerOf(r).clientID)
	writeJSON(w, 201, ra)
}

func (s *mgmt) deleteRoleAssignment(w http.ResponseWriter, r *http.Request) {
	ras, err := s.RoleAssignments(tenantOf(r))
	if err != nil {
		adminErr(w, err)
		return
	}
	// Only an assignment of the path's tenant is deleted; another tenant's id is absent here.
	for _, ra := range ras {
		if ra.ID == r.PathValue("id") {
			if err := s.DeleteRoleAssignment(r.Context(), ra.ID); err != nil {
				adminErr(w, err)
				return
			}
			break
		}
	}
	w.WriteHeader(http.StatusOK)
}
