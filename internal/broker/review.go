package broker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podid/podid/internal/workloadidentity"
)

// User-info extras the API server sets for a pod-bound service-account token.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// caller is a validated pod token: who presented it and the pod it is bound to.
type caller struct {
	User authenticationv1.UserInfo
	Pod  *corev1.Pod
	// Until is when the validation must be redone (token expiry, capped).
	Until time.Time
}

// refusal is a typed refusal of the caller (mapped to HTTP at the edge).
type refusal struct {
	code string
	msg  string
}

func (r *refusal) Error() string { return r.msg }

func refuse(code, format string, args ...any) *refusal {
	return &refusal{code: code, msg: fmt.Sprintf(format, args...)}
}

// Reviewer validates pod tokens with a TokenReview and a live read of the
// bound pod, and remembers each valid token's result until it expires or
// TTL passes, so a pod costs ~one TokenReview per token lifetime.
type Reviewer struct {
	Client kubernetes.Interface
	// Audience the tokens must be for (default Audience, the pod tokens;
	// AgentAudience for the agents' own).
	Audience string
	// TTL caps how long a validation is remembered (default 5m): a pod
	// deleted meanwhile is seen at the latest then (the agent stops asking
	// for it at once).
	TTL time.Duration
	// MaxEntries bounds the remembered validations (default 50000).
	MaxEntries int
	Now        func() time.Time
	// OnReview is told "cached", "reviewed" or "refused" per validation. Optional.
	OnReview func(result string)

	mu   sync.Mutex // protects seen
	seen map[[32]byte]caller
	sf   singleflight.Group
}

var podTokenAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512}

// Review returns the caller of a pod token, or a *refusal.
func (rv *Reviewer) Review(ctx context.Context, tok string) (caller, error) {
	now := rv.now()
	key := sha256.Sum256([]byte(tok))
	rv.mu.Lock()
	c, ok := rv.seen[key]
	rv.mu.Unlock()
	if ok && now.Before(c.Until) {
		rv.observe("cached")
		return c, nil
	}
	v, err, _ := rv.sf.Do(string(key[:]), func() (any, error) {
		// Shared by every concurrent caller of this token: not cut short
		// by the first one leaving.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		c, err := rv.review(rctx, tok)
		if err == nil {
			rv.remember(key, c)
			rv.observe("reviewed")
		} else {
			rv.observe("refused")
		}
		return c, err
	})
	if err != nil {
		return caller{}, err
	}
	return v.(caller), nil
}

func (rv *Reviewer) observe(result string) {
	if rv.OnReview != nil {
		rv.OnReview(result)
	}
}

func (rv *Reviewer) now() time.Time {
	if rv.Now != nil {
		return rv.Now()
	}
	return time.Now()
}

func (rv *Reviewer) remember(key [32]byte, c caller) {
	max := rv.MaxEntries
	if max <= 0 {
		max = 50000
	}
	now := rv.now()
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.seen == nil {
		rv.seen = map[[32]byte]caller{}
	}
	if len(rv.seen) >= max {
		for k, v := range rv.seen {
			if !now.Before(v.Until) {
				delete(rv.seen, k)
			}
		}
		if len(rv.seen) >= max {
			clear(rv.seen) // all live: start over rather than grow
		}
	}
	rv.seen[key] = c
}

// Forget drops every remembered validation.
func (rv *Reviewer) Forget() {
	rv.mu.Lock()
	clear(rv.seen)
	rv.mu.Unlock()
}

func (rv *Reviewer) review(ctx context.Context, tok string) (caller, error) {
	tr, err := rv.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{rv.audience()}},
	}, metav1.CreateOptions{})
	if err != nil {
		return caller{}, refuse(CodeUnavailable, "TokenReview failed: %v", err)
	}
	st := tr.Status
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "not authenticated"
		}
		return caller{}, refuse(CodeInvalidToken, "%s rejected by the API server for audience %s: %s", rv.what(), rv.audience(), truncate(why))
	}
	if !hasAudience(st.Audiences, rv.audience()) {
		return caller{}, refuse(CodeInvalidToken, "%s is not for audience %s", rv.what(), rv.audience())
	}
	ns, sa, ok := splitServiceAccount(st.User.Username)
	if !ok {
		return caller{}, refuse(CodeInvalidToken, "token of %q is not a service-account token", truncate(st.User.Username))
	}
	podName, podUID := one(st.User.Extra[extraPodName]), one(st.User.Extra[extraPodUID])
	if podName == "" || podUID == "" {
		return caller{}, refuse(CodeInvalidToken, "token of %s/%s is not bound to a pod: the broker accepts only pod-bound tokens", ns, sa)
	}
	pod, err := rv.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return caller{}, refuse(CodeInvalidToken, "pod %s/%s the token is bound to no longer exists", ns, podName)
	case err != nil:
		return caller{}, refuse(CodeUnavailable, "cannot read pod %s/%s: %v", ns, podName, err)
	}
	switch {
	case string(pod.UID) != podUID:
		return caller{}, refuse(CodeInvalidToken, "pod %s/%s is %s, not the pod %s the token is bound to (deleted and replaced)", ns, podName, pod.UID, podUID)
	case pod.DeletionTimestamp != nil, pod.Status.Phase == corev1.PodSucceeded, pod.Status.Phase == corev1.PodFailed:
		return caller{}, refuse(CodeInvalidToken, "pod %s/%s is being deleted or has finished", ns, podName)
	case workloadidentity.ServiceAccountName(pod) != sa:
		return caller{}, refuse(CodeInvalidToken, "pod %s/%s runs as %s, not %s", ns, podName, workloadidentity.ServiceAccountName(pod), sa)
	}
	if node := one(st.User.Extra[extraNodeName]); node != "" && node != pod.Spec.NodeName {
		return caller{}, refuse(CodeInvalidToken, "pod %s/%s runs on node %s, not %s named in its token", ns, podName, pod.Spec.NodeName, node)
	}
	until := rv.now().Add(rv.ttl())
	if exp, err := expiry(tok); err == nil && exp.Before(until) {
		until = exp
	}
	return caller{User: st.User, Pod: pod, Until: until}, nil
}

func (rv *Reviewer) audience() string {
	if rv.Audience != "" {
		return rv.Audience
	}
	return Audience
}

// what names the reviewed tokens in refusals.
func (rv *Reviewer) what() string {
	if rv.audience() == AgentAudience {
		return "agent token"
	}
	return "pod token"
}

func (rv *Reviewer) ttl() time.Duration {
	if rv.TTL > 0 {
		return rv.TTL
	}
	return 5 * time.Minute
}

// expiry reads exp of a token the API server has just authenticated.
func expiry(tok string) (time.Time, error) {
	t, err := jwt.ParseSigned(tok, podTokenAlgs)
	if err != nil {
		return time.Time{}, err
	}
	var c jwt.Claims
	if err := t.UnsafeClaimsWithoutVerification(&c); err != nil {
		return time.Time{}, err
	}
	if c.Expiry == nil {
		return time.Time{}, errors.New("no exp")
	}
	return c.Expiry.Time(), nil
}

func splitServiceAccount(user string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	return ns, sa, ok && ns != "" && sa != ""
}

func one(v authenticationv1.ExtraValue) string {
	if len(v) != 1 {
		return ""
	}
	return v[0]
}

func hasAudience(auds []string, a string) bool {
	for _, x := range auds {
		if x == a {
			return true
		}
	}
	return false
}
