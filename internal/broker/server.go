package broker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podid/podid/internal/token"
)

// Decider says which identities a pod may use (the agent's decision: v1
// bindings and the v2 service-account annotation). A refusal is an error
// with a message for the pod's owner; one whose Temporary() is true is a
// failed read, not a decision.
type Decider interface {
	Identities(ctx context.Context, pod *corev1.Pod) ([]token.Identity, error)
}

// Tokens is the token cache in front of the identity provider.
type Tokens interface {
	Get(ctx context.Context, r token.Request) (token.Token, bool, error)
}

// HandlerConfig assembles a Handler.
type HandlerConfig struct {
	// Reviewer validates pod tokens (Audience).
	Reviewer *Reviewer
	// Agents validates the presenting agent's own token (AgentAudience,
	// in AgentHeader), which must be AgentUser's: the pod of the pod
	// token must run on that agent's node.
	Agents    *Reviewer
	AgentUser string
	Decider   Decider
	Access    *Access
	Tokens    Tokens
	// Self is the broker's own pod: its service account is the subject of
	// every identity's one federated credential.
	Self token.Pod
	// SecretIdentities: serve AzureIdentity types 1 and 2 (client secret,
	// certificate), whose Secrets the broker then reads instead of every
	// node's agent.
	SecretIdentities bool
	Metrics          *Metrics
	Logger           *slog.Logger
}

// Handler serves POST Path.
type Handler struct{ cfg HandlerConfig }

// NewHandler assembles a Handler.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = newMetrics()
	}
	return &Handler{cfg: cfg}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code, attrs := h.serve(w, r)
	h.cfg.Metrics.requests.WithLabelValues(code).Inc()
	if code != "ok" {
		h.cfg.Logger.LogAttrs(r.Context(), slog.LevelInfo, "broker request refused", append(attrs, slog.String("code", code), slog.String("remote", r.RemoteAddr))...)
	}
}

// serve answers one request and returns its outcome code for metrics and logs.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (string, []slog.Attr) {
	fail := func(code, msg string, attrs ...slog.Attr) (string, []slog.Attr) {
		writeError(w, code, msg, 0, 0)
		return code, append(attrs, slog.String("reason", msg))
	}
	if r.URL.Path != Path || r.URL.RawQuery != "" {
		writeError(w, "not_found", "the broker answers only POST "+Path, http.StatusNotFound, 0)
		return "not_found", nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, CodeInvalidRequest, "only POST is supported", http.StatusMethodNotAllowed, 0)
		return CodeInvalidRequest, nil
	}
	tok, err := bearer(r.Header)
	if err != nil {
		return fail(CodeInvalidToken, err.Error())
	}
	atok, err := agentToken(r.Header)
	if err != nil {
		return fail(CodeInvalidToken, err.Error())
	}
	req, err := parseTokenRequest(r)
	if err != nil {
		return fail(CodeInvalidRequest, err.Error())
	}
	ctx := r.Context()
	// The agent first: a pod token is considered only from an agent.
	a, err := h.cfg.Agents.Review(ctx, atok)
	if err != nil {
		return fail(refusalCode(err), err.Error())
	}
	if a.User.Username != h.cfg.AgentUser {
		return fail(CodeAccessDenied, "the agent token is "+a.User.Username+"'s, not the podid agent's ("+h.cfg.AgentUser+")")
	}
	c, err := h.cfg.Reviewer.Review(ctx, tok)
	if err != nil {
		return fail(refusalCode(err), err.Error())
	}
	pod := c.Pod
	podAttr := slog.String("pod", pod.Namespace+"/"+pod.Name)
	if agentNode := a.Pod.Spec.NodeName; agentNode == "" || pod.Spec.NodeName != agentNode {
		// An agent serves the pods of its node only (the token guard keeps
		// it from minting others'); a pod token of another node's pod in
		// its hands was leaked.
		return fail(CodeAccessDenied, "pod "+pod.Namespace+"/"+pod.Name+" runs on node "+pod.Spec.NodeName+", but the agent presenting its token ("+a.Pod.Name+") runs on node "+agentNode+": an agent may present only tokens of pods on its own node", podAttr)
	}
	idAttr := slog.String("identity", req.ClientID)
	ids, err := h.cfg.Decider.Identities(ctx, pod)
	if err != nil {
		var t interface{ Temporary() bool }
		if errors.As(err, &t) && t.Temporary() {
			return fail(CodeUnavailable, err.Error(), podAttr, idAttr)
		}
		return fail(CodeAccessDenied, err.Error(), podAttr, idAttr)
	}
	var id token.Identity
	found := false
	var assigned []string
	for _, x := range ids {
		assigned = append(assigned, x.ClientID)
		if strings.EqualFold(x.ClientID, req.ClientID) {
			id, found = x, true
		}
	}
	if !found {
		return fail(CodeAccessDenied, "identity "+req.ClientID+" is not assigned to pod "+pod.Namespace+"/"+pod.Name+" (assigned: "+strings.Join(assigned, ", ")+")", podAttr, idAttr)
	}
	switch {
	case id.Kind != token.Federated && !h.cfg.SecretIdentities:
		return fail(CodeAccessDenied, "identity "+id.ClientID+" ("+id.Origin+") is type "+id.Kind.String()+": this broker does not serve secret or certificate identities (chart: broker.secretIdentities)", podAttr, idAttr)
	case id.Kind != token.Federated:
		// Types 1/2: the credential is the identity's own Secret, in the
		// namespace of the AzureIdentity that names it (the decider refuses
		// any other): the binding is the rule, as on the agent.
		return h.answer(w, r, id, req, podAttr, idAttr)
	}
	ok, why, err := h.cfg.Access.Allowed(ctx, pod.Namespace, c.User, id.ClientID)
	if err != nil {
		return fail(CodeUnavailable, "SubjectAccessReview failed: "+err.Error(), podAttr, idAttr)
	}
	if !ok {
		msg := "service account " + c.User.Username + " may not use identity " + id.ClientID + " through the broker: grant verb " + AccessVerb + " on resource " + strings.ToLower(id.ClientID) + " in API group " + AccessGroup + " (ClusterRole + RoleBinding or ClusterRoleBinding)"
		if why != "" {
			msg += "; authorizer: " + why
		}
		return fail(CodeAccessDenied, msg, podAttr, idAttr)
	}
	return h.answer(w, r, id, req, podAttr, idAttr)
}

// answer obtains the identity's token (the broker's own exchange, or the
// identity's Secret) and writes it.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, id token.Identity, req TokenRequest, podAttr, idAttr slog.Attr) (string, []slog.Attr) {
	ctx := r.Context()
	id.Broker = false // the broker obtains it itself
	t, hit, err := h.cfg.Tokens.Get(ctx, token.Request{Identity: id, Resource: req.Resource, Pod: h.cfg.Self})
	if err != nil {
		code, retry := tokenCode(err)
		writeError(w, code, tokenMessage(err), 0, retry)
		return code, []slog.Attr{podAttr, idAttr, slog.String("reason", err.Error())}
	}
	body, _ := json.Marshal(TokenResponse{AccessToken: t.AccessToken, ExpiresOn: t.ExpiresOn.Unix(), ClientID: id.ClientID, Resource: req.Resource})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	if h.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		h.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "token brokered", podAttr, idAttr, slog.String("resource", req.Resource), slog.Bool("cached", hit))
	}
	return "ok", nil
}

func refusalCode(err error) string {
	var rf *refusal
	if errors.As(err, &rf) {
		return rf.code
	}
	return CodeInternal
}

// tokenCode maps a token failure of the broker's own exchange.
func tokenCode(err error) (string, time.Duration) {
	var te *token.Error
	if !errors.As(err, &te) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return CodeTimeout, 0
		}
		return CodeInternal, 0
	}
	switch te.Reason {
	case token.ReasonMissingFederatedCredential:
		return CodeNoCredential, 0
	case token.ReasonThrottled:
		return CodeThrottled, te.RetryAfter
	case token.ReasonKubernetes:
		return CodeUnavailable, 0
	case token.ReasonSecretInvalid, token.ReasonProviderRejected:
		// The identity's Secret is missing or malformed, or the provider
		// refused its credential: its owner's fix, not an outage.
		return CodeAccessDenied, 0
	}
	return CodeUpstream, 0
}

func tokenMessage(err error) string {
	var te *token.Error
	if errors.As(err, &te) {
		return te.Msg
	}
	return "could not obtain a token"
}

var codeStatus = map[string]int{
	CodeInvalidRequest: http.StatusBadRequest,
	CodeInvalidToken:   http.StatusUnauthorized,
	CodeAccessDenied:   http.StatusForbidden,
	CodeNoCredential:   http.StatusNotFound,
	CodeThrottled:      http.StatusTooManyRequests,
	CodeUpstream:       http.StatusBadGateway,
	CodeUnavailable:    http.StatusServiceUnavailable,
	CodeInternal:       http.StatusInternalServerError,
	CodeTimeout:        http.StatusGatewayTimeout,
}

// writeError writes ErrorResponse with the code's status (unless status is
// given) and a Retry-After when retry is set.
func writeError(w http.ResponseWriter, code, msg string, status int, retry time.Duration) {
	if status == 0 {
		status = codeStatus[code]
	}
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retry/time.Second)))
	}
	if status == 0 {
		status = http.StatusInternalServerError
	}
	body, _ := json.Marshal(ErrorResponse{Code: code, Description: msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
