package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/broker"
	"github.com/podid/podid/internal/cli"
	"github.com/podid/podid/internal/workloadidentity"
)

// `podid identity bind`: one federated credential (the broker's) however
// many namespaces, and the RBAC grant the broker checks; idempotent.
func TestIdentityBind(t *testing.T) {
	c := startCluster(t)
	var id cli.Identity
	_ = json.Unmarshal([]byte(c.ok("identity", "create", "shared", "-o", "json")), &id)
	var nss []string
	args := []string{"identity", "bind", "shared"}
	for range 3 {
		ns := env.Namespace(t)
		nss = append(nss, ns)
		args = append(args, "--service-account", ns+"/app")
	}
	out := c.ok(args...)
	for _, want := range []string{
		"created podid-broker on identity shared (issuer " + c.issuer + ", subject system:serviceaccount:podid-system:podid-broker)",
		"created ClusterRole podid-use-" + id.ClientID,
		"created RoleBinding " + nss[2] + "/podid-use-" + id.ClientID,
		"created ServiceAccount " + nss[0] + "/app",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out = c.ok(args...)
	for _, want := range []string{"already trusts system:serviceaccount:podid-system:podid-broker", "ClusterRole podid-use-" + id.ClientID + " unchanged",
		"already grants system:serviceaccount:" + nss[1] + ":app", "ServiceAccount " + nss[1] + "/app unchanged"} {
		if !strings.Contains(out, want) {
			t.Errorf("second run lacks %q:\n%s", want, out)
		}
	}
	var fs []cli.FederatedCredential
	_ = json.Unmarshal([]byte(c.ok("fic", "list", "--identity", "shared", "-o", "json")), &fs)
	if len(fs) != 1 {
		t.Fatalf("federated credentials for 3 namespaces: %+v, want the broker's one", fs)
	}
	for _, ns := range nss {
		sa, err := c.cs.CoreV1().ServiceAccounts(ns).Get(t.Context(), "app", metav1.GetOptions{})
		if err != nil || sa.Annotations[workloadidentity.ClientIDAnnotation] != id.ClientID {
			t.Fatalf("ServiceAccount %s/app: %v %v", ns, sa, err)
		}
		// What the broker asks the authorizer.
		allowed := func(user string) bool {
			var ok bool
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(50 * time.Millisecond) {
				sar, err := c.cs.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
					ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: broker.AccessGroup, Resource: strings.ToLower(id.ClientID), Verb: broker.AccessVerb}}}, metav1.CreateOptions{})
				ok = err == nil && sar.Status.Allowed
			}
			return ok
		}
		if !allowed("system:serviceaccount:" + ns + ":app") {
			t.Errorf("%s/app is not granted %s on %s", ns, broker.AccessVerb, id.ClientID)
		}
	}
	if r := c.podid("identity", "bind", "shared"); r.code == 0 || !strings.Contains(r.stderr, "--service-account") {
		t.Errorf("bind without --service-account: exit %d %s", r.code, r.stderr)
	}
}
