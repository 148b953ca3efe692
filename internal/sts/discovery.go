package sts

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// tenantForDocs resolves the tenant segment of a discovery URL; "common" and
// "organizations" get Entra's {tenantid} placeholder.
func (s *Server) tenantForDocs(seg string) (string, bool) {
	switch strings.ToLower(seg) {
	case "common", "organizations":
		return "{tenantid}", true
	}
	t, ok := s.tenant(seg)
	return t.ID, ok
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request, seg string, ver int) {
	tid, ok := s.tenantForDocs(seg)
	if !ok {
		writeOAuthError(w, r, s.cfg.Now(), errTenantNotFound(seg))
		return
	}
	base := s.baseURL(r)
	host := strings.TrimPrefix(base, "https://")
	doc := map[string]any{
		"token_endpoint_auth_methods_supported":  []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_modes_supported":               []string{"query", "fragment", "form_post"},
		"subject_types_supported":                []string{"pairwise"},
		"id_token_signing_alg_values_supported":  []string{"RS256"},
		"response_types_supported":               []string{"code", "id_token", "code id_token", "token id_token", "token"},
		"scopes_supported":                       []string{"openid", "profile", "email", "offline_access"},
		"request_uri_parameter_supported":        false,
		"http_logout_supported":                  true,
		"frontchannel_logout_supported":          true,
		"claims_supported":                       []string{"sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "azp", "roles", "ver", "idtyp"},
		"tenant_region_scope":                    nil,
		"cloud_instance_name":                    host,
		"cloud_graph_host_name":                  host,
		"msgraph_host":                           host,
		"grant_types_supported":                  []string{"client_credentials"},
		"token_endpoint_auth_signing_alg_values": []string{"RS256", "PS256"},
	}
	if ver == 2 {
		doc["issuer"] = s.v2Issuer(tid)
		doc["token_endpoint"] = base + "/" + tid + "/oauth2/v2.0/token"
		doc["authorization_endpoint"] = base + "/" + tid + "/oauth2/v2.0/authorize"
		doc["device_authorization_endpoint"] = base + "/" + tid + "/oauth2/v2.0/devicecode"
		doc["end_session_endpoint"] = base + "/" + tid + "/oauth2/v2.0/logout"
		doc["jwks_uri"] = base + "/" + tid + "/discovery/v2.0/keys"
	} else {
		doc["issuer"] = "https://sts.windows.net/" + tid + "/"
		doc["token_endpoint"] = base + "/" + tid + "/oauth2/token"
		doc["authorization_endpoint"] = base + "/" + tid + "/oauth2/authorize"
		doc["end_session_endpoint"] = base + "/" + tid + "/oauth2/logout"
		doc["jwks_uri"] = base + "/common/discovery/keys"
	}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeJSONCacheable(w, doc)
}

func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeJSONCacheable(w, s.keys.Public())
}

// CodeInvalidInstance is Entra's answer to instance discovery for an
// authority it does not host.
const CodeInvalidInstance = 50049

// serveInstanceDiscovery answers MSAL's authority validation
// (GET /common/discovery/instance?api-version=1.1&authorization_endpoint=…)
// in Entra's shape: where the authority's tenant discovery document is, and
// the authority host's aliases. Only an authority on one of our names is
// valid; any other is Entra's invalid_instance, so a client is never told to
// trust a host this sts does not serve.
func (s *Server) serveInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q["api-version"]) > 1 || len(q["authorization_endpoint"]) > 1 {
		writeOAuthError(w, r, s.cfg.Now(), newErr(http.StatusBadRequest, "invalid_request", 90014, "The request query string is malformed or repeats a parameter."))
		return
	}
	if v := q.Get("api-version"); v != "1.1" && v != "1.0" {
		writeOAuthError(w, r, s.cfg.Now(), newErr(http.StatusBadRequest, "invalid_request", 90014, "The request must name api-version 1.1."))
		return
	}
	base := s.baseURL(r)
	host := strings.TrimPrefix(base, "https://")
	tenant := "common"
	if ae := q.Get("authorization_endpoint"); ae != "" {
		u, err := url.Parse(ae)
		if err != nil || u.Scheme != "https" || u.User != nil || !s.knownHost(u.Hostname()) || len(ae) > 2048 {
			writeOAuthError(w, r, s.cfg.Now(), newErr(http.StatusBadRequest, "invalid_instance", CodeInvalidInstance,
				"Unknown or invalid instance: %s is not an authority this identity provider serves.", truncate(strings.ToValidUTF8(ae, "?"), 200)))
			return
		}
		host = strings.ToLower(u.Host)
		if seg, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/"); seg != "" {
			tenant = seg
		}
	}
	writeJSONCacheable(w, map[string]any{
		"tenant_discovery_endpoint": "https://" + host + "/" + url.PathEscape(tenant) + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": host,
			"preferred_cache":   host,
			"aliases":           []string{host},
		}},
	})
}

// knownHost reports whether h (no port) is one of the serving certificate's
// names.
func (s *Server) knownHost(h string) bool {
	h = strings.Trim(h, "[]")
	for _, known := range s.cfg.Hosts {
		if strings.EqualFold(known, h) {
			return true
		}
	}
	return false
}

// JWKSMaxAge is how long clients may cache discovery documents and the
// JWKS (Cache-Control max-age). A new signing key is published
// KeyPublishLead (> JWKSMaxAge) before it signs.
const JWKSMaxAge = 5 * time.Minute

// writeJSONCacheable writes public metadata; keys rotate, so caches are short.
func writeJSONCacheable(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(JWKSMaxAge/time.Second)))
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}
