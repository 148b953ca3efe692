package token

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podid/podid/internal/workloadidentity"
)

// How the agent reads the API server's answers to its TokenRequests: a
// gone or replaced pod is ReasonPodGone (the caller gets a 404), anything
// else a Kubernetes failure whose description says why.
func TestKubeTokenRequesterErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "serviceaccounts"}
	for _, tt := range []struct {
		name       string
		err        error
		wantReason string
		wantMsg    string
	}{
		{"pod gone", apierrors.NewNotFound(gr, "p"), ReasonPodGone, "no longer exists as the agent saw it"},
		{"pod replaced", apierrors.NewConflict(gr, "p", errors.New("uid differs")), ReasonPodGone, "no longer exists as the agent saw it"},
		{"token guard unreachable", apierrors.NewInternalError(errors.New(`failed calling webhook "agent-token-requests.podid.dev": connection refused`)), ReasonKubernetes, `failed calling webhook "agent-token-requests.podid.dev"`},
		{"denied", apierrors.NewForbidden(gr, "app", errors.New("podid token guard: pod ns/p runs on node b")), ReasonKubernetes, "runs on node b"},
		{"long message", apierrors.NewInternalError(errors.New(strings.Repeat("x", 2000))), ReasonKubernetes, "…"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset()
			cs.PrependReactor("create", "serviceaccounts", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.err })
			_, err := KubeTokenRequester{Client: cs}.RequestToken(context.Background(), Pod{Namespace: "ns", Name: "p", UID: "u", ServiceAccount: "app"}, workloadidentity.TokenAudience, 600)
			var te *Error
			if !errors.As(err, &te) || te.Reason != tt.wantReason || !strings.Contains(te.Msg, tt.wantMsg) {
				t.Fatalf("error %v, want reason %s and a message containing %q", err, tt.wantReason, tt.wantMsg)
			}
			if len(te.Msg) > 700 {
				t.Errorf("message of %d bytes: not bounded", len(te.Msg))
			}
		})
	}
}
