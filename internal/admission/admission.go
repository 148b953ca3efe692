// Package admission is the HTTP envelope every podid admission endpoint
// shares (the workload-identity webhook and the agent token guard): POST
// only, JSON only, a bounded body, a strictly decoded admission.k8s.io/v1
// AdmissionReview, the response encoded with the request's apiVersion and
// kind, and one observation per request.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
)

// MaxRequestBytes bounds an AdmissionReview body. The API server's own
// request limit is 3 MiB; a pod cannot be larger than that.
const MaxRequestBytes = 3 << 20

// Outcome is the bounded label value of a handled request.
type Outcome string

// Outcomes of the envelope itself; endpoints add their own.
const (
	OutcomeBadRequest Outcome = "bad_request" // not a valid AdmissionReview
	OutcomeError      Outcome = "error"       // internal error
)

// Observer records one answered request.
type Observer interface {
	Observe(o Outcome, d time.Duration)
}

// Review answers one decoded admission request.
type Review func(context.Context, *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome)

// RequestError is an HTTP request that is not a valid AdmissionReview.
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

// Serve answers one HTTP request with review. obs may be nil.
func Serve(w http.ResponseWriter, r *http.Request, obs Observer, log *slog.Logger, review Review) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(w, obs, log, start, &RequestError{http.StatusMethodNotAllowed, "method not allowed: want POST"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			fail(w, obs, log, start, &RequestError{http.StatusUnsupportedMediaType, "content type must be application/json"})
			return
		}
	}
	body, err := readBounded(r.Body, r.ContentLength, MaxRequestBytes)
	if err != nil {
		fail(w, obs, log, start, err)
		return
	}
	ar, err := Decode(body)
	if err != nil {
		fail(w, obs, log, start, err)
		return
	}
	resp, outcome := review(r.Context(), ar.Request)
	out := admissionv1.AdmissionReview{TypeMeta: ar.TypeMeta, Response: resp}
	buf, err := json.Marshal(&out)
	if err != nil {
		fail(w, obs, log, start, fmt.Errorf("encode response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
	observe(obs, outcome, start)
}

func observe(obs Observer, o Outcome, start time.Time) {
	if obs != nil {
		obs.Observe(o, time.Since(start))
	}
}

func fail(w http.ResponseWriter, obs Observer, log *slog.Logger, start time.Time, err error) {
	var re *RequestError
	if errors.As(err, &re) {
		http.Error(w, re.Msg, re.Status)
		observe(obs, OutcomeBadRequest, start)
		return
	}
	if log != nil {
		log.Error("admission request failed", "err", err)
	}
	http.Error(w, "internal error", http.StatusInternalServerError)
	observe(obs, OutcomeError, start)
}

// readBounded reads at most limit bytes, failing clearly beyond that. size
// is the declared length (-1 when unknown), used only to size the buffer.
func readBounded(r io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, &RequestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("AdmissionReview larger than %d bytes", limit)}
	}
	capacity := int64(32 << 10)
	if size >= 0 {
		capacity = size + 1 // +1 so reading EOF needs no growth
	}
	buf := make([]byte, 0, capacity)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(int64(cap(buf)), limit+1)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, &RequestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("AdmissionReview larger than %d bytes", limit)}
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, &RequestError{http.StatusBadRequest, fmt.Sprintf("read body: %v", err)}
		}
	}
}

// Decode strictly decodes an admission.k8s.io/v1 AdmissionReview
// request: unknown or duplicate fields, a wrong apiVersion or kind, and a
// missing request or uid are errors (*RequestError).
func Decode(body []byte) (*admissionv1.AdmissionReview, error) {
	if len(body) > MaxRequestBytes {
		return nil, &RequestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("AdmissionReview larger than %d bytes", MaxRequestBytes)}
	}
	var review admissionv1.AdmissionReview
	strict, err := sigsjson.UnmarshalStrict(body, &review)
	if err != nil {
		return nil, &RequestError{http.StatusBadRequest, fmt.Sprintf("decode AdmissionReview: %v", err)}
	}
	if len(strict) > 0 {
		return nil, &RequestError{http.StatusBadRequest, fmt.Sprintf("decode AdmissionReview: %v", errors.Join(strict...))}
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		return nil, &RequestError{http.StatusBadRequest, fmt.Sprintf("want apiVersion %s, kind AdmissionReview; got %q, %q",
			admissionv1.SchemeGroupVersion, Truncate(review.APIVersion), Truncate(review.Kind))}
	}
	if review.Request == nil || review.Request.UID == "" {
		return nil, &RequestError{http.StatusBadRequest, "AdmissionReview without request or request.uid"}
	}
	if review.Response != nil {
		return nil, &RequestError{http.StatusBadRequest, "AdmissionReview request carries a response"}
	}
	return &review, nil
}

// Deny turns resp into a denial with an HTTP-like code and a message the
// API server shows the requester.
func Deny(resp *admissionv1.AdmissionResponse, code int32, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg, Reason: reasonFor(code)}
	return resp
}

func reasonFor(code int32) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusConflict:
		return metav1.StatusReasonConflict
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	}
	return metav1.StatusReasonInternalError
}

// Truncate bounds request input echoed in a message.
func Truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
