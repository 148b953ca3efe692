package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ServiceAccountCache is an informer cache of all ServiceAccounts (a watch
// of ServiceAccounts only), trimmed to the fields the webhook reads.
type ServiceAccountCache struct {
	informer cache.SharedIndexInformer
}

var _ ServiceAccounts = (*ServiceAccountCache)(nil)

// NewServiceAccountCache assembles the cache; nothing is listed or watched
// until Run.
func NewServiceAccountCache(cs kubernetes.Interface) *ServiceAccountCache {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().ServiceAccounts(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.CoreV1().ServiceAccounts(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.ServiceAccount{}, 0, cache.Indexers{})
	_ = inf.SetTransform(trimServiceAccount) // cannot fail before Run
	return &ServiceAccountCache{informer: inf}
}

// trimServiceAccount keeps only name, namespace, uid, labels and annotations.
func trimServiceAccount(obj any) (any, error) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return obj, nil
	}
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: sa.Name, Namespace: sa.Namespace, UID: sa.UID, ResourceVersion: sa.ResourceVersion,
		Labels: sa.Labels, Annotations: sa.Annotations,
	}}, nil
}

// Run lists and watches until ctx ends.
func (c *ServiceAccountCache) Run(ctx context.Context) error {
	c.informer.RunWithContext(ctx)
	return nil
}

// HasSynced reports whether the initial list has been loaded.
func (c *ServiceAccountCache) HasSynced() bool { return c.informer.HasSynced() }

// WaitForSync blocks until the initial list is loaded or ctx ends.
func (c *ServiceAccountCache) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return fmt.Errorf("ServiceAccount cache did not sync: %w", context.Cause(ctx))
	}
	return nil
}

// ServiceAccount implements ServiceAccounts.
func (c *ServiceAccountCache) ServiceAccount(namespace, name string) *corev1.ServiceAccount {
	obj, ok, err := c.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	sa, _ := obj.(*corev1.ServiceAccount)
	return sa
}
