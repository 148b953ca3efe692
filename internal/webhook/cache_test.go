package webhook

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podid/podid/internal/workloadidentity"
)

func TestServiceAccountCache(t *testing.T) {
	cs := fake.NewClientset(&corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "wi", Namespace: "ns", Annotations: map[string]string{workloadidentity.ClientIDAnnotation: "a"}},
		Secrets:    []corev1.ObjectReference{{Name: "legacy-token"}},
	})
	c := NewServiceAccountCache(cs)
	if c.ServiceAccount("ns", "wi") != nil {
		t.Fatal("cache answers before Run")
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := c.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	sa := c.ServiceAccount("ns", "wi")
	if sa == nil || sa.Annotations[workloadidentity.ClientIDAnnotation] != "a" || len(sa.Secrets) != 0 {
		t.Fatalf("cached SA = %+v (want trimmed, with annotations)", sa)
	}
	if c.ServiceAccount("ns", "nope") != nil || c.ServiceAccount("other", "wi") != nil {
		t.Error("found a ServiceAccount that does not exist")
	}
	// Updates arrive through the watch.
	upd := sa.DeepCopy()
	upd.Annotations = map[string]string{workloadidentity.ClientIDAnnotation: "b"}
	if _, err := cs.CoreV1().ServiceAccounts("ns").Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.ServiceAccount("ns", "wi").Annotations[workloadidentity.ClientIDAnnotation] != "b" {
		if time.Now().After(deadline) {
			t.Fatal("update not seen within 10s")
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
