package stack

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// podid up installs the chart only once the sts's fixed ClusterIP is free
// or already the sts Service's own; a Service being deleted, or another
// one, holding it is waited for and then named.
func TestWaitClusterIP(t *testing.T) {
	const ip = "10.96.0.100"
	held := func(ns, name string) *networkingv1.IPAddress {
		return &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: ip},
			Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: ns, Name: name}}}
	}
	sts := func(clusterIP string, deleting bool) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: podidNamespace, Name: "podid-sts"}, Spec: corev1.ServiceSpec{ClusterIP: clusterIP}}
		if deleting {
			s.DeletionTimestamp = &metav1.Time{Time: time.Now()}
			s.Finalizers = []string{"test/keep"}
		}
		return s
	}
	for _, tt := range []struct {
		name    string
		objs    []runtime.Object
		wantErr string
	}{
		{"free", nil, ""},
		{"the sts Service's own", []runtime.Object{held(podidNamespace, "podid-sts"), sts(ip, false)}, ""},
		{"the sts Service was just deleted", []runtime.Object{held(podidNamespace, "podid-sts")}, "still held by Service podid-system/podid-sts"},
		{"the sts Service is being deleted", []runtime.Object{held(podidNamespace, "podid-sts"), sts(ip, true)}, "still held by Service podid-system/podid-sts"},
		{"another Service", []runtime.Object{held("shop", "api")}, "still held by Service shop/api"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := &kube{cs: fake.NewClientset(tt.objs...)}
			err := waitClusterIP(context.Background(), k, ip, podidNamespace, "podid-sts", time.Second)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "sts.service.clusterIP") {
				t.Fatalf("error %v, want one naming %q and the value to change", err, tt.wantErr)
			}
		})
	}
}
