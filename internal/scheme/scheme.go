// Package scheme builds the runtime.Scheme every podid component uses: the
// core Kubernetes types plus aadpodidentity.k8s.io/v1.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	podidv1 "github.com/podid/podid/api/v1"
)

// New returns a fresh scheme; registration of static types cannot fail.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := podidv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
