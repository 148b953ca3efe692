package sts

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

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

func methodNotAllowed(w http.ResponseWriter) {
	writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
}

// serveAdmin is podid's own management API for what ARM does not cover
// (app registrations, their credentials, role assignments, tenants); see
// docs/sts.md. Same authentication as the ARM API. Authorization comes
// before anything else is looked at, for every route: a caller administers
// its own tenant; only the system tenant's administrators administer other
// tenants, which includes creating them.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request, segs []string) {
	c, ae := s.authorize(r)
	if ae != nil {
		writeARMError(w, *ae)
		return
	}
	if len(segs) < 2 || segs[0] != "tenants" {
		writeARMError(w, armError{404, "NotFound", "not found"})
		return
	}
	tid := strings.ToLower(segs[1])
	if !s.mayAdminister(c, tid) {
		s.log.Warn("cross-tenant management call refused", "caller_tenant", c.tenantID, "client_id", c.clientID, "target_tenant", truncate(tid, 64), "method", r.Method)
		writeARMError(w, armError{403, "AuthorizationFailed", "The client '" + c.clientID + "' does not have authorization to manage tenant '" + truncate(tid, 64) + "'."})
		return
	}
	rest := segs[2:]
	if len(rest) == 0 {
		if r.Method != http.MethodPut {
			methodNotAllowed(w)
			return
		}
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
		s.log.Info("tenant put", "tenant", tid, "by", c.clientID, "by_tenant", c.tenantID)
		writeJSON(w, 200, t)
		return
	}
	switch rest[0] {
	case "applications":
		s.serveApplications(w, r, c, tid, rest[1:])
	case "roleAssignments":
		s.serveRoleAssignments(w, r, c, tid, rest[1:])
	default:
		writeARMError(w, armError{404, "NotFound", "not found"})
	}
}

// mayAdminister reports whether an authenticated administrator (the admin
// role already checked) may manage tenant tid through /podid/v1.
func (s *Server) mayAdminister(c *caller, tid string) bool {
	if c.tenantID == tid {
		return true
	}
	sys := s.cfg.SystemTenantID
	return sys != "" && c.tenantID == sys
}

func (s *Server) serveApplications(w http.ResponseWriter, r *http.Request, c *caller, tid string, rest []string) {
	ctx := r.Context()
	if len(rest) == 0 {
		switch r.Method {
		case http.MethodGet:
			ps, err := s.Principals(tid)
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
		case http.MethodPost:
			var b appBody
			if err := readBody(r, &b); err != nil {
				adminErr(w, err)
				return
			}
			if b.ClientID != "" {
				adminErr(w, invalid("POST creates a new client id; use PUT …/applications/{clientId} to choose one"))
				return
			}
			p, _, err := s.PutApplication(ctx, tid, Application{DisplayName: b.DisplayName, IdentifierURIs: b.IdentifierURIs, AccessTokenVersion: b.AccessTokenVersion})
			if err != nil {
				adminErr(w, err)
				return
			}
			s.log.Info("application created", "client_id", p.ClientID, "by", c.clientID)
			writeJSON(w, 201, applicationJSON(p))
		default:
			methodNotAllowed(w)
		}
		return
	}
	clientID := strings.ToLower(rest[0])
	p, err := s.Principal(clientID)
	if err == nil && (p.TenantID != tid || p.Kind != store.KindApplication) {
		err = ErrNotFound
	}
	if len(rest) == 1 {
		switch r.Method {
		case http.MethodGet:
			if err != nil {
				adminErr(w, err)
				return
			}
			writeJSON(w, 200, applicationJSON(p))
		case http.MethodPut:
			var b appBody
			if err := readBody(r, &b); err != nil {
				adminErr(w, err)
				return
			}
			np, created, err := s.PutApplication(ctx, tid, Application{ClientID: clientID, DisplayName: b.DisplayName, IdentifierURIs: b.IdentifierURIs, AccessTokenVersion: b.AccessTokenVersion})
			if err != nil {
				adminErr(w, err)
				return
			}
			status := 200
			if created {
				status = 201
			}
			writeJSON(w, status, applicationJSON(np))
		case http.MethodDelete:
			if err != nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			if err := s.DeletePrincipal(ctx, clientID); err != nil {
				adminErr(w, err)
				return
			}
			w.WriteHeader(http.StatusOK)
		default:
			methodNotAllowed(w)
		}
		return
	}
	if err != nil {
		adminErr(w, err)
		return
	}
	switch {
	case rest[1] == "secrets" && len(rest) == 2 && r.Method == http.MethodPost:
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
		id, value, err := s.GenerateSecret(ctx, clientID, b.DisplayName, exp)
		if err != nil {
			adminErr(w, err)
			return
		}
		s.log.Info("client secret added", "client_id", clientID, "secret_id", id, "by", c.clientID)
		writeJSON(w, 201, map[string]any{"id": id, "hint": value[:3], "secretText": value})
	case rest[1] == "secrets" && len(rest) == 3 && r.Method == http.MethodDelete:
		if err := s.DeleteSecret(ctx, clientID, rest[2]); err != nil && !errors.Is(err, ErrNotFound) {
			adminErr(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	case rest[1] == "certificates" && len(rest) == 2 && r.Method == http.MethodPost:
		var b struct {
			PEM string `json:"pem"`
		}
		if err := readBody(r, &b); err != nil {
			adminErr(w, err)
			return
		}
		id, err := s.AddCertificate(ctx, clientID, []byte(b.PEM))
		if err != nil {
			adminErr(w, err)
			return
		}
		writeJSON(w, 201, map[string]any{"id": id})
	case rest[1] == "certificates" && len(rest) == 3 && r.Method == http.MethodDelete:
		if err := s.DeleteCertificate(ctx, clientID, rest[2]); err != nil && !errors.Is(err, ErrNotFound) {
			adminErr(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	case rest[1] == "federatedIdentityCredentials" && len(rest) == 2 && r.Method == http.MethodGet:
		writeJSON(w, 200, map[string]any{"value": applicationJSON(p)["federatedIdentityCredentials"]})
	case rest[1] == "federatedIdentityCredentials" && len(rest) == 3:
		s.serveAppFIC(w, r, p, rest[2])
	default:
		writeARMError(w, armError{404, "NotFound", "not found"})
	}
}

func (s *Server) serveAppFIC(w http.ResponseWriter, r *http.Request, p *store.Principal, name string) {
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
		methodNotAllowed(w)
	}
}

func (s *Server) serveRoleAssignments(w http.ResponseWriter, r *http.Request, c *caller, tid string, rest []string) {
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		ras, err := s.RoleAssignments(tid)
		if err != nil {
			adminErr(w, err)
			return
		}
		if ras == nil {
			ras = []store.RoleAssignment{}
		}
		writeJSON(w, 200, map[string]any{"value": ras})
	case len(rest) == 0 && r.Method == http.MethodPost:
		var b store.RoleAssignment
		if err := readBody(r, &b); err != nil {
			adminErr(w, err)
			return
		}
		b.ID, b.TenantID = "", tid
		ra, err := s.PutRoleAssignment(r.Context(), b)
		if err != nil {
			adminErr(w, err)
			return
		}
		s.log.Info("role assigned", "principal", ra.Principal, "resource", ra.Resource, "role", ra.Role, "by", c.clientID)
		writeJSON(w, 201, ra)
	case len(rest) == 1 && r.Method == http.MethodDelete:
		ras, err := s.RoleAssignments(tid)
		if err != nil {
			adminErr(w, err)
			return
		}
		for _, ra := range ras {
			if ra.ID == rest[0] {
				if err := s.DeleteRoleAssignment(r.Context(), ra.ID); err != nil {
					adminErr(w, err)
					return
				}
				break
			}
		}
		w.WriteHeader(http.StatusOK)
	default:
		writeARMError(w, armError{404, "NotFound", "not found"})
	}
}
