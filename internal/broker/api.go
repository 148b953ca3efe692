package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/podid/podid/internal/token"
)

// Path is the broker's one token endpoint.
const Path = "/v1/token"

// Audience is the audience of the pod tokens the agent presents to the
// broker (token.BrokerAudience).
const Audience = token.BrokerAudience

// AgentAudience is the audience of the agent's own token, sent in
// AgentHeader with every request.
const AgentAudience = token.BrokerAgentAudience

// AgentHeader carries the presenting agent's own token (its projected
// token for AgentAudience, bound to its pod).
const AgentHeader = "Podid-Agent-Token"

// DefaultAgentTokenFile is where the chart projects the agent's token for
// AgentAudience.
const DefaultAgentTokenFile = "/var/run/secrets/podid/broker-agent/token"

// RBAC model of AKS identity bindings: a pod's service account may use
// identity <client-id> if it may `use-managed-identity` the resource named
// by the client id in this API group.
const (
	AccessGroup = "cid.wi.aks.azure.com"
	AccessVerb  = "use-managed-identity"
)

// Input bounds.
const (
	maxBody     = 4 << 10
	maxToken    = 8 << 10
	maxResource = 1 << 10
)

// TokenRequest is the body of POST Path.
type TokenRequest struct {
	ClientID string `json:"clientID"`
	Resource string `json:"resource"`
}

// TokenResponse is the broker's answer: the access token for the identity
// and resource, valid until ExpiresOn (Unix seconds).
type TokenResponse struct {
	AccessToken string `json:"accessToken"`
	ExpiresOn   int64  `json:"expiresOn"`
	ClientID    string `json:"clientID"`
	Resource    string `json:"resource"`
}

// ErrorResponse is every refusal: a stable Code (see the Code* constants)
// and a description the pod's owner can act on.
type ErrorResponse struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// Error codes of ErrorResponse.
const (
	CodeInvalidRequest = "invalid_request" // 400: malformed request
	CodeInvalidToken   = "invalid_token"   // 401: the pod token is not valid for the broker
	CodeAccessDenied   = "access_denied"   // 403: the pod may not use the identity
	CodeNoCredential   = "no_credential"   // 404: the identity has no federated credential for the broker
	CodeThrottled      = "throttled"       // 429: the identity provider throttles
	CodeUpstream       = "upstream_error"  // 502: the identity provider failed or refused
	CodeUnavailable    = "unavailable"     // 503: the API server could not be asked
	CodeInternal       = "internal_error"  // 500
	CodeTimeout        = "timeout"         // 504
)

// parseTokenRequest reads a bounded JSON body strictly: one object, known
// fields only, a GUID client id, a resource URI without whitespace.
func parseTokenRequest(r *http.Request) (TokenRequest, error) {
	var tr TokenRequest
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return tr, fmt.Errorf("the Content-Type must be application/json, got %q", truncate(ct))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return tr, fmt.Errorf("read body: %w", err)
	}
	if len(body) > maxBody {
		return tr, fmt.Errorf("body larger than %d bytes", maxBody)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil {
		return tr, fmt.Errorf("body is not a token request: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return tr, errors.New("body has data after the JSON object")
	}
	if _, err := uuid.Parse(tr.ClientID); err != nil || len(tr.ClientID) != 36 {
		return tr, fmt.Errorf("clientID %q is not a GUID", truncate(tr.ClientID))
	}
	res, err := cleanResource(tr.Resource)
	if err != nil {
		return tr, err
	}
	tr.Resource = res
	return tr, nil
}

// cleanResource checks a resource URI and drops a trailing /.default.
func cleanResource(res string) (string, error) {
	res = strings.TrimSuffix(res, "/.default")
	switch {
	case res == "":
		return "", errors.New("resource is required")
	case len(res) > maxResource:
		return "", fmt.Errorf("resource longer than %d bytes", maxResource)
	case strings.IndexFunc(res, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0:
		return "", errors.New("resource contains whitespace or control characters")
	}
	return res, nil
}

// bearer returns the token of the single Authorization: Bearer header.
func bearer(h http.Header) (string, error) {
	v := h.Values("Authorization")
	if len(v) != 1 {
		return "", errors.New("exactly one Authorization: Bearer <pod token> header is required")
	}
	tok, ok := strings.CutPrefix(v[0], "Bearer ")
	if !ok || tok == "" {
		return "", errors.New("the Authorization header must be Bearer <pod token>")
	}
	return tok, compactJWT("pod token", tok)
}

// agentToken returns the token of the single AgentHeader.
func agentToken(h http.Header) (string, error) {
	v := h.Values(AgentHeader)
	if len(v) != 1 || v[0] == "" {
		return "", fmt.Errorf("exactly one %s header (the agent's own token for audience %s) is required", AgentHeader, AgentAudience)
	}
	return v[0], compactJWT("agent token", v[0])
}

func compactJWT(what, tok string) error {
	if len(tok) > maxToken {
		return fmt.Errorf("%s longer than %d bytes", what, maxToken)
	}
	if strings.IndexFunc(tok, func(c rune) bool {
		return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.')
	}) >= 0 || strings.Count(tok, ".") != 2 {
		return fmt.Errorf("%s is not a compact JWT", what)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
