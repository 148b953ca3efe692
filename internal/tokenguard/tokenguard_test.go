package tokenguard

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// podMap is a Pods answering from a map ("ns/name"), or err for every call.
type podMap struct {
	pods map[string]*corev1.Pod
	err  error
}

func (m podMap) Pod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if m.err != nil {
		return nil, m.err
	}
	if p, ok := m.pods[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func TestTokenGuardReview(t *testing.T) {
	pod := func(name, uid, node, sa string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, UID: types.UID(uid)},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa}}
	}
	pods := podMap{pods: map[string]*corev1.Pod{
		"app/here":    pod("here", "u-here", "node-a", "web"),
		"app/there":   pod("there", "u-there", "node-b", "web"),
		"app/pending": pod("pending", "u-pending", "", "web"),
		"app/legacy":  {ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "legacy", UID: "u-legacy"}, Spec: corev1.PodSpec{NodeName: "node-a"}},
	}}
	ref := func(name, uid string) *authenticationv1.BoundObjectReference {
		return &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: name, UID: types.UID(uid)}
	}
	onNode := map[string]authenticationv1.ExtraValue{NodeNameExtra: {"node-a"}}
	tests := []struct {
		name    string
		sa      string
		ref     *authenticationv1.BoundObjectReference
		extra   map[string]authenticationv1.ExtraValue
		pods    Pods
		mod     func(*admissionv1.AdmissionRequest)
		allowed bool
		code    int32
		want    string
	}{
		{name: "pod on the agent's node", sa: "web", ref: ref("here", "u-here"), extra: onNode, allowed: true},
		{name: "default service account", sa: "default", ref: ref("legacy", "u-legacy"), extra: onNode, allowed: true},
		{name: "pod on another node", sa: "web", ref: ref("there", "u-there"), extra: onNode, code: 403, want: "runs on node node-b; agent on node node-a may only request tokens for pods on its own node"},
		{name: "unscheduled pod", sa: "web", ref: ref("pending", "u-pending"), extra: onNode, code: 403, want: "is not scheduled"},
		{name: "replaced pod", sa: "web", ref: ref("here", "u-old"), extra: onNode, code: 409, want: "is u-here, not u-old"},
		{name: "missing pod", sa: "web", ref: ref("gone", "u-gone"), extra: onNode, code: 404, want: "does not exist"},
		{name: "other service account", sa: "db", ref: ref("here", "u-here"), extra: onNode, code: 403, want: `runs as service account "web", not "db"`},
		{name: "credential not bound to a node", sa: "web", ref: ref("here", "u-here"), code: 403, want: "bound to its own pod on a node"},
		{name: "two node names", sa: "web", ref: ref("here", "u-here"), extra: map[string]authenticationv1.ExtraValue{NodeNameExtra: {"node-a", "node-b"}}, code: 403, want: "bound to its own pod on a node"},
		{name: "empty node name", sa: "web", ref: ref("here", "u-here"), extra: map[string]authenticationv1.ExtraValue{NodeNameExtra: {""}}, code: 403, want: "bound to its own pod on a node"},
		{name: "unbound", sa: "web", extra: onNode, code: 403, want: "bound to a pod by name and UID"},
		{name: "bound without UID", sa: "web", ref: ref("here", ""), extra: onNode, code: 403, want: "bound to a pod by name and UID"},
		{name: "bound to a secret", sa: "web", ref: &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: "s", UID: "u"}, extra: onNode, code: 403, want: "bound to a pod by name and UID"},
		{name: "bound to a pod of another API version", sa: "web", ref: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v2", Name: "here", UID: "u-here"}, extra: onNode, code: 403, want: "bound to a pod by name and UID"},
		{name: "API server unavailable", sa: "web", ref: ref("here", "u-here"), extra: onNode, pods: podMap{err: errors.New("connection refused")}, code: 503, want: "could not read pod app/here"},
		{name: "not a token request", sa: "web", ref: ref("here", "u-here"), extra: onNode, code: 400, want: "only CREATE of serviceaccounts/token",
			mod: func(r *admissionv1.AdmissionRequest) { r.SubResource = "" }},
		{name: "not a create", sa: "web", ref: ref("here", "u-here"), extra: onNode, code: 400, want: "only CREATE of serviceaccounts/token",
			mod: func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }},
		{name: "undecodable object", sa: "web", ref: ref("here", "u-here"), extra: onNode, code: 400, want: "decode TokenRequest",
			mod: func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`{"spec":{"boundObjectRef":"x"}}`) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := json.Marshal(&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"api://AzureADTokenExchange"}, BoundObjectRef: tt.ref}})
			if err != nil {
				t.Fatal(err)
			}
			req := &admissionv1.AdmissionRequest{
				UID: "req-1", Kind: tokenRequestKind, Resource: saResource, SubResource: "token",
				Namespace: "app", Name: tt.sa, Operation: admissionv1.Create,
				UserInfo: authenticationv1.UserInfo{Username: "agent", Extra: tt.extra},
				Object:   runtime.RawExtension{Raw: raw},
			}
			if tt.mod != nil {
				tt.mod(req)
			}
			p := tt.pods
			if p == nil {
				p = pods
			}
			resp, outcome := New(Config{Pods: p}).Review(t.Context(), req)
			if resp.UID != req.UID {
				t.Errorf("response UID %q, want %q", resp.UID, req.UID)
			}
			if resp.Allowed != tt.allowed {
				t.Fatalf("allowed = %v (%+v), want %v", resp.Allowed, resp.Result, tt.allowed)
			}
			if tt.allowed {
				if outcome != OutcomeAllowed || resp.Result != nil || resp.Patch != nil {
					t.Errorf("allowed response: outcome %s, result %+v, patch %q", outcome, resp.Result, resp.Patch)
				}
				return
			}
			if outcome != OutcomeDenied {
				t.Errorf("outcome = %s, want %s", outcome, OutcomeDenied)
			}
			if resp.Result == nil || resp.Result.Code != tt.code || !strings.HasPrefix(resp.Result.Message, "podid token guard: ") || !strings.Contains(resp.Result.Message, tt.want) {
				t.Fatalf("result = %+v, want code %d and message containing %q", resp.Result, tt.code, tt.want)
			}
		})
	}
}

// The guard shares the webhook's HTTP envelope: bounded, strictly decoded,
// JSON only.
func TestTokenGuardServeHTTPRejectsBadRequests(t *testing.T) {
	g := New(Config{Pods: podMap{}})
	for _, tt := range []struct {
		name, method, ctype, body string
		want                      int
	}{
		{"GET", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"YAML", http.MethodPost, "application/yaml", "{}", http.StatusUnsupportedMediaType},
		{"unknown field", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1"},"bogus":1}`, http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(tt.method, Path, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", tt.ctype)
			g.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("status %d (%s), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), tt.want)
			}
		})
	}
}
