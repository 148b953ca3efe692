package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldOwner is the server-side-apply field manager of objects the tests apply.
const FieldOwner = "podid-e2e"

// Namespace creates a fresh namespace for t (named after the test, labelled
// podid.io/e2e=true) and deletes it when t ends; on failure it first logs the
// namespace's pods, their logs and events.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "e2e-" + strings.Trim(prefix, "-") + "-",
		Labels:       map[string]string{"podid.io/e2e": "true"},
	}}
	if err := c.Client.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if t.Failed() {
			c.DumpNamespace(ctx, t, ns.Name)
		}
		if err := c.Client.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// Apply server-side-applies every object in a multi-document YAML (or JSON)
// manifest, setting namespace on namespaced objects that name none. Objects are
// deleted when t ends (in reverse order). It returns the applied objects.
func (c *Cluster) Apply(ctx context.Context, t testing.TB, namespace string, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := DecodeManifest(manifest)
	if err != nil {
		t.Fatalf("decode manifest: %v", err)
	}
	for _, o := range objs {
		namespaced, err := c.Client.IsObjectNamespaced(o)
		if err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if namespaced && o.GetNamespace() == "" {
			o.SetNamespace(namespace)
		}
		if err := c.Client.Patch(ctx, o, client.Apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(objs) - 1; i >= 0; i-- {
			err := c.Client.Delete(ctx, objs[i], client.PropagationPolicy(metav1.DeletePropagationBackground))
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete %s %s: %v", objs[i].GetKind(), objs[i].GetName(), err)
			}
		}
	})
	return objs
}

// ApplyFile is Apply for a manifest file (a path relative to the repository root,
// or absolute).
func (c *Cluster) ApplyFile(ctx context.Context, t testing.TB, namespace, path string) []*unstructured.Unstructured {
	t.Helper()
	if !strings.HasPrefix(path, "/") {
		path = RepoRoot() + "/" + path
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	return c.Apply(ctx, t, namespace, b)
}

// DecodeManifest splits a multi-document YAML or JSON manifest into objects,
// skipping empty documents.
func DecodeManifest(manifest []byte) ([]*unstructured.Unstructured, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// DumpNamespace logs the pods of a namespace (phase, container states, last log
// lines) and its events: what one needs to see why a test failed.
func (c *Cluster) DumpNamespace(ctx context.Context, t testing.TB, namespace string) {
	t.Helper()
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		t.Logf("dump %s: list pods: %v", namespace, err)
		return
	}
	for _, p := range pods.Items {
		t.Logf("pod %s/%s: phase=%s node=%s ip=%s", namespace, p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			t.Logf("  container %s: ready=%v restarts=%d state=%+v", s.Name, s.Ready, s.RestartCount, s.State)
			tail := int64(60)
			if logs, err := c.Clientset.CoreV1().Pods(namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: s.Name, TailLines: &tail}).DoRaw(ctx); err == nil {
				t.Logf("  logs %s:\n%s", s.Name, logs)
			}
		}
	}
	var events corev1.EventList
	if err := c.Client.List(ctx, &events, client.InNamespace(namespace)); err == nil {
		for _, e := range events.Items {
			t.Logf("event %s %s/%s: %s: %s", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
}

func describe(o client.Object) string { return fmt.Sprintf("%s/%s", o.GetNamespace(), o.GetName()) }

// WaitAccepts waits (at most limit) until addr accepts a TCP connection: a
// Service whose pods are Ready is reachable only once kube-proxy has
// programmed it.
func WaitAccepts(ctx context.Context, addr string, limit time.Duration) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, limit, true, func(ctx context.Context) (bool, error) {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			last = err
			return false, nil
		}
		_ = c.Close()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%s accepted no connection in %s: %v", addr, limit, last)
	}
	return nil
}
