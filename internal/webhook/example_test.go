package webhook_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/workloadidentity"
)

type oneSA struct{ sa *corev1.ServiceAccount }

func (o oneSA) ServiceAccount(ns, name string) *corev1.ServiceAccount {
	if ns == o.sa.Namespace && name == o.sa.Name {
		return o.sa
	}
	return nil
}

// A Handler answers AdmissionReviews; ServiceAccounts come from any cache
// (webhook.ServiceAccountCache in production).
func ExampleHandler() {
	h := webhook.NewHandler(webhook.HandlerConfig{
		Mutator: webhook.Mutator{AuthorityHost: "https://login.microsoftonline.com/"},
		ServiceAccounts: oneSA{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Name: "wi", Namespace: "apps",
			Annotations: map[string]string{workloadidentity.ClientIDAnnotation: "11111111-1111-1111-1111-111111111111"},
		}}},
	})
	review := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"42",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"namespace":"apps","operation":"CREATE","userInfo":{},"object":{"metadata":{"labels":{"azure.workload.identity/use":"true"}},` +
		`"spec":{"serviceAccountName":"wi","containers":[{"name":"app","image":"app"}]}}}}`
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, webhook.Path, strings.NewReader(review))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Code, strings.Contains(rec.Body.String(), `"allowed":true`), strings.Contains(rec.Body.String(), `"patchType":"JSONPatch"`))
	// Output: 200 true true
}
