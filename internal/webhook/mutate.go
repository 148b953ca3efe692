package webhook

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/podid/podid/internal/admission"
	"github.com/podid/podid/internal/workloadidentity"
)

// Annotations written by the webhook.
const (
	// IMDSAnnotation marks a pod whose IMDS requests podid's node agent
	// serves (instead of a proxy sidecar).
	IMDSAnnotation = "podid.dev/imds"
	// InjectedAnnotation records what the webhook injected (JSON, see
	// injectedRecord), so a later pass updates only its own values.
	InjectedAnnotation = "podid.dev/injected"
)

// The names the webhook reads and injects are in internal/workloadidentity.
const (
	// DefaultAuthorityHost is Entra ID's public-cloud authority.
	DefaultAuthorityHost = "https://login.microsoftonline.com/"

	DefaultTokenExpiration = 3600
	MinTokenExpiration     = 3600
	MaxTokenExpiration     = 86400
)

// InvalidError is a problem with the pod or its ServiceAccount that the
// webhook answers with a denial naming it.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

func invalidf(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// Mutator computes the patch for one pod. The zero value injects the
// public-cloud authority and no default tenant.
type Mutator struct {
	// AuthorityHost is the value of AZURE_AUTHORITY_HOST
	// (DefaultAuthorityHost when empty).
	AuthorityHost string
	// DefaultTenantID is AZURE_TENANT_ID when the ServiceAccount has no
	// tenant-id annotation; when both are empty the var is not injected.
	DefaultTenantID string
}

// Operation is one RFC 6902 JSON patch operation.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// injectedRecord is the value of InjectedAnnotation.
type injectedRecord struct {
	// Env maps a container name to the env var names the webhook owns in it.
	Env map[string][]string `json:"env,omitempty"`
	// Volume is true when the token volume was added by the webhook.
	Volume bool `json:"volume,omitempty"`
}

// Selected reports whether the pod asks for workload identity.
func Selected(pod *corev1.Pod) bool {
	return pod.Labels[workloadidentity.UseLabel] == "true"
}

// TokenExpiration returns the projected token lifetime in seconds: the pod
// annotation wins over the ServiceAccount's, and the default is 3600.
func TokenExpiration(pod *corev1.Pod, sa *corev1.ServiceAccount) (int64, error) {
	v, from := pod.Annotations[workloadidentity.TokenExpirationAnnotation], "pod"
	if _, ok := pod.Annotations[workloadidentity.TokenExpirationAnnotation]; !ok {
		v, from = sa.Annotations[workloadidentity.TokenExpirationAnnotation], "ServiceAccount "+sa.Namespace+"/"+sa.Name
		if _, ok := sa.Annotations[workloadidentity.TokenExpirationAnnotation]; !ok {
			return DefaultTokenExpiration, nil
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < MinTokenExpiration || n > MaxTokenExpiration {
		return 0, invalidf("%s annotation %s=%q: must be an integer number of seconds in [%d, %d]",
			from, workloadidentity.TokenExpirationAnnotation, admission.Truncate(v), MinTokenExpiration, MaxTokenExpiration)
	}
	return n, nil
}

// parseBool accepts exactly "true" and "false"; absent means false.
func parseBool(annotations map[string]string, key string) (bool, error) {
	v, ok := annotations[key]
	if !ok {
		return false, nil
	}
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, invalidf("pod annotation %s=%q: must be \"true\" or \"false\"", key, admission.Truncate(v))
}

func skipSet(pod *corev1.Pod) map[string]bool {
	v := pod.Annotations[workloadidentity.SkipContainersAnnotation]
	if v == "" {
		return nil
	}
	m := map[string]bool{}
	for _, n := range strings.Split(v, ";") {
		if n = strings.TrimSpace(n); n != "" {
			m[n] = true
		}
	}
	return m
}

// Patch returns the operations that make pod carry the identity of sa.
// The operations' paths index into the request object pod was decoded
// from, so they apply to the raw request unchanged. No operations means
// the pod is already as it should be.
func (m *Mutator) Patch(pod *corev1.Pod, sa *corev1.ServiceAccount) ([]Operation, error) {
	exp, err := TokenExpiration(pod, sa)
	if err != nil {
		return nil, err
	}
	imds, err := parseBool(pod.Annotations, workloadidentity.InjectProxySidecarAnnotation)
	if err != nil {
		return nil, err
	}
	// AKS identity bindings: the pod's SDK gets its token from the IMDS
	// endpoint (the agent, through the podid broker), so it gets no token
	// file, only which identity and tenant to ask for.
	binding, err := parseBool(pod.Annotations, workloadidentity.UseIdentityBindingAnnotation)
	if err != nil {
		return nil, err
	}
	if imds {
		if p, ok := pod.Annotations[workloadidentity.ProxySidecarPortAnnotation]; ok {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return nil, invalidf("pod annotation %s=%q: must be a port number in [1, 65535]", workloadidentity.ProxySidecarPortAnnotation, admission.Truncate(p))
			}
		}
	}

	// What a previous pass injected; a malformed record owns nothing.
	var prev injectedRecord
	if raw, ok := pod.Annotations[InjectedAnnotation]; ok {
		if json.Unmarshal([]byte(raw), &prev) != nil {
			prev = injectedRecord{}
		}
	}
	next := injectedRecord{}

	want := m.env(sa, binding)
	skip := skipSet(pod)
	var ops []Operation
	for _, c := range []struct {
		field string
		list  []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for i := range c.list {
			ctr := &c.list[i]
			if skip[ctr.Name] {
				continue
			}
			base := "/spec/" + c.field + "/" + strconv.Itoa(i)
			var owned []string
			ops, owned = containerEnvOps(ops, base, ctr, want, prev.Env[ctr.Name])
			if len(owned) > 0 {
				if next.Env == nil {
					next.Env = map[string][]string{}
				}
				next.Env[ctr.Name] = owned
			}
			if !binding {
				ops = mountOps(ops, base, ctr)
			}
		}
	}

	if !binding {
		ops, next.Volume = volumeOps(ops, pod.Spec.Volumes, exp, prev.Volume)
	}

	anns := map[string]string{}
	if imds && pod.Annotations[IMDSAnnotation] != "true" {
		anns[IMDSAnnotation] = "true"
	}
	rec, err := json.Marshal(next)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", InjectedAnnotation, err)
	}
	if cur, ok := pod.Annotations[InjectedAnnotation]; !ok || cur != string(rec) {
		anns[InjectedAnnotation] = string(rec)
	}
	ops = annotationOps(ops, pod.Annotations, anns)
	return ops, nil
}

type envVar struct{ name, value string }

// env returns the env vars to inject, in a fixed order; an identity-binding
// pod gets no token file and no authority (IMDS needs neither).
func (m *Mutator) env(sa *corev1.ServiceAccount, binding bool) []envVar {
	authority := m.AuthorityHost
	if authority == "" {
		authority = DefaultAuthorityHost
	}
	tenant := sa.Annotations[workloadidentity.TenantIDAnnotation]
	if tenant == "" {
		tenant = m.DefaultTenantID
	}
	out := make([]envVar, 0, 4)
	if id := sa.Annotations[workloadidentity.ClientIDAnnotation]; id != "" {
		out = append(out, envVar{workloadidentity.EnvClientID, id})
	}
	if tenant != "" {
		out = append(out, envVar{workloadidentity.EnvTenantID, tenant})
	}
	if binding {
		return out
	}
	return append(out, envVar{workloadidentity.EnvFederatedTokenFile, workloadidentity.TokenFile}, envVar{workloadidentity.EnvAuthorityHost, authority})
}

// containerEnvOps appends the env operations for one container and returns
// the names the webhook owns in it afterwards. prevOwned are the names a
// previous pass injected; any other existing name belongs to the user.
func containerEnvOps(ops []Operation, base string, c *corev1.Container, want []envVar, prevOwned []string) ([]Operation, []string) {
	wanted := make(map[string]string, len(want))
	for _, e := range want {
		wanted[e.name] = e.value
	}
	var owned []string
	var removals []int
	present := make(map[string]bool, len(c.Env))
	for j := range c.Env {
		e := &c.Env[j]
		if present[e.Name] {
			continue // duplicate name: the first one is the one we judged
		}
		present[e.Name] = true
		if !slices.Contains(prevOwned, e.Name) {
			continue // the user's
		}
		v, ok := wanted[e.Name]
		switch {
		case !ok:
			removals = append(removals, j)
		case e.Value != v || e.ValueFrom != nil:
			ops = append(ops, Operation{Op: "replace", Path: base + "/env/" + strconv.Itoa(j),
				Value: corev1.EnvVar{Name: e.Name, Value: v}})
			owned = append(owned, e.Name)
		default:
			owned = append(owned, e.Name)
		}
	}
	// Remove from the end so earlier indices stay valid.
	for k := len(removals) - 1; k >= 0; k-- {
		ops = append(ops, Operation{Op: "remove", Path: base + "/env/" + strconv.Itoa(removals[k])})
	}
	var add []corev1.EnvVar
	for _, e := range want {
		if !present[e.name] {
			add = append(add, corev1.EnvVar{Name: e.name, Value: e.value})
			owned = append(owned, e.name)
		}
	}
	switch {
	case len(add) == 0:
	case len(c.Env) == 0 || len(c.Env) == len(removals):
		ops = append(ops, Operation{Op: "add", Path: base + "/env", Value: add})
	default:
		for _, e := range add {
			ops = append(ops, Operation{Op: "add", Path: base + "/env/-", Value: e})
		}
	}
	sort.Strings(owned)
	return ops, owned
}

func mountOps(ops []Operation, base string, c *corev1.Container) []Operation {
	for _, vm := range c.VolumeMounts {
		if vm.Name == workloadidentity.TokenVolumeName || strings.TrimSuffix(vm.MountPath, "/") == workloadidentity.TokenDir {
			return ops
		}
	}
	m := corev1.VolumeMount{Name: workloadidentity.TokenVolumeName, MountPath: workloadidentity.TokenDir, ReadOnly: true}
	if len(c.VolumeMounts) == 0 {
		return append(ops, Operation{Op: "add", Path: base + "/volumeMounts", Value: []corev1.VolumeMount{m}})
	}
	return append(ops, Operation{Op: "add", Path: base + "/volumeMounts/-", Value: m})
}

func tokenVolume(exp int64) corev1.Volume {
	return corev1.Volume{
		Name: workloadidentity.TokenVolumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          workloadidentity.TokenAudience,
				ExpirationSeconds: &exp,
				Path:              workloadidentity.TokenFileName,
			}}},
		}},
	}
}

// volumeOps appends the token volume operations and reports whether the
// webhook owns the volume afterwards. A volume of that name the webhook did
// not add is the user's and left alone.
func volumeOps(ops []Operation, vols []corev1.Volume, exp int64, prevOwned bool) ([]Operation, bool) {
	for k := range vols {
		v := &vols[k]
		if v.Name != workloadidentity.TokenVolumeName {
			continue
		}
		if !prevOwned {
			return ops, false
		}
		path := "/spec/volumes/" + strconv.Itoa(k)
		if p := v.Projected; p != nil {
			for s := range p.Sources {
				t := p.Sources[s].ServiceAccountToken
				if t == nil || t.Path != workloadidentity.TokenFileName {
					continue
				}
				if t.Audience == workloadidentity.TokenAudience && t.ExpirationSeconds != nil && *t.ExpirationSeconds == exp {
					return ops, true
				}
				if t.Audience == workloadidentity.TokenAudience {
					return append(ops, Operation{Op: "replace",
						Path:  path + "/projected/sources/" + strconv.Itoa(s) + "/serviceAccountToken/expirationSeconds",
						Value: exp}), true
				}
			}
		}
		return append(ops, Operation{Op: "replace", Path: path, Value: tokenVolume(exp)}), true
	}
	if len(vols) == 0 {
		return append(ops, Operation{Op: "add", Path: "/spec/volumes", Value: []corev1.Volume{tokenVolume(exp)}}), true
	}
	return append(ops, Operation{Op: "add", Path: "/spec/volumes/-", Value: tokenVolume(exp)}), true
}

func annotationOps(ops []Operation, cur, set map[string]string) []Operation {
	if len(set) == 0 {
		return ops
	}
	if len(cur) == 0 {
		return append(ops, Operation{Op: "add", Path: "/metadata/annotations", Value: set})
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ops = append(ops, Operation{Op: "add", Path: "/metadata/annotations/" + escapePointer(k), Value: set[k]})
	}
	return ops
}

// escapePointer escapes one RFC 6901 reference token.
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
