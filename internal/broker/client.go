package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/token"
)

// ClientConfig configures the agent's side of the broker.
type ClientConfig struct {
	// URL is the broker's base URL (https://podid-broker.<ns>.svc:8443). Required.
	URL string
	// HTTPClient trusts the broker's CA. Required.
	HTTPClient *http.Client
	// Tokens mints the calling pod's token for Audience (the agent's
	// TokenRequest, bound to the pod). Required.
	Tokens token.TokenRequester
	// AgentTokenFile is the agent's own projected token for AgentAudience
	// (kubelet-rotated; re-read for every request), sent in AgentHeader.
	// Required.
	AgentTokenFile string
	// PodTokenLifetime is asked for each pod token (default 10m, the API
	// server's minimum); one is reused for 2/3 of it.
	PodTokenLifetime time.Duration
	Now              func() time.Time
}

// Client is a token.Source that obtains tokens from the broker for the
// requesting pod. It remembers each pod's broker token for 2/3 of its
// lifetime, so the broker validates it about once per lifetime.
type Client struct {
	cfg ClientConfig

	mu   sync.Mutex // protects pods
	pods map[types.UID]podToken
}

type podToken struct {
	tok   string
	until time.Time
}

// maxPodTokens bounds the remembered pod tokens.
const maxPodTokens = 20000

// maxResponse bounds the broker's answer.
const maxResponse = 64 << 10

// NewClient assembles a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("broker URL %q must be https://", cfg.URL)
	}
	if cfg.HTTPClient == nil || cfg.Tokens == nil {
		return nil, errors.New("broker client needs an HTTP client and a token requester")
	}
	if cfg.AgentTokenFile == "" {
		return nil, errors.New("broker client needs the agent's own token file (audience " + AgentAudience + ")")
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.PodTokenLifetime < 10*time.Minute {
		cfg.PodTokenLifetime = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg, pods: map[types.UID]podToken{}}, nil
}

// ForgetPod drops the pod's token (call when the pod is gone).
func (c *Client) ForgetPod(uid types.UID) {
	c.mu.Lock()
	delete(c.pods, uid)
	c.mu.Unlock()
}

// Token implements token.Source.
func (c *Client) Token(ctx context.Context, r token.Request) (token.Token, error) {
	t, err := c.try(ctx, r, false)
	var te *token.Error
	if errors.As(err, &te) && te.Reason == reasonStalePodToken {
		// The broker refused a remembered pod token (pod replaced, token
		// revoked): mint a fresh one once.
		t, err = c.try(ctx, r, true)
	}
	if errors.As(err, &te) && te.Reason == reasonStalePodToken {
		te.Reason = token.ReasonBrokerRefused
	}
	return t, err
}

const reasonStalePodToken = "stale pod token"

func (c *Client) try(ctx context.Context, r token.Request, fresh bool) (token.Token, error) {
	pt, remembered, err := c.podToken(ctx, r.Pod, fresh)
	if err != nil {
		return token.Token{}, err
	}
	at, err := readAgentToken(c.cfg.AgentTokenFile)
	if err != nil {
		return token.Token{}, &token.Error{Reason: token.ReasonBrokerUnavailable, Msg: "the agent cannot read its own token for the podid broker", Err: err}
	}
	body, _ := json.Marshal(TokenRequest{ClientID: r.Identity.ClientID, Resource: r.Resource})
	res, err := c.post(ctx, pt, at, body)
	if err != nil {
		return token.Token{}, &token.Error{Reason: token.ReasonBrokerUnavailable, Msg: fmt.Sprintf("podid broker %s is unreachable; retry later", c.cfg.URL), Err: err}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxResponse+1))
	if err != nil || len(raw) > maxResponse {
		return token.Token{}, &token.Error{Reason: token.ReasonBrokerUnavailable, Msg: fmt.Sprintf("podid broker %s: unreadable answer", c.cfg.URL), Err: err}
	}
	if res.StatusCode != http.StatusOK {
		return token.Token{}, c.failure(res, raw, r, remembered)
	}
	var tr TokenResponse
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil || tr.AccessToken == "" || !strings.EqualFold(tr.ClientID, r.Identity.ClientID) || tr.Resource != r.Resource {
		return token.Token{}, &token.Error{Reason: token.ReasonBrokerUnavailable, Msg: fmt.Sprintf("podid broker %s answered with something that is not a token for identity %s and resource %s", c.cfg.URL, r.Identity.ClientID, r.Resource), Err: err}
	}
	return token.Token{AccessToken: tr.AccessToken, ExpiresOn: time.Unix(tr.ExpiresOn, 0), ClientID: r.Identity.ClientID}, nil
}

// retryDelays are the waits before each further attempt when the broker
// cannot be reached: a replica that went away (its Service endpoint not yet
// withdrawn, a connection reset mid-request) is replaced by another replica
// on a new connection. A token request is idempotent.
var retryDelays = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond, time.Second}

// post sends one token request, on a new connection again when the
// previous attempt failed below HTTP.
func (c *Client) post(ctx context.Context, podToken, agentToken string, body []byte) (*http.Response, error) {
	var err error
	for attempt := 0; ; attempt++ {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL+Path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+podToken)
		req.Header.Set(AgentHeader, agentToken)
		// Lets net/http itself retry on a kept-alive connection the server
		// closed (not sent: a nil value).
		req.Header["Idempotency-Key"] = nil
		var res *http.Response
		if res, err = c.cfg.HTTPClient.Do(req); err == nil {
			return res, nil
		}
		if attempt == len(retryDelays) || ctx.Err() != nil {
			return nil, err
		}
		tm := time.NewTimer(retryDelays[attempt])
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil, err
		case <-tm.C:
		}
	}
}

// readAgentToken reads the agent's projected token (bounded; the kubelet
// rotates the file, so it is read for every request: a tmpfs read).
func readAgentToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if err := compactJWT("agent token file "+path, tok); err != nil {
		return "", err
	}
	return tok, nil
}

// failure maps a broker refusal to a token error.
func (c *Client) failure(res *http.Response, raw []byte, r token.Request, remembered bool) error {
	var er ErrorResponse
	_ = json.Unmarshal(raw, &er)
	desc := er.Description
	if len(desc) > 1024 {
		desc = desc[:1024] + "…"
	}
	if desc == "" {
		desc = "HTTP " + strconv.Itoa(res.StatusCode)
	}
	msg := fmt.Sprintf("podid broker %s: %s", c.cfg.URL, desc)
	switch {
	case er.Code == CodeInvalidToken && remembered:
		c.ForgetPod(r.Pod.UID)
		return &token.Error{Reason: reasonStalePodToken, Msg: msg}
	case er.Code == CodeInvalidToken, er.Code == CodeAccessDenied, res.StatusCode == http.StatusBadRequest:
		return &token.Error{Reason: token.ReasonBrokerRefused, Msg: msg}
	case er.Code == CodeNoCredential:
		return &token.Error{Reason: token.ReasonMissingFederatedCredential, Msg: msg}
	case res.StatusCode == http.StatusTooManyRequests:
		ra, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		return &token.Error{Reason: token.ReasonThrottled, Msg: msg, RetryAfter: time.Duration(ra) * time.Second}
	case er.Code == CodeUpstream:
		return &token.Error{Reason: token.ReasonProviderUnavailable, Msg: msg}
	}
	return &token.Error{Reason: token.ReasonBrokerUnavailable, Msg: msg}
}

// podToken returns the pod's broker token: remembered, or minted now.
func (c *Client) podToken(ctx context.Context, p token.Pod, fresh bool) (string, bool, error) {
	now := c.cfg.Now()
	if !fresh {
		c.mu.Lock()
		pt, ok := c.pods[p.UID]
		c.mu.Unlock()
		if ok && now.Before(pt.until) {
			return pt.tok, true, nil
		}
	}
	tok, err := c.cfg.Tokens.RequestToken(ctx, p, Audience, int64(c.cfg.PodTokenLifetime/time.Second))
	if err != nil {
		return "", false, err
	}
	c.mu.Lock()
	if len(c.pods) >= maxPodTokens {
		for uid, pt := range c.pods {
			if !now.Before(pt.until) {
				delete(c.pods, uid)
			}
		}
		if len(c.pods) >= maxPodTokens {
			clear(c.pods)
		}
	}
	c.pods[p.UID] = podToken{tok: tok, until: now.Add(c.cfg.PodTokenLifetime * 2 / 3)}
	c.mu.Unlock()
	return tok, false, nil
}
