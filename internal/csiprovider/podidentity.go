package csiprovider

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// AgentPodIdentities obtains usePodIdentity tokens from podid's node agent
// on its node-local pod-token socket (the agent's --pod-token-socket): the
// agent decides, by the pod's v1 binding and the same rules as for the pod's
// own IMDS requests, which identity the mounting pod has, and obtains its
// token with a service-account token bound to that pod.
type AgentPodIdentities struct {
	// Socket is the agent's pod-token socket.
	Socket string
	client *http.Client
}

var _ PodIdentities = (*AgentPodIdentities)(nil)

// Credential implements PodIdentities.
func (a *AgentPodIdentities) Credential(_ context.Context, m *Mount, _ Cloud) (azcore.TokenCredential, error) {
	if m.Pod.UID == "" {
		return nil, &IdentityError{Mode: m.Mode, Pod: m.Pod, Code: "NoPodUID", Denied: true,
			Msg: "the driver passed no pod UID: its CSIDriver object needs podInfoOnMount: true"}
	}
	if a.client == nil {
		sock := a.Socket
		a.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}}}
	}
	return &agentCredential{client: a.client, m: m}, nil
}

type agentCredential struct {
	client *http.Client
	m      *Mount
}

// GetToken asks the agent for the pod's token for the scope's resource.
func (c *agentCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 {
		return azcore.AccessToken{}, fmt.Errorf("want one scope, got %d", len(o.Scopes))
	}
	q := url.Values{"namespace": {c.m.Pod.Namespace}, "name": {c.m.Pod.Name}, "uid": {c.m.Pod.UID},
		"resource": {strings.TrimSuffix(o.Scopes[0], "/.default")}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://podid-agent/pod-token?"+q.Encode(), nil)
	if err != nil {
		return azcore.AccessToken{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return azcore.AccessToken{}, &IdentityError{Mode: c.m.Mode, Pod: c.m.Pod, Code: "AgentUnavailable", Msg: "podid's node agent did not answer on its pod-token socket", Err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code string `json:"error"`
			Desc string `json:"error_description"`
		}
		_ = json.Unmarshal(b, &e)
		return azcore.AccessToken{}, &IdentityError{Mode: c.m.Mode, Pod: c.m.Pod, Code: e.Code, Msg: bounded(e.Desc, 300), Denied: resp.StatusCode < 500}
	}
	var t struct {
		AccessToken string `json:"access_token"`
		ExpiresOn   int64  `json:"expires_on"`
		ClientID    string `json:"client_id"`
	}
	if err := json.Unmarshal(b, &t); err != nil || t.AccessToken == "" {
		return azcore.AccessToken{}, &IdentityError{Mode: c.m.Mode, Pod: c.m.Pod, Code: "AgentAnswer", Msg: "the agent's answer has no token"}
	}
	return azcore.AccessToken{Token: t.AccessToken, ExpiresOn: time.Unix(t.ExpiresOn, 0)}, nil
}
