package controller_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/controller"
	"github.com/podid/podid/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	os.Exit(testenv.Main(m, &env, testenv.Options{}))
}

// writes counts the API writes one controller replica makes.
type writes struct{ n atomic.Int64 }

func (w *writes) count() int64 { return w.n.Load() }

func (w *writes) newClient(cfg *rest.Config, opts client.Options) (client.Client, error) {
	c, err := client.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	return &countingClient{Client: c, n: &w.n}, nil
}

// countingClient counts every write request it sends.
type countingClient struct {
	client.Client
	n *atomic.Int64
}

func (c *countingClient) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	c.n.Add(1)
	return c.Client.Create(ctx, o, opts...)
}

func (c *countingClient) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	c.n.Add(1)
	return c.Client.Update(ctx, o, opts...)
}

func (c *countingClient) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	c.n.Add(1)
	return c.Client.Patch(ctx, o, p, opts...)
}

func (c *countingClient) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	c.n.Add(1)
	return c.Client.Delete(ctx, o, opts...)
}

func (c *countingClient) DeleteAllOf(ctx context.Context, o client.Object, opts ...client.DeleteAllOfOption) error {
	c.n.Add(1)
	return c.Client.DeleteAllOf(ctx, o, opts...)
}

func (c *countingClient) Status() client.SubResourceWriter { return c.SubResource("status") }

func (c *countingClient) SubResource(sub string) client.SubResourceClient {
	return &countingSubResource{SubResourceClient: c.Client.SubResource(sub), n: c.n}
}

type countingSubResource struct {
	client.SubResourceClient
	n *atomic.Int64
}

func (c *countingSubResource) Create(ctx context.Context, o, sub client.Object, opts ...client.SubResourceCreateOption) error {
	c.n.Add(1)
	return c.SubResourceClient.Create(ctx, o, sub, opts...)
}

func (c *countingSubResource) Update(ctx context.Context, o client.Object, opts ...client.SubResourceUpdateOption) error {
	c.n.Add(1)
	return c.SubResourceClient.Update(ctx, o, opts...)
}

func (c *countingSubResource) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	c.n.Add(1)
	return c.SubResourceClient.Patch(ctx, o, p, opts...)
}

// replica is one running controller process.
type replica struct {
	writes *writes
	stop   func()
	done   chan error
}

// startController runs a controller until the test ends (or stop is called).
func startController(t *testing.T, o controller.Options) *replica {
	t.Helper()
	e := env.Need(t)
	w := &writes{}
	o.NewClient = w.newClient
	o.SeveralInProcess = true
	if o.MetricsAddr == "" {
		o.MetricsAddr = "0"
	}
	if o.HealthAddr == "" {
		o.HealthAddr = "0"
	}
	if o.LeaderElection && o.LeaderElectionNamespace == "" {
		o.LeaderElectionNamespace = "default"
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := controller.NewManager(ctx, e.Config, e.Scheme, o)
	if err != nil {
		cancel()
		t.Fatalf("new manager: %v", err)
	}
	r := &replica{writes: w, done: make(chan error, 1)}
	go func() { r.done <- mgr.Start(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-r.done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("controller stopped with: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return r
}

// eventually polls cond until it holds or 30 s pass.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, cond); err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}

// assignments returns the AzureAssignedIdentities of a namespace keyed by name.
func assignments(ctx context.Context, t *testing.T, ns string) map[string]podidv1.AzureAssignedIdentity {
	t.Helper()
	var l podidv1.AzureAssignedIdentityList
	if err := env.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
		t.Fatalf("list assignments: %v", err)
	}
	out := map[string]podidv1.AzureAssignedIdentity{}
	for _, a := range l.Items {
		out[a.Name] = a
	}
	return out
}

// waitAssigned waits until ns holds exactly the named assignments.
func waitAssigned(t *testing.T, ns string, names ...string) map[string]podidv1.AzureAssignedIdentity {
	t.Helper()
	var got map[string]podidv1.AzureAssignedIdentity
	eventually(t, "assignments "+ns+" = "+join(names), func(ctx context.Context) (bool, error) {
		got = assignments(ctx, t, ns)
		if len(got) != len(names) {
			return false, nil
		}
		for _, n := range names {
			if _, ok := got[n]; !ok {
				return false, nil
			}
		}
		return true, nil
	})
	return got
}

func join(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}

func pod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "localhost/none:dev"}},
		},
	}
}

func identity(ns, name, clientID string) *podidv1.AzureIdentity {
	return &podidv1.AzureIdentity{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: podidv1.AzureIdentitySpec{
			Type:       podidv1.UserAssignedMSI,
			ClientID:   clientID,
			ResourceID: "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + name,
		},
	}
}

func bindingObj(ns, name, id, selector string) *podidv1.AzureIdentityBinding {
	return &podidv1.AzureIdentityBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       podidv1.AzureIdentityBindingSpec{AzureIdentity: id, Selector: selector},
	}
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(t.Context(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}
