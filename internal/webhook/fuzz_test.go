package webhook

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzAdmissionReview feeds arbitrary bodies through the whole handler:
// decoding, the pod decode and the mutation. It must never panic, must
// answer every body with either a client error or a well-formed
// AdmissionReview, and any patch must be valid JSON.
func FuzzAdmissionReview(f *testing.F) {
	for _, s := range []string{
		reviewJSON("1", "Pod", "pods", "CREATE", "ns", selectedPod),
		reviewJSON("2", "Pod", "pods", "CREATE", "ns", `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/skip-containers":"a;b","azure.workload.identity/inject-proxy-sidecar":"true","podid.dev/injected":"{\"env\":{\"a\":[\"AZURE_CLIENT_ID\"]},\"volume\":true}"}},"spec":{"initContainers":[{"name":"i","env":[{"name":"AZURE_CLIENT_ID","value":"x"}]}],"containers":[{"name":"a"}],"volumes":[{"name":"azure-identity-token","projected":{"sources":[{"serviceAccountToken":{"path":"azure-identity-token","audience":"api://AzureADTokenExchange","expirationSeconds":7200}}]}}]}}`),
		reviewJSON("3", "Pod", "pods", "CREATE", "ns", `{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/service-account-token-expiration":"x"}},"spec":{"serviceAccountName":"wi"}}`),
		reviewJSON("4", "Pod", "pods", "CREATE", "ns", `null`),
		reviewJSON("5", "Pod", "pods", "CREATE", "ns", `[]`),
		reviewJSON("6", "Secret", "secrets", "DELETE", "ns", `{}`),
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"spec":{"containers":[{"env":[{"name":"A"},{"name":"A"}]}]}}}}`,
		`{}`, `null`, `[`, ``,
	} {
		f.Add([]byte(s))
	}
	h, _ := newTestHandler(f, MissingServiceAccountDeny)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("200 with a bad review %q: %v", rec.Body, err)
			}
			if len(out.Response.Patch) > 0 && !json.Valid(out.Response.Patch) {
				t.Fatalf("invalid patch %q", out.Response.Patch)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
