package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// fieldManager owns what podid up applies (server-side apply): a second
// run with the same manifests changes nothing.
const fieldManager = "podid-up"

type kube struct {
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newKube(kubeconfig string) (*kube, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 30 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kube{cs: cs, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))}, nil
}

// varRE is a value a user fills in: ${NAME}.
var varRE = regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)\}`)

// expand fills in ${NAME}s; a name without a value is an error (a manifest
// applied with a hole would fail later and less clearly).
func expand(file string, b []byte, vars map[string]string) ([]byte, error) {
	var missing []string
	out := varRE.ReplaceAllFunc(b, func(m []byte) []byte {
		name := string(varRE.FindSubmatch(m)[1])
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return []byte(v)
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: no value for %s", file, strings.Join(missing, ", "))
	}
	return out, nil
}

// applyFile server-side-applies every object of a multi-document YAML file,
// putting namespaced objects that name none in ns. It returns how many
// objects the API server changed.
func (k *kube) applyFile(ctx context.Context, file, ns string, vars map[string]string) (int, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	b, err := expand(file, raw, vars)
	if err != nil {
		return 0, err
	}
	changed := 0
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return changed, nil
			}
			return changed, fmt.Errorf("%s: %w", file, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		c, err := k.apply(ctx, &obj, ns)
		if err != nil {
			return changed, fmt.Errorf("%s: %s %s: %w", file, obj.GetKind(), obj.GetName(), err)
		}
		if c {
			changed++
		}
	}
}

func (k *kube) apply(ctx context.Context, obj *unstructured.Unstructured, ns string) (bool, error) {
	gvk := obj.GroupVersionKind()
	m, err := k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		k.mapper.Reset() // a CRD installed since discovery was cached
		m, err = k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return false, err
	}
	var ri dynamic.ResourceInterface = k.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(ns)
		}
		ri = k.dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
	}
	before := ""
	if cur, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{}); err == nil {
		before = cur.GetResourceVersion()
	} else if !apierrors.IsNotFound(err) {
		return false, err
	}
	got, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return false, err
	}
	return got.GetResourceVersion() != before, nil
}

// workload is one Deployment or DaemonSet and how far its rollout is.
type workload struct {
	kind, name  string
	ready, want int32
	done        bool
}

// rollouts reports every Deployment and DaemonSet in ns.
func (k *kube) rollouts(ctx context.Context, ns string) ([]workload, error) {
	var ws []workload
	ds, err := k.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, d := range ds.Items {
		ws = append(ws, deploymentRollout(&d))
	}
	dss, err := k.cs.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, d := range dss.Items {
		ws = append(ws, daemonSetRollout(&d))
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].name < ws[j].name })
	return ws, nil
}

// deploymentRollout is kubectl rollout status's rule: the controller saw
// the newest spec and every replica is updated and available.
func deploymentRollout(d *appsv1.Deployment) workload {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return workload{kind: "deployment", name: d.Name, ready: s.AvailableReplicas, want: want,
		done: s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want}
}

func daemonSetRollout(d *appsv1.DaemonSet) workload {
	s := d.Status
	return workload{kind: "daemonset", name: d.Name, ready: s.NumberAvailable, want: s.DesiredNumberScheduled,
		done: s.ObservedGeneration >= d.Generation && s.DesiredNumberScheduled > 0 &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled}
}

// waitRollouts waits until every workload in ns is rolled out, telling
// progress what it waits for.
func (k *kube) waitRollouts(ctx context.Context, ns string, timeout time.Duration, status func(string)) ([]workload, error) {
	var last []workload
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		ws, err := k.rollouts(ctx, ns)
		if err != nil {
			status("listing workloads: " + err.Error())
			return false, nil // the API server may be busy; the timeout bounds this
		}
		last = ws
		var waiting []string
		for _, w := range ws {
			if !w.done {
				waiting = append(waiting, fmt.Sprintf("%s %d/%d", w.name, w.ready, w.want))
			}
		}
		if len(ws) == 0 {
			status("no workloads yet")
			return false, nil
		}
		if len(waiting) == 0 {
			return true, nil
		}
		status(fmt.Sprintf("%d/%d ready; waiting for %s", len(ws)-len(waiting), len(ws), strings.Join(waiting, ", ")))
		return false, nil
	})
	if err != nil {
		var not []string
		for _, w := range last {
			if !w.done {
				not = append(not, fmt.Sprintf("%s/%s %d/%d%s", w.kind, w.name, w.ready, w.want, k.podTrouble(ctx, ns)))
			}
		}
		return last, fmt.Errorf("not rolled out in %s: %s (kubectl -n %s describe pods)", timeout, strings.Join(not, "; "), ns)
	}
	return last, nil
}

// podTrouble names the first waiting reason among ns's pods, e.g.
// " (podid-agent-x: CrashLoopBackOff)".
func (k *kube) podTrouble(ctx context.Context, ns string) string {
	pods, err := k.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
				return fmt.Sprintf(" (%s: %s)", p.Name, c.State.Waiting.Reason)
			}
		}
	}
	return ""
}

// newestPod is the newest running-or-pending pod matching selector in ns.
func (k *kube) newestPod(ctx context.Context, ns, selector string) (*corev1.Pod, error) {
	pods, err := k.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var best *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	return best, nil
}

// podLog reads at most 256 KiB of a container's log.
func (k *kube) podLog(ctx context.Context, ns, pod, container string) ([]byte, error) {
	limit := int64(256 << 10)
	return k.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, LimitBytes: &limit}).DoRaw(ctx)
}
