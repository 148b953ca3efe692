package admission

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

type counts map[Outcome]int

func (c counts) Observe(o Outcome, _ time.Duration) { c[o]++ }

const okReview = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1"}}`

func TestServe(t *testing.T) {
	allow := func(_ context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
		return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}, "allowed"
	}
	for _, tt := range []struct {
		name, method, ctype, body string
		status                    int
		outcome                   Outcome
	}{
		{"answered", http.MethodPost, "application/json", okReview, 200, "allowed"},
		{"no content type", http.MethodPost, "", okReview, 200, "allowed"},
		{"GET", http.MethodGet, "application/json", "", 405, OutcomeBadRequest},
		{"YAML", http.MethodPost, "application/yaml", okReview, 415, OutcomeBadRequest},
		{"too large", http.MethodPost, "application/json", strings.Repeat(" ", MaxRequestBytes+1), 413, OutcomeBadRequest},
		{"unknown field", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1"},"bogus":1}`, 400, OutcomeBadRequest},
		{"duplicate field", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","kind":"AdmissionReview","request":{"uid":"1"}}`, 400, OutcomeBadRequest},
		{"wrong version", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}`, 400, OutcomeBadRequest},
		{"no uid", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`, 400, OutcomeBadRequest},
		{"carries a response", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1"},"response":{"uid":"1","allowed":true}}`, 400, OutcomeBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			obs := counts{}
			r := httptest.NewRequest(tt.method, "/", strings.NewReader(tt.body))
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			rec := httptest.NewRecorder()
			Serve(rec, r, obs, nil, allow)
			if rec.Code != tt.status {
				t.Fatalf("status %d (%s), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), tt.status)
			}
			if obs[tt.outcome] != 1 || len(obs) != 1 {
				t.Errorf("observed %v, want one %s", obs, tt.outcome)
			}
			if tt.status != 200 {
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID != "u1" || !out.Response.Allowed {
				t.Errorf("response %+v", out)
			}
		})
	}
}

func TestDeny(t *testing.T) {
	for _, tt := range []struct {
		code   int32
		reason string
	}{{400, "BadRequest"}, {403, "Forbidden"}, {404, "NotFound"}, {409, "Conflict"}, {503, "ServiceUnavailable"}, {500, "InternalError"}} {
		resp := Deny(&admissionv1.AdmissionResponse{UID: "u", Allowed: true}, tt.code, "no")
		if resp.Allowed || resp.Result.Code != tt.code || string(resp.Result.Reason) != tt.reason || resp.Result.Message != "no" {
			t.Errorf("Deny(%d) = %+v", tt.code, resp.Result)
		}
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("x", 100)
	if got := Truncate(long); len(got) > 64+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("Truncate(100 x) = %q", got)
	}
	if got := Truncate("short"); got != "short" {
		t.Errorf("Truncate(short) = %q", got)
	}
}
