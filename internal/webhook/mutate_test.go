package webhook

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/workloadidentity"
)

func testSA(name string, anns map[string]string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Annotations: anns}}
}

// mutate runs the mutator on raw and returns the ops and the patched JSON.
func mutate(t *testing.T, m *Mutator, raw string, sa *corev1.ServiceAccount) ([]Operation, []byte, error) {
	t.Helper()
	pod, err := decodePod([]byte(raw)) // the handler's decoding
	if err != nil {
		t.Fatalf("decode pod: %v", err)
	}
	ops, err := m.Patch(pod, sa)
	if err != nil {
		return nil, nil, err
	}
	if len(ops) == 0 {
		return nil, []byte(raw), nil
	}
	p, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(p)
	if err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	out, err := patch.Apply([]byte(raw))
	if err != nil {
		t.Fatalf("apply patch %s: %v", p, err)
	}
	return ops, out, nil
}

func parsePod(t *testing.T, b []byte) *corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(b, &pod); err != nil {
		t.Fatalf("decode patched pod: %v", err)
	}
	return &pod
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		if _, ok := m[e.Name]; !ok {
			m[e.Name] = e.Value
		}
	}
	return m
}

func hasTokenMount(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == workloadidentity.TokenVolumeName && m.MountPath == workloadidentity.TokenDir && m.ReadOnly {
			return true
		}
	}
	return false
}

func tokenExp(t *testing.T, pod *corev1.Pod) int64 {
	t.Helper()
	for _, v := range pod.Spec.Volumes {
		if v.Name == workloadidentity.TokenVolumeName && v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					if s.ServiceAccountToken.Audience != workloadidentity.TokenAudience || s.ServiceAccountToken.Path != workloadidentity.TokenFileName {
						t.Fatalf("token projection = %+v", s.ServiceAccountToken)
					}
					return *s.ServiceAccountToken.ExpirationSeconds
				}
			}
		}
	}
	t.Fatalf("no token volume in %+v", pod.Spec.Volumes)
	return 0
}

const (
	saClient = "11111111-1111-1111-1111-111111111111"
	saTenant = "22222222-2222-2222-2222-222222222222"
)

func TestPatch(t *testing.T) {
	m := &Mutator{AuthorityHost: "https://sts.podid.local/", DefaultTenantID: "default-tenant"}
	sa := testSA("wi", map[string]string{workloadidentity.ClientIDAnnotation: saClient, workloadidentity.TenantIDAnnotation: saTenant})
	wantEnv := map[string]string{
		workloadidentity.EnvClientID: saClient, workloadidentity.EnvTenantID: saTenant,
		workloadidentity.EnvFederatedTokenFile: workloadidentity.TokenFile, workloadidentity.EnvAuthorityHost: "https://sts.podid.local/",
	}
	for _, tt := range []struct {
		name    string
		pod     string
		sa      *corev1.ServiceAccount
		wantErr string
		// wantOps, when set, is the exact patch.
		wantOps string
		check   func(t *testing.T, pod *corev1.Pod)
	}{{
		name: "bare pod gets env, mount, volume and record; nothing else",
		pod:  `{"metadata":{"name":"p","labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app","image":"x"}]}}`,
		wantOps: `[{"op":"add","path":"/spec/containers/0/env","value":[` +
			`{"name":"AZURE_CLIENT_ID","value":"` + saClient + `"},{"name":"AZURE_TENANT_ID","value":"` + saTenant + `"},` +
			`{"name":"AZURE_FEDERATED_TOKEN_FILE","value":"/var/run/secrets/azure/tokens/azure-identity-token"},` +
			`{"name":"AZURE_AUTHORITY_HOST","value":"https://sts.podid.local/"}]},` +
			`{"op":"add","path":"/spec/containers/0/volumeMounts","value":[{"name":"azure-identity-token","readOnly":true,"mountPath":"/var/run/secrets/azure/tokens"}]},` +
			`{"op":"add","path":"/spec/volumes","value":[{"name":"azure-identity-token","projected":{"sources":[{"serviceAccountToken":{"audience":"api://AzureADTokenExchange","expirationSeconds":3600,"path":"azure-identity-token"}}]}}]},` +
			`{"op":"add","path":"/metadata/annotations","value":{"podid.dev/injected":"{\"env\":{\"app\":[\"AZURE_AUTHORITY_HOST\",\"AZURE_CLIENT_ID\",\"AZURE_FEDERATED_TOKEN_FILE\",\"AZURE_TENANT_ID\"]},\"volume\":true}"}}]`,
	}, {
		name: "identity-binding pod gets client and tenant only: no token file, mount, volume or authority (IMDS)",
		pod:  `{"metadata":{"name":"p","labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/use-identity-binding":"true"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app","image":"x"}]}}`,
		wantOps: `[{"op":"add","path":"/spec/containers/0/env","value":[` +
			`{"name":"AZURE_CLIENT_ID","value":"` + saClient + `"},{"name":"AZURE_TENANT_ID","value":"` + saTenant + `"}]},` +
			`{"op":"add","path":"/metadata/annotations/podid.dev~1injected","value":"{\"env\":{\"app\":[\"AZURE_CLIENT_ID\",\"AZURE_TENANT_ID\"]}}"}]`,
	}, {
		name:    "identity-binding annotation must be true or false",
		pod:     `{"metadata":{"name":"p","labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/use-identity-binding":"yes"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app","image":"x"}]}}`,
		wantErr: "use-identity-binding",
	}, {
		name: "existing lists are appended to, not replaced",
		pod: `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"a":"b"}},"spec":{"serviceAccountName":"wi",` +
			`"volumes":[{"name":"data","emptyDir":{}}],"containers":[{"name":"app","env":[{"name":"X","value":"1"}],"volumeMounts":[{"name":"data","mountPath":"/data"}]}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			c := pod.Spec.Containers[0]
			if c.Env[0].Name != "X" || len(c.Env) != 5 || c.VolumeMounts[0].Name != "data" || !hasTokenMount(c) {
				t.Errorf("container = %+v", c)
			}
			if pod.Spec.Volumes[0].Name != "data" || len(pod.Spec.Volumes) != 2 || pod.Annotations["a"] != "b" {
				t.Errorf("pod = %+v", pod)
			}
		},
	}, {
		name: "init containers are injected; skip-containers honoured (trimmed, ;-separated)",
		pod: `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/skip-containers":" sidecar ; init-skip;"}},` +
			`"spec":{"serviceAccountName":"wi","initContainers":[{"name":"init"},{"name":"init-skip"}],"containers":[{"name":"app"},{"name":"sidecar"}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			for _, c := range []corev1.Container{pod.Spec.InitContainers[0], pod.Spec.Containers[0]} {
				if !equalEnv(envOf(c), wantEnv) || !hasTokenMount(c) {
					t.Errorf("%s: env %v mounts %v", c.Name, c.Env, c.VolumeMounts)
				}
			}
			for _, c := range []corev1.Container{pod.Spec.InitContainers[1], pod.Spec.Containers[1]} {
				if len(c.Env) != 0 || len(c.VolumeMounts) != 0 {
					t.Errorf("%s was skipped but got env %v mounts %v", c.Name, c.Env, c.VolumeMounts)
				}
			}
		},
	}, {
		name: "user env wins by name, including valueFrom",
		pod: `{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app","env":[` +
			`{"name":"AZURE_CLIENT_ID","value":"mine"},{"name":"AZURE_TENANT_ID","valueFrom":{"configMapKeyRef":{"name":"c","key":"k"}}}]}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			c := pod.Spec.Containers[0]
			env := envOf(c)
			if env[workloadidentity.EnvClientID] != "mine" || c.Env[1].ValueFrom == nil || env[workloadidentity.EnvAuthorityHost] == "" || len(c.Env) != 4 {
				t.Errorf("env = %+v", c.Env)
			}
		},
	}, {
		name: "pod expiration annotation wins over the SA's",
		pod:  `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/service-account-token-expiration":"7200"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app"}]}}`,
		sa:   testSA("wi", map[string]string{workloadidentity.ClientIDAnnotation: saClient, workloadidentity.TokenExpirationAnnotation: "86400"}),
		check: func(t *testing.T, pod *corev1.Pod) {
			if got := tokenExp(t, pod); got != 7200 {
				t.Errorf("expiration = %d", got)
			}
		},
	}, {
		name: "SA expiration and default tenant",
		pod:  `{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app"}]}}`,
		sa:   testSA("wi", map[string]string{workloadidentity.ClientIDAnnotation: saClient, workloadidentity.TokenExpirationAnnotation: "86400"}),
		check: func(t *testing.T, pod *corev1.Pod) {
			if got := tokenExp(t, pod); got != 86400 {
				t.Errorf("expiration = %d", got)
			}
			if got := envOf(pod.Spec.Containers[0])[workloadidentity.EnvTenantID]; got != "default-tenant" {
				t.Errorf("tenant = %q", got)
			}
		},
	}, {
		name:    "expiration below range denied",
		pod:     `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/service-account-token-expiration":"3599"}},"spec":{"containers":[{"name":"app"}]}}`,
		wantErr: `pod annotation azure.workload.identity/service-account-token-expiration="3599": must be an integer number of seconds in [3600, 86400]`,
	}, {
		name:    "expiration above range on the SA denied, naming the SA",
		pod:     `{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":{"containers":[{"name":"app"}]}}`,
		sa:      testSA("default", map[string]string{workloadidentity.TokenExpirationAnnotation: "86401"}),
		wantErr: `ServiceAccount ns/default annotation`,
	}, {
		name:    "non-integer expiration denied",
		pod:     `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/service-account-token-expiration":"1h"}},"spec":{"containers":[{"name":"app"}]}}`,
		wantErr: `"1h": must be an integer`,
	}, {
		name: "inject-proxy-sidecar true marks the pod for the agent, adds no container",
		pod:  `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/inject-proxy-sidecar":"true","azure.workload.identity/proxy-sidecar-port":"8000"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app"}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			if pod.Annotations[IMDSAnnotation] != "true" || len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 0 {
				t.Errorf("pod = %+v", pod)
			}
		},
	}, {
		name: "inject-proxy-sidecar false means false",
		pod:  `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/inject-proxy-sidecar":"false"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app"}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			if _, ok := pod.Annotations[IMDSAnnotation]; ok {
				t.Errorf("annotations = %v", pod.Annotations)
			}
		},
	}, {
		name:    "inject-proxy-sidecar must be strictly boolean",
		pod:     `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/inject-proxy-sidecar":"yes"}},"spec":{"containers":[{"name":"app"}]}}`,
		wantErr: `inject-proxy-sidecar="yes": must be "true" or "false"`,
	}, {
		name:    "bad proxy port denied when the proxy is requested",
		pod:     `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/inject-proxy-sidecar":"true","azure.workload.identity/proxy-sidecar-port":"http"}},"spec":{"containers":[{"name":"app"}]}}`,
		wantErr: `proxy-sidecar-port="http"`,
	}, {
		name: "SA without client-id: no AZURE_CLIENT_ID, the rest injected",
		pod:  `{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":{"containers":[{"name":"app"}]}}`,
		sa:   testSA("default", nil),
		check: func(t *testing.T, pod *corev1.Pod) {
			env := envOf(pod.Spec.Containers[0])
			if _, ok := env[workloadidentity.EnvClientID]; ok || env[workloadidentity.EnvFederatedTokenFile] != workloadidentity.TokenFile {
				t.Errorf("env = %v", env)
			}
		},
	}, {
		name: "existing mount at the token dir and user volume of that name are left alone",
		pod: `{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"wi",` +
			`"volumes":[{"name":"azure-identity-token","emptyDir":{}}],"containers":[{"name":"app","volumeMounts":[{"name":"azure-identity-token","mountPath":"/var/run/secrets/azure/tokens/"}]}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			if len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].EmptyDir == nil || len(pod.Spec.Containers[0].VolumeMounts) != 1 {
				t.Errorf("pod = %+v", pod.Spec)
			}
		},
	}, {
		name: "annotation keys are escaped (RFC 6901)",
		pod:  `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"x":"y"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app"}]}}`,
		check: func(t *testing.T, pod *corev1.Pod) {
			if pod.Annotations[InjectedAnnotation] == "" || pod.Annotations["x"] != "y" {
				t.Errorf("annotations = %v", pod.Annotations)
			}
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.sa
			if s == nil {
				s = sa
			}
			ops, out, err := mutate(t, m, tt.pod, s)
			if tt.wantErr != "" {
				var inv *InvalidError
				if err == nil || !errors.As(err, &inv) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want InvalidError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantOps != "" {
				got, _ := json.Marshal(ops)
				if string(got) != tt.wantOps {
					t.Errorf("ops =\n%s\nwant\n%s", got, tt.wantOps)
				}
			}
			pod := parsePod(t, out)
			if tt.check != nil {
				tt.check(t, pod)
			}
			// Idempotent: the output yields no further patch.
			again, _, err := mutate(t, m, string(out), s)
			if err != nil || len(again) != 0 {
				t.Errorf("second pass: ops %+v err %v", again, err)
			}
		})
	}
}

func equalEnv(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPatchReinvocation: another webhook changes serviceAccountName after
// the first pass; the second pass moves the injected values to the new SA
// and never touches the user's own.
func TestPatchReinvocation(t *testing.T) {
	m := &Mutator{}
	saA := testSA("a", map[string]string{workloadidentity.ClientIDAnnotation: "client-a", workloadidentity.TenantIDAnnotation: "tenant-a"})
	saB := testSA("b", map[string]string{workloadidentity.ClientIDAnnotation: "client-b", workloadidentity.TokenExpirationAnnotation: "7200"})
	saC := testSA("c", map[string]string{workloadidentity.TenantIDAnnotation: "tenant-c"})
	pod := `{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"a","containers":[` +
		`{"name":"app"},{"name":"user","env":[{"name":"AZURE_TENANT_ID","value":"users-own"}]}]}}`

	_, first, err := mutate(t, m, pod, saA)
	if err != nil {
		t.Fatal(err)
	}
	// Second webhook switches the SA.
	switched := strings.Replace(string(first), `"serviceAccountName":"a"`, `"serviceAccountName":"b"`, 1)
	ops, second, err := mutate(t, m, switched, saB)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Op == "add" && strings.HasSuffix(op.Path, "/env/-") {
			t.Errorf("reinvocation appended a duplicate env var: %+v", op)
		}
	}
	p := parsePod(t, second)
	app, user := envOf(p.Spec.Containers[0]), envOf(p.Spec.Containers[1])
	if app[workloadidentity.EnvClientID] != "client-b" || user[workloadidentity.EnvClientID] != "client-b" {
		t.Errorf("client ids = %q, %q; want client-b", app[workloadidentity.EnvClientID], user[workloadidentity.EnvClientID])
	}
	if _, ok := app[workloadidentity.EnvTenantID]; ok {
		t.Errorf("app tenant = %q; want removed (SA b has no tenant, no default)", app[workloadidentity.EnvTenantID])
	}
	if user[workloadidentity.EnvTenantID] != "users-own" {
		t.Errorf("user's own tenant changed to %q", user[workloadidentity.EnvTenantID])
	}
	if got := tokenExp(t, p); got != 7200 {
		t.Errorf("expiration = %d, want 7200", got)
	}
	if again, _, _ := mutate(t, m, string(second), saB); len(again) != 0 {
		t.Errorf("third pass not empty: %+v", again)
	}

	// And on to an SA without a client id: the injected one goes away.
	switched = strings.Replace(string(second), `"serviceAccountName":"b"`, `"serviceAccountName":"c"`, 1)
	_, third, err := mutate(t, m, switched, saC)
	if err != nil {
		t.Fatal(err)
	}
	p = parsePod(t, third)
	app, user = envOf(p.Spec.Containers[0]), envOf(p.Spec.Containers[1])
	if _, ok := app[workloadidentity.EnvClientID]; ok || app[workloadidentity.EnvTenantID] != "tenant-c" || user[workloadidentity.EnvTenantID] != "users-own" {
		t.Errorf("app env %v, user env %v", app, user)
	}
	if got := tokenExp(t, p); got != 3600 {
		t.Errorf("expiration = %d, want 3600", got)
	}
}

// A tampered record grants no ownership: the user's values stay.
func TestPatchMalformedRecordOwnsNothing(t *testing.T) {
	m := &Mutator{}
	pod := `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"podid.dev/injected":"{not json"}},` +
		`"spec":{"containers":[{"name":"app","env":[{"name":"AZURE_CLIENT_ID","value":"mine"}]}]}}`
	_, out, err := mutate(t, m, pod, testSA("default", map[string]string{workloadidentity.ClientIDAnnotation: "sa"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := envOf(parsePod(t, out).Spec.Containers[0])[workloadidentity.EnvClientID]; got != "mine" {
		t.Errorf("client id = %q", got)
	}
}
