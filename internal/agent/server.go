package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/podid/podid/internal/token"
)

// Tokens is the token cache the handler draws from.
type Tokens interface {
	Get(ctx context.Context, r token.Request) (token.Token, bool, error)
}

// HandlerConfig assembles a Handler.
type HandlerConfig struct {
	Resolver Resolver
	Decider  Decider
	Tokens   Tokens
	Metrics  *Metrics
	Logger   *slog.Logger
	Now      func() time.Time
}

// Handler serves the IMDS endpoints to pods.
type Handler struct {
	cfg HandlerConfig
}

// NewHandler assembles a Handler.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.Metrics == nil {
		cfg.Metrics = newMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg}
}

// tokenResponse is the IMDS success body: every field a string.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    string `json:"expires_in"`
	ExpiresOn    string `json:"expires_on"`
	NotBefore    string `json:"not_before"`
	Resource     string `json:"resource"`
	TokenType    string `json:"token_type"`
	ClientID     string `json:"client_id"`
}

type errorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cache := "none"
	outcome := outcomeOK
	defer func() { h.cfg.Metrics.request(outcome, cache, time.Since(start)) }()

	fail := func(e *httpError, attrs ...slog.Attr) {
		outcome = e.outcome
		if outcome == "" {
			outcome = outcomeBadRequest
		}
		level := slog.LevelInfo
		if e.status >= 500 {
			level = slog.LevelWarn
		}
		attrs = append(attrs, slog.String("remote", r.RemoteAddr), slog.Int("status", e.status),
			slog.String("outcome", outcome), slog.String("reason", e.description))
		h.cfg.Logger.LogAttrs(r.Context(), level, "imds request denied", attrs...)
		writeError(w, e)
	}

	rt, rawQuery := classifyPath(r.RequestURI)
	switch rt {
	case routeBadPath:
		fail(&httpError{status: http.StatusBadRequest, code: "invalid_request", description: "Invalid request path: not a metadata endpoint this service answers", outcome: outcomeBadPath})
		return
	case routeOther:
		fail(&httpError{status: http.StatusNotFound, code: "not_found", description: "Not found: this metadata service answers only /metadata/identity/oauth2/token", outcome: outcomeNotFound})
		return
	case routeInstance:
		fail(&httpError{status: http.StatusForbidden, code: "access_denied", description: "Instance metadata is not served to pods by policy (podid never exposes node data); set the region explicitly instead of auto-detecting it", outcome: outcomeInstance})
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		fail(&httpError{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "Only GET is supported", outcome: outcomeBadRequest})
		return
	}
	if e := checkHeaders(r.Header); e != nil {
		fail(e)
		return
	}
	q, e := parseQuery(rawQuery)
	if e != nil {
		fail(e)
		return
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		fail(asHTTP(denied(DenyCallerAddress, "cannot tell the caller's address")))
		return
	}
	ip := ap.Addr().Unmap()
	ctx := r.Context()
	pod, err := h.cfg.Resolver.Resolve(ctx, ip)
	if err != nil {
		fail(asHTTP(err))
		return
	}
	podAttr := slog.String("pod", pod.Namespace+"/"+pod.Name)
	ids, err := h.cfg.Decider.Identities(ctx, pod)
	if err != nil {
		fail(asHTTP(err), podAttr)
		return
	}
	id, err := choose(pod, ids, q.sel)
	if err != nil {
		fail(asHTTP(err), podAttr)
		return
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	treq := token.Request{Identity: id, Resource: q.resource,
		Pod: token.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ServiceAccount: sa}}
	tok, hit, err := h.cfg.Tokens.Get(ctx, treq)
	if hit {
		cache = "hit"
	} else {
		cache = "miss"
	}
	if err != nil {
		fail(tokenError(err), podAttr, slog.String("identity", id.ClientID), slog.String("resource", q.resource))
		return
	}
	// The IP may have changed hands while the token was obtained: hand it
	// out only if the same pod (by UID) still owns the caller's IP.
	again, err := h.cfg.Resolver.Resolve(ctx, ip)
	if err != nil {
		fail(asHTTP(err), podAttr)
		return
	}
	if again.UID != pod.UID {
		fail(asHTTP(denied(DenyStaleCaller, "IP %s changed owner while the token was obtained (pod %s/%s replaced): retry", ip, pod.Namespace, pod.Name)), podAttr)
		return
	}
	now := h.cfg.Now()
	body, _ := json.Marshal(tokenResponse{
		AccessToken: tok.AccessToken,
		ExpiresIn:   strconv.FormatInt(int64(tok.ExpiresOn.Sub(now)/time.Second), 10),
		ExpiresOn:   strconv.FormatInt(tok.ExpiresOn.Unix(), 10),
		NotBefore:   strconv.FormatInt(tok.IssuedAt.Unix(), 10),
		Resource:    q.resource,
		TokenType:   "Bearer",
		ClientID:    id.ClientID,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	if h.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		h.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "token served", podAttr, slog.String("pod_uid", string(pod.UID)),
			slog.String("identity", id.ClientID), slog.String("resource", q.resource), slog.Bool("cached", hit))
	}
}

// tokenError maps a token failure to an IMDS error.
func tokenError(err error) *httpError {
	var te *token.Error
	if !errors.As(err, &te) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return &httpError{status: http.StatusGatewayTimeout, code: "timeout", description: "token request timed out", outcome: outcomeUpstream}
		}
		return &httpError{status: http.StatusInternalServerError, code: "internal_error", description: "could not obtain a token", outcome: outcomeUpstream}
	}
	switch te.Reason {
	case token.ReasonMissingFederatedCredential:
		return &httpError{status: http.StatusNotFound, code: "invalid_request", description: te.Msg, outcome: outcomeMissingFIC}
	case token.ReasonThrottled:
		ra := int(te.RetryAfter / time.Second)
		if ra <= 0 {
			ra = 5
		}
		return &httpError{status: http.StatusTooManyRequests, code: "throttled", description: te.Msg, retryAfter: ra, outcome: outcomeThrottled}
	case token.ReasonPodGone:
		return &httpError{status: http.StatusNotFound, code: "invalid_request", description: te.Msg, outcome: outcomeStaleCaller}
	case token.ReasonProviderRejected, token.ReasonSecretInvalid:
		return &httpError{status: http.StatusNotFound, code: "invalid_request", description: te.Msg, outcome: outcomeNotAllowed}
	case token.ReasonKubernetes:
		return &httpError{status: http.StatusServiceUnavailable, code: "service_unavailable", description: te.Msg, outcome: outcomeKubernetesError}
	case token.ReasonBrokerRefused:
		return &httpError{status: http.StatusNotFound, code: "invalid_request", description: te.Msg, outcome: outcomeNotAllowed}
	case token.ReasonBrokerUnavailable:
		return &httpError{status: http.StatusServiceUnavailable, code: "service_unavailable", description: te.Msg, outcome: outcomeBrokerUnavailable}
	}
	return &httpError{status: http.StatusBadGateway, code: "upstream_error", description: te.Msg, outcome: outcomeUpstream}
}

func writeError(w http.ResponseWriter, e *httpError) {
	body, _ := json.Marshal(errorResponse{Error: e.code, Description: e.description})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}
