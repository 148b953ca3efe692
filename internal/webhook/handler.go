package webhook

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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/podid/podid/internal/workloadidentity"
)

// MaxRequestBytes bounds an AdmissionReview body. The API server's own
// request limit is 3 MiB; a pod cannot be larger than that.
const MaxRequestBytes = 3 << 20

// ServiceAccounts looks ServiceAccounts up without I/O (an informer cache).
type ServiceAccounts interface {
	// ServiceAccount returns the named ServiceAccount, or nil when the
	// cache does not hold it. The result must not be modified.
	ServiceAccount(namespace, name string) *corev1.ServiceAccount
}

// MissingServiceAccountPolicy decides what happens to a selected pod whose
// ServiceAccount is not in the cache.
type MissingServiceAccountPolicy string

const (
	// MissingServiceAccountDeny rejects the pod, naming the ServiceAccount
	// (the default: a pod admitted without identity would run but fail to
	// get tokens, and controllers retry a denied create).
	MissingServiceAccountDeny MissingServiceAccountPolicy = "deny"
	// MissingServiceAccountAllow admits the pod unchanged.
	MissingServiceAccountAllow MissingServiceAccountPolicy = "allow"
)

// ParseMissingServiceAccountPolicy parses "deny" or "allow".
func ParseMissingServiceAccountPolicy(s string) (MissingServiceAccountPolicy, error) {
	switch p := MissingServiceAccountPolicy(s); p {
	case MissingServiceAccountDeny, MissingServiceAccountAllow:
		return p, nil
	}
	return "", fmt.Errorf("missing-service-account policy %q: want %q or %q", s, MissingServiceAccountDeny, MissingServiceAccountAllow)
}

// HandlerConfig assembles a Handler.
type HandlerConfig struct {
	Mutator         Mutator
	ServiceAccounts ServiceAccounts
	// MissingServiceAccount defaults to MissingServiceAccountDeny.
	MissingServiceAccount MissingServiceAccountPolicy
	Metrics               *Metrics     // optional
	Logger                *slog.Logger // optional
}

// Handler serves AdmissionReview requests (admission.k8s.io/v1) over HTTP.
type Handler struct {
	mutator Mutator
	sas     ServiceAccounts
	missing MissingServiceAccountPolicy
	metrics *Metrics
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// NewHandler assembles a Handler; it does no I/O.
func NewHandler(c HandlerConfig) *Handler {
	h := &Handler{mutator: c.Mutator, sas: c.ServiceAccounts, missing: c.MissingServiceAccount, metrics: c.Metrics, log: c.Logger}
	if h.missing == "" {
		h.missing = MissingServiceAccountDeny
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// RequestError is an HTTP request that is not a valid AdmissionReview.
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	serveAdmission(w, r, h.metrics, h.log, func(_ context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
		return h.Review(req)
	})
}

// reviewFunc answers one decoded admission request.
type reviewFunc func(context.Context, *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome)

// serveAdmission is the HTTP envelope every podid admission endpoint
// shares: POST only, JSON only, bounded body, strictly decoded
// AdmissionReview, one metric observation per request.
func serveAdmission(w http.ResponseWriter, r *http.Request, m *Metrics, log *slog.Logger, review reviewFunc) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(w, m, log, start, &RequestError{http.StatusMethodNotAllowed, "method not allowed: want POST"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			fail(w, m, log, start, &RequestError{http.StatusUnsupportedMediaType, "content type must be application/json"})
			return
		}
	}
	body, err := readBounded(r.Body, r.ContentLength, MaxRequestBytes)
	if err != nil {
		fail(w, m, log, start, err)
		return
	}
	ar, err := DecodeReview(body)
	if err != nil {
		fail(w, m, log, start, err)
		return
	}
	resp, outcome := review(r.Context(), ar.Request)
	out := admissionv1.AdmissionReview{TypeMeta: ar.TypeMeta, Response: resp}
	buf, err := json.Marshal(&out)
	if err != nil {
		fail(w, m, log, start, fmt.Errorf("encode response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
	m.observe(outcome, time.Since(start))
}

func fail(w http.ResponseWriter, m *Metrics, log *slog.Logger, start time.Time, err error) {
	var re *RequestError
	if errors.As(err, &re) {
		http.Error(w, re.Msg, re.Status)
		m.observe(OutcomeBadRequest, time.Since(start))
		return
	}
	log.Error("admission request failed", "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
	m.observe(OutcomeError, time.Since(start))
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

// DecodeReview strictly decodes an admission.k8s.io/v1 AdmissionReview
// request: unknown or duplicate fields, a wrong apiVersion or kind, and a
// missing request or uid are errors (*RequestError).
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
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
			admissionv1.SchemeGroupVersion, truncate(review.APIVersion), truncate(review.Kind))}
	}
	if review.Request == nil || review.Request.UID == "" {
		return nil, &RequestError{http.StatusBadRequest, "AdmissionReview without request or request.uid"}
	}
	if review.Response != nil {
		return nil, &RequestError{http.StatusBadRequest, "AdmissionReview request carries a response"}
	}
	return &review, nil
}

var (
	podKind     = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
)

// Review answers one admission request. Requests other than CREATE of a
// core/v1 pod, and pods not selected, are allowed unchanged.
func (h *Handler) Review(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind != podKind || req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp, OutcomeIgnored
	}
	pod, err := decodePod(req.Object.Raw)
	if err != nil {
		return deny(resp, http.StatusBadRequest, fmt.Sprintf("podid: decode pod: %v", err)), OutcomeInvalid
	}
	if !Selected(pod) {
		return resp, OutcomeIgnored
	}
	name := ServiceAccountName(pod)
	sa := h.sas.ServiceAccount(req.Namespace, name)
	if sa == nil {
		if h.missing == MissingServiceAccountAllow {
			resp.Warnings = []string{fmt.Sprintf("podid: ServiceAccount %s/%s not found; pod admitted without workload identity", req.Namespace, name)}
			return resp, OutcomeMissingSAAllowed
		}
		return deny(resp, http.StatusForbidden, fmt.Sprintf(
			"podid: ServiceAccount %q not found in namespace %q (pod labelled %s=true); create it first (a just-created ServiceAccount may need a moment to reach the webhook's cache)",
			name, req.Namespace, workloadidentity.UseLabel)), OutcomeMissingSADenied
	}
	ops, err := h.mutator.Patch(pod, sa)
	if err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			return deny(resp, http.StatusBadRequest, "podid: "+inv.Msg), OutcomeInvalid
		}
		h.log.Error("mutate pod", "namespace", req.Namespace, "serviceAccount", name, "err", err)
		return deny(resp, http.StatusInternalServerError, "podid: internal error"), OutcomeError
	}
	if len(ops) == 0 {
		return resp, OutcomeUnchanged
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(resp, http.StatusInternalServerError, "podid: internal error"), OutcomeError
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp, OutcomeMutated
}

func deny(resp *admissionv1.AdmissionResponse, code int32, msg string) *admissionv1.AdmissionResponse {
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

// podView holds the only parts of a pod the webhook reads. Decoding into
// it skips everything else (resources, probes, ...) instead of building it,
// which halves the handler's cost; array order, and so patch indices, are
// those of the request.
type podView struct {
	Metadata struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName       string          `json:"serviceAccountName"`
		DeprecatedServiceAccount string          `json:"serviceAccount"`
		InitContainers           []containerView `json:"initContainers"`
		Containers               []containerView `json:"containers"`
		Volumes                  []volumeView    `json:"volumes"`
	} `json:"spec"`
}

type containerView struct {
	Name         string               `json:"name"`
	Env          []corev1.EnvVar      `json:"env"`
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts"`
}

type volumeView struct {
	Name      string                        `json:"name"`
	Projected *corev1.ProjectedVolumeSource `json:"projected"`
}

// decodePod decodes the fields the mutation reads, case-sensitively.
func decodePod(raw []byte) (*corev1.Pod, error) {
	var v podView
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &v); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	pod.Labels, pod.Annotations = v.Metadata.Labels, v.Metadata.Annotations
	pod.Spec.ServiceAccountName, pod.Spec.DeprecatedServiceAccount = v.Spec.ServiceAccountName, v.Spec.DeprecatedServiceAccount
	conv := func(cs []containerView) []corev1.Container {
		if cs == nil {
			return nil
		}
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Env: c.Env, VolumeMounts: c.VolumeMounts}
		}
		return out
	}
	pod.Spec.InitContainers, pod.Spec.Containers = conv(v.Spec.InitContainers), conv(v.Spec.Containers)
	if v.Spec.Volumes != nil {
		pod.Spec.Volumes = make([]corev1.Volume, len(v.Spec.Volumes))
		for i, vol := range v.Spec.Volumes {
			pod.Spec.Volumes[i] = corev1.Volume{Name: vol.Name, VolumeSource: corev1.VolumeSource{Projected: vol.Projected}}
		}
	}
	return pod, nil
}
