package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Kind says how an identity proves itself to the identity provider.
type Kind int

const (
	// Federated identities are obtained by exchanging a service-account token
	// bound to the requesting pod (AzureIdentity type 0, and workload identity).
	Federated Kind = iota
	// Secret identities use a client secret kept in a Kubernetes Secret (type 1).
	Secret
	// Certificate identities use a PEM certificate and key kept in a Kubernetes Secret (type 2).
	Certificate
)

func (k Kind) String() string {
	switch k {
	case Federated:
		return "federated"
	case Secret:
		return "secret"
	case Certificate:
		return "certificate"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Identity is one cloud identity as the agent decided a pod may use it.
type Identity struct {
	Kind     Kind
	ClientID string
	TenantID string
	// ResourceID is the ARM id of a user-assigned identity, when known.
	ResourceID string
	// Authority is the identity provider's base URL (scheme and host, e.g.
	// https://login.microsoftonline.com). Empty means the source's default.
	Authority string
	// SecretRef names the Secret holding the client secret or certificate
	// (Secret and Certificate kinds only).
	SecretRef types.NamespacedName
	// Origin names what granted the identity, for logs and errors:
	// "AzureIdentity ns/name" or "ServiceAccount ns/name".
	Origin string
	// Broker: the token comes from the podid broker (one federated
	// credential per identity, the broker's) instead of a per-pod exchange.
	Broker bool
}

// Pod is the pod a token is requested for.
type Pod struct {
	Namespace      string
	Name           string
	UID            types.UID
	ServiceAccount string
}

// Subject is the pod's service-account subject, as in its tokens' sub claim.
func (p Pod) Subject() string {
	return "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount
}

// Request asks for a token.
type Request struct {
	Identity Identity
	// Resource is the resource URI without a /.default suffix.
	Resource string
	Pod      Pod
}

// Scope is the v2 scope for the resource.
func (r Request) Scope() string {
	return r.Resource + "/.default"
}

// Key identifies a cached token. Federated tokens include the service-account
// subject whose assertion obtains them: a pod whose service account has no
// federated credential must get the provider's refusal, not a token another
// service account obtained for the same identity.
type Key struct {
	Kind      Kind
	Authority string
	TenantID  string
	ClientID  string
	SecretRef types.NamespacedName
	Subject   string
	Resource  string
	Broker    bool
}

// KeyOf returns the cache key of a request.
func KeyOf(r Request) Key {
	k := Key{Kind: r.Identity.Kind, Authority: r.Identity.Authority, TenantID: r.Identity.TenantID,
		ClientID: strings.ToLower(r.Identity.ClientID), Resource: r.Resource, Broker: r.Identity.Broker}
	switch r.Identity.Kind {
	case Federated:
		k.Subject = r.Pod.Subject()
	default:
		k.SecretRef = r.Identity.SecretRef
	}
	return k
}

// Token is an access token. Its value is never printed.
type Token struct {
	AccessToken string
	ExpiresOn   time.Time
	// IssuedAt is when the agent obtained the token (not_before in IMDS).
	IssuedAt time.Time
	ClientID string
}

// String redacts the token value.
func (t Token) String() string {
	return fmt.Sprintf("Token{client_id=%s expires_on=%s value=REDACTED}", t.ClientID, t.ExpiresOn.UTC().Format(time.RFC3339))
}

// LogValue redacts the token value in slog output.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("client_id", t.ClientID), slog.Time("expires_on", t.ExpiresOn))
}

// BrokerAudience is the audience of the pod tokens the agent mints for the
// podid broker. It is not the exchange audience (api://AzureADTokenExchange),
// so a pod token given to the broker cannot be replayed to the identity
// provider, and not an audience the Kubernetes API accepts. The agent's
// TokenRequest policy (chart: agent/token-policy.yaml) allows exactly these two.
const BrokerAudience = "podid.dev/broker"

// BrokerAgentAudience is the audience of the agent's own projected token
// (kubelet-rotated, bound to the agent's pod) that it sends the broker with
// every pod token: the broker learns which node's agent is asking and
// refuses a pod token of a pod on another node.
const BrokerAgentAudience = "podid.dev/broker-agent"

// Source obtains tokens from the identity provider.
type Source interface {
	Token(ctx context.Context, r Request) (Token, error)
}

// Routed sends requests for broker identities (Identity.Broker) to Broker
// and all others to Direct.
type Routed struct {
	Direct Source
	// Broker is nil when no broker is configured: broker identities then fail.
	Broker Source
}

// Token implements Source.
func (r Routed) Token(ctx context.Context, req Request) (Token, error) {
	if !req.Identity.Broker {
		return r.Direct.Token(ctx, req)
	}
	if r.Broker == nil {
		return Token{}, &Error{Reason: ReasonBrokerUnavailable, Msg: fmt.Sprintf("identity %s (%s) is served through the podid broker, but this agent has no broker configured (--broker-url)", req.Identity.ClientID, req.Identity.Origin)}
	}
	return r.Broker.Token(ctx, req)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, r Request) (Token, error)

// Token calls f.
func (f SourceFunc) Token(ctx context.Context, r Request) (Token, error) { return f(ctx, r) }

// Error reasons, stable for metrics and HTTP mapping.
const (
	ReasonMissingFederatedCredential = "MissingFederatedCredential" // AADSTS70021
	ReasonProviderRejected           = "ProviderRejected"           // other 4xx from the provider
	ReasonProviderUnavailable        = "ProviderUnavailable"        // network error, 5xx
	ReasonThrottled                  = "Throttled"                  // 429 from the provider
	ReasonPodGone                    = "PodGone"                    // TokenRequest refused: pod deleted or replaced
	ReasonKubernetes                 = "KubernetesError"            // TokenRequest or Secret read failed
	ReasonSecretInvalid              = "SecretInvalid"              // Secret missing or malformed
	ReasonCacheFull                  = "CacheFull"
	ReasonBrokerRefused              = "BrokerRefused"     // the podid broker refused the pod this identity
	ReasonBrokerUnavailable          = "BrokerUnavailable" // the podid broker cannot be reached or failed
)

// Error is a token failure with a reason and a message that names the fix.
// It never contains token or secret values.
type Error struct {
	Reason string
	// Msg is safe to return to the caller.
	Msg string
	// RetryAfter is set for throttling.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a token error, or "" if err is not one.
func ReasonOf(err error) string {
	var te *Error
	if errors.As(err, &te) {
		return te.Reason
	}
	return ""
}
