package broker

import (
	"context"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Access asks the cluster's authorizer (a SubjectAccessReview) whether a
// service account may use an identity: verb AccessVerb on resource
// <client-id> in API group AccessGroup, the RBAC model of AKS identity
// bindings. The review is made in the pod's namespace, so a ClusterRoleBinding
// or a RoleBinding there grants it (binding a role needs the permission
// itself: RBAC's escalation check keeps namespace admins from granting an
// identity they do not hold). Answers are remembered for TTL per (user, client id), so
// revoking a grant takes effect within TTL.
type Access struct {
	Client kubernetes.Interface
	// TTL of a remembered answer (default 30s).
	TTL time.Duration
	Now func() time.Time

	mu   sync.Mutex // protects seen
	seen map[accessKey]accessAnswer
}

type accessKey struct{ namespace, user, clientID string }

type accessAnswer struct {
	allowed bool
	reason  string
	until   time.Time
}

// maxAccessEntries bounds the remembered answers.
const maxAccessEntries = 50000

// Allowed reports whether user may use clientID in namespace; an error means the
// authorizer could not be asked.
func (a *Access) Allowed(ctx context.Context, namespace string, user authenticationv1.UserInfo, clientID string) (bool, string, error) {
	clientID = strings.ToLower(clientID)
	now := a.now()
	k := accessKey{namespace, user.Username, clientID}
	a.mu.Lock()
	ans, ok := a.seen[k]
	a.mu.Unlock()
	if ok && now.Before(ans.until) {
		return ans.allowed, ans.reason, nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Group: AccessGroup, Resource: clientID, Verb: AccessVerb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	ans = accessAnswer{allowed: sar.Status.Allowed && !sar.Status.Denied, reason: truncate(sar.Status.Reason), until: now.Add(a.ttl())}
	a.mu.Lock()
	if a.seen == nil || len(a.seen) >= maxAccessEntries {
		a.seen = map[accessKey]accessAnswer{}
	}
	a.seen[k] = ans
	a.mu.Unlock()
	return ans.allowed, ans.reason, nil
}

func (a *Access) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Access) ttl() time.Duration {
	if a.TTL > 0 {
		return a.TTL
	}
	return 30 * time.Second
}
