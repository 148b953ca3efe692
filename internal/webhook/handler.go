package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/podid/podid/internal/admission"
	"github.com/podid/podid/internal/workloadidentity"
)

// MaxRequestBytes bounds an AdmissionReview body (admission.MaxRequestBytes).
const MaxRequestBytes = admission.MaxRequestBytes

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

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	admission.Serve(w, r, h.metrics, h.log, func(_ context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
		return h.Review(req)
	})
}

// DecodeReview strictly decodes an AdmissionReview (admission.Decode).
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) { return admission.Decode(body) }

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
		return admission.Deny(resp, http.StatusBadRequest, fmt.Sprintf("podid: decode pod: %v", err)), OutcomeInvalid
	}
	if !Selected(pod) {
		return resp, OutcomeIgnored
	}
	name := workloadidentity.ServiceAccountName(pod)
	sa := h.sas.ServiceAccount(req.Namespace, name)
	if sa == nil {
		if h.missing == MissingServiceAccountAllow {
			resp.Warnings = []string{fmt.Sprintf("podid: ServiceAccount %s/%s not found; pod admitted without workload identity", req.Namespace, name)}
			return resp, OutcomeMissingSAAllowed
		}
		return admission.Deny(resp, http.StatusForbidden, fmt.Sprintf(
			"podid: ServiceAccount %q not found in namespace %q (pod labelled %s=true); create it first (a just-created ServiceAccount may need a moment to reach the webhook's cache)",
			name, req.Namespace, workloadidentity.UseLabel)), OutcomeMissingSADenied
	}
	ops, err := h.mutator.Patch(pod, sa)
	if err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			return admission.Deny(resp, http.StatusBadRequest, "podid: "+inv.Msg), OutcomeInvalid
		}
		h.log.Error("mutate pod", "namespace", req.Namespace, "serviceAccount", name, "err", err)
		return admission.Deny(resp, http.StatusInternalServerError, "podid: internal error"), OutcomeError
	}
	if len(ops) == 0 {
		return resp, OutcomeUnchanged
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return admission.Deny(resp, http.StatusInternalServerError, "podid: internal error"), OutcomeError
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp, OutcomeMutated
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
