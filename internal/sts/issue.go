package sts

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/store"
)

// ARMResource is the canonical Azure Resource Manager resource; the
// management API accepts tokens for it (and its legacy alias).
const ARMResource = "https://management.azure.com"

// directory is an immutable, in-memory index of what token issuance reads
// besides the client itself: resource apps and role assignments. It is
// rebuilt after every write so the hot path takes no locks and no scans.
type directory struct {
	resources map[string]*store.Principal  // tenant|normalized resource → app
	roles     map[string][]string          // tenant|client|normalized resource → roles
	rbac      map[string][]rbac.Assignment // tenant|object id → Azure role assignments
}

type dirHolder struct{ p atomic.Pointer[directory] }

func normResource(r string) string {
	r = strings.TrimRight(strings.ToLower(r), "/")
	switch r {
	case "https://management.core.windows.net":
		return ARMResource
	}
	return r
}

// reindex rebuilds the directory from the store.
func (s *Directory) reindex() error {
	ps, err := s.store.Principals("")
	if err != nil {
		return fmt.Errorf("index principals: %w", err)
	}
	ras, err := s.store.RoleAssignments("")
	if err != nil {
		return fmt.Errorf("index role assignments: %w", err)
	}
	azure, err := s.store.RBACAssignments("")
	if err != nil {
		return fmt.Errorf("index Azure role assignments: %w", err)
	}
	d := &directory{resources: map[string]*store.Principal{}, roles: map[string][]string{}, rbac: s.rbacIndex(azure)}
	for i := range ps {
		p := &ps[i]
		if p.Kind != store.KindApplication {
			continue
		}
		for _, u := range p.IdentifierURIs {
			// A store written before PutApplication refused first-party
			// names must not let an app shadow one (v2 tokens for Storage).
			if !firstParty(u) {
				d.resources[p.TenantID+"|"+normResource(u)] = p
			}
		}
		// The client id always names the app; api://{clientId} only when it
		// is one of its identifierUris, as in Entra (AADSTS500011 otherwise).
		if !firstParty(p.ClientID) {
			d.resources[p.TenantID+"|"+normResource(p.ClientID)] = p
		}
	}
	for _, ra := range ras {
		res := normResource(ra.Resource)
		keys := []string{res}
		// A role on an app is a role on every name of that app.
		if app := d.resources[ra.TenantID+"|"+res]; app != nil {
			keys = keys[:0]
			for k, v := range d.resources {
				if v == app {
					keys = append(keys, strings.TrimPrefix(k, ra.TenantID+"|"))
				}
			}
		}
		for _, k := range keys {
			key := ra.TenantID + "|" + ra.Principal + "|" + k
			if !slices.Contains(d.roles[key], ra.Role) {
				d.roles[key] = append(d.roles[key], ra.Role)
			}
		}
	}
	for _, v := range d.roles {
		slices.Sort(v)
	}
	s.dir.p.Store(d)
	return nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// issue mints the access token. Resources registered as apps with
// accessTokenVersion 2 get v2 tokens (aud = the app's client id); everything
// else gets Entra's v1 shape (iss https://sts.windows.net/{tid}/, aud = the
// resource exactly as requested), which is what first-party resources get.
func (s *Server) issue(r *http.Request, req *tokenRequest, now time.Time) (string, time.Time, error) {
	signer, err := s.keys.Current()
	if err != nil {
		return "", time.Time{}, err
	}
	d := s.dir.p.Load()
	tid := req.tenant.ID
	norm := normResource(req.resource)
	app := d.resources[tid+"|"+norm]
	roles := d.roles[tid+"|"+req.client.ClientID+"|"+norm]
	now = now.Truncate(time.Second)
	// As Entra: nbf is backdated 5 minutes (clock skew) and iat = nbf;
	// the lifetime counts from now and depends on the principal's kind.
	nbf := now.Add(-Backdate)
	exp := now.Add(s.lifetime(req.client))
	c := accessClaims{
		Iat: nbf.Unix(), Nbf: nbf.Unix(), Exp: exp.Unix(),
		TID: tid, OID: req.client.ObjectID, Sub: req.client.ObjectID,
		IDTyp: "app", UTI: randomID(), RH: "0.podid", Roles: roles,
	}
	if req.client.Kind == store.KindIdentity {
		c.XMSMirID = req.client.ResourceID
	}
	if app != nil && app.AccessTokenVersion == 2 {
		c.Ver, c.Iss, c.Aud = "2.0", s.v2Issuer(tid), app.ClientID
		c.Azp, c.AzpACR = req.client.ClientID, req.acr
	} else {
		iss := "https://sts.windows.net/" + tid + "/"
		c.Ver, c.Iss, c.IDP, c.Aud = "1.0", iss, iss, req.resource
		c.AppID, c.AppIDACR = req.client.ClientID, req.acr
	}
	tok, err := signer.SignJWT(&c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return tok, exp, nil
}

// Backdate is how far nbf and iat precede the time of issue, as in Entra.
const Backdate = 5 * time.Minute

// lifetime is Entra's for the principal: 24 h for managed identities, 1 h
// for app registrations (both configurable).
func (s *Server) lifetime(p *store.Principal) time.Duration {
	if p.Kind == store.KindIdentity {
		return s.cfg.IdentityTokenLifetime
	}
	return s.cfg.TokenLifetime
}

// v2Issuer is the tenant's one v2 issuer, on the public URL whatever name a
// client used: a verifier compares iss with the issuer of the discovery
// document it fetched, possibly under another of our names.
func (s *Server) v2Issuer(tid string) string { return s.PublicURL() + "/" + tid + "/v2.0" }

// accessClaims are the claims of an access token, in Entra's names.
type accessClaims struct {
	Aud      string   `json:"aud"`
	Iss      string   `json:"iss"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf"`
	Exp      int64    `json:"exp"`
	AppID    string   `json:"appid,omitempty"`
	AppIDACR string   `json:"appidacr,omitempty"`
	Azp      string   `json:"azp,omitempty"`
	AzpACR   string   `json:"azpacr,omitempty"`
	IDP      string   `json:"idp,omitempty"`
	IDTyp    string   `json:"idtyp"`
	OID      string   `json:"oid"`
	RH       string   `json:"rh"`
	Roles    []string `json:"roles,omitempty"`
	Sub      string   `json:"sub"`
	TID      string   `json:"tid"`
	UTI      string   `json:"uti"`
	Ver      string   `json:"ver"`
	XMSMirID string   `json:"xms_mirid,omitempty"`
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
