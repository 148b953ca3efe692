package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/podid/podid/internal/workloadidentity"
)

// staticSAs is a ServiceAccounts backed by a map keyed "ns/name".
type staticSAs map[string]*corev1.ServiceAccount

func (s staticSAs) ServiceAccount(ns, name string) *corev1.ServiceAccount { return s[ns+"/"+name] }

func reviewJSON(uid, kind, resource, op, ns, object string) string {
	return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"` + uid + `",` +
		`"kind":{"group":"","version":"v1","kind":"` + kind + `"},"resource":{"group":"","version":"v1","resource":"` + resource + `"},` +
		`"requestKind":{"group":"","version":"v1","kind":"` + kind + `"},"requestResource":{"group":"","version":"v1","resource":"` + resource + `"},` +
		`"namespace":"` + ns + `","operation":"` + op + `","userInfo":{"username":"u"},"object":` + object + `,"oldObject":null,"dryRun":false,"options":null}}`
}

const selectedPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"p-","namespace":"ns","labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"app","image":"x"}]}}`

func newTestHandler(t testing.TB, policy MissingServiceAccountPolicy) (*Handler, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return NewHandler(HandlerConfig{
		ServiceAccounts:       staticSAs{"ns/wi": testSA("wi", map[string]string{workloadidentity.ClientIDAnnotation: saClient})},
		MissingServiceAccount: policy,
		Metrics:               metrics,
	}), reg
}

func TestHandler(t *testing.T) {
	for _, tt := range []struct {
		name        string
		policy      MissingServiceAccountPolicy
		method      string
		contentType string
		body        string
		wantStatus  int
		wantBody    string // substring of an error body
		wantAllowed bool
		wantPatch   bool
		wantMsg     string
		outcome     Outcome
	}{
		{name: "selected pod is patched", body: reviewJSON("1", "Pod", "pods", "CREATE", "ns", selectedPod),
			wantStatus: 200, wantAllowed: true, wantPatch: true, outcome: OutcomeMutated},
		{name: "unselected pod allowed without patch",
			body:       reviewJSON("2", "Pod", "pods", "CREATE", "ns", `{"metadata":{"labels":{"azure.workload.identity/use":"false"}},"spec":{"containers":[{"name":"a"}]}}`),
			wantStatus: 200, wantAllowed: true, outcome: OutcomeIgnored},
		{name: "other kinds allowed without patch", body: reviewJSON("3", "ConfigMap", "configmaps", "CREATE", "ns", `{}`),
			wantStatus: 200, wantAllowed: true, outcome: OutcomeIgnored},
		{name: "UPDATE allowed without patch", body: reviewJSON("4", "Pod", "pods", "UPDATE", "ns", selectedPod),
			wantStatus: 200, wantAllowed: true, outcome: OutcomeIgnored},
		{name: "missing SA denied by default, naming it",
			body:       reviewJSON("5", "Pod", "pods", "CREATE", "other", selectedPod),
			wantStatus: 200, wantMsg: `ServiceAccount "wi" not found in namespace "other"`, outcome: OutcomeMissingSADenied},
		{name: "missing SA allowed by policy", policy: MissingServiceAccountAllow,
			body:       reviewJSON("6", "Pod", "pods", "CREATE", "other", selectedPod),
			wantStatus: 200, wantAllowed: true, outcome: OutcomeMissingSAAllowed},
		{name: "bad annotation denied",
			body: reviewJSON("7", "Pod", "pods", "CREATE", "ns",
				`{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"azure.workload.identity/service-account-token-expiration":"60"}},"spec":{"serviceAccountName":"wi","containers":[{"name":"a"}]}}`),
			wantStatus: 200, wantMsg: "[3600, 86400]", outcome: OutcomeInvalid},
		{name: "GET refused", method: http.MethodGet, wantStatus: 405, outcome: OutcomeBadRequest},
		{name: "wrong content type", contentType: "text/plain", body: "{}", wantStatus: 415, outcome: OutcomeBadRequest},
		{name: "unknown field rejected", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","extra":1,"request":{"uid":"x"}}`,
			wantStatus: 400, wantBody: `unknown field "extra"`, outcome: OutcomeBadRequest},
		{name: "duplicate field rejected", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","kind":"AdmissionReview","request":{"uid":"x"}}`,
			wantStatus: 400, wantBody: `duplicate field`, outcome: OutcomeBadRequest},
		{name: "v1beta1 rejected", body: `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`,
			wantStatus: 400, wantBody: "want apiVersion admission.k8s.io/v1", outcome: OutcomeBadRequest},
		{name: "no request", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`,
			wantStatus: 400, wantBody: "without request", outcome: OutcomeBadRequest},
		{name: "not JSON", body: `<xml/>`, wantStatus: 400, outcome: OutcomeBadRequest},
		{name: "too large", body: `{"apiVersion":"` + strings.Repeat("a", MaxRequestBytes) + `"}`,
			wantStatus: 413, wantBody: "larger than 3145728 bytes", outcome: OutcomeBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, reg := newTestHandler(t, tt.policy)
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, Path, strings.NewReader(tt.body))
			ct := tt.contentType
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
			}
			if tt.wantBody != "" && !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body = %q, want %q", rec.Body, tt.wantBody)
			}
			if got := testutil.CollectAndCount(reg, "podid_webhook_admission_duration_seconds"); got != 1 {
				t.Errorf("histogram series = %d", got)
			}
			if n := histCount(t, reg, tt.outcome); n != 1 {
				t.Errorf("outcome %s count = %d", tt.outcome, n)
			}
			if rec.Code != 200 {
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID == "" {
				t.Fatalf("response = %s", rec.Body)
			}
			r := out.Response
			if r.Allowed != tt.wantAllowed || (len(r.Patch) > 0) != tt.wantPatch {
				t.Errorf("allowed %v patch %s", r.Allowed, r.Patch)
			}
			if tt.wantPatch && (r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch) {
				t.Errorf("patchType = %v", r.PatchType)
			}
			if tt.wantMsg != "" && (r.Result == nil || !strings.Contains(r.Result.Message, tt.wantMsg)) {
				t.Errorf("result = %+v, want message containing %q", r.Result, tt.wantMsg)
			}
			if bytes.Contains(r.Patch, []byte("creationTimestamp")) || bytes.Contains(r.Patch, []byte("status")) {
				t.Errorf("patch has re-marshal noise: %s", r.Patch)
			}
		})
	}
}

func histCount(t *testing.T, reg *prometheus.Registry, o Outcome) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == string(o) {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
