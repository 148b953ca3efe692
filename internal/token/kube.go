package token

import (
	"context"
	"errors"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// KubeTokenRequester mints pod-bound tokens with the TokenRequest API.
type KubeTokenRequester struct {
	Client kubernetes.Interface
}

// RequestToken implements TokenRequester. The token is bound to the pod's
// name and UID: the API server refuses it when that pod no longer exists or
// was replaced by another with the same name, and the token dies with the pod.
func (k KubeTokenRequester) RequestToken(ctx context.Context, p Pod, audience string, expirationSeconds int64) (string, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: &expirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}
	out, err := k.Client.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, p.ServiceAccount, tr, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return "", &Error{Reason: ReasonPodGone, Msg: fmt.Sprintf("pod %s/%s (uid %s) no longer exists as the agent saw it; token refused", p.Namespace, p.Name, p.UID), Err: err}
		}
		// The API server's message says why (an admission denial, the
		// token guard unreachable, throttling); it never holds a token.
		return "", &Error{Reason: ReasonKubernetes, Msg: fmt.Sprintf("TokenRequest for service account %s/%s bound to pod %s failed: %s", p.Namespace, p.ServiceAccount, p.Name, apiMessage(err)), Err: err}
	}
	return out.Status.Token, nil
}

// KubeSecretReader reads Secrets directly from the API server, only when asked.
type KubeSecretReader struct {
	Client kubernetes.Interface
}

// ReadSecret implements SecretReader.
func (k KubeSecretReader) ReadSecret(ctx context.Context, ref types.NamespacedName) (map[string][]byte, error) {
	s, err := k.Client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get Secret %s: %w", ref, err)
	}
	return s.Data, nil
}

// apiMessage is the API server's message of err, bounded.
func apiMessage(err error) string {
	msg := err.Error()
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		msg = st.Status().Message
	}
	const limit = 512
	if len(msg) > limit {
		msg = msg[:limit] + "…"
	}
	return msg
}
