package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/cli"
	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/workloadidentity"
)

// world creates the objects of one doctor case.
type world struct {
	t   *testing.T
	c   *cluster
	ns  string
	cl  client.Client
	ids map[string]cli.Identity
}

func (w *world) identity(name string) cli.Identity {
	w.t.Helper()
	if id, ok := w.ids[name]; ok {
		return id
	}
	var id cli.Identity
	if err := json.Unmarshal([]byte(w.c.ok("identity", "create", name, "-o", "json")), &id); err != nil {
		w.t.Fatal(err)
	}
	w.ids[name] = id
	return id
}

func (w *world) fic(identity, sa string) {
	w.t.Helper()
	w.c.ok("fic", "create", "--identity", identity, "--service-account", w.ns+"/"+sa)
}

func (w *world) create(o client.Object) {
	w.t.Helper()
	if err := w.cl.Create(w.t.Context(), o); err != nil {
		w.t.Fatalf("create %T %s: %v", o, o.GetName(), err)
	}
}

func (w *world) sa(name, clientID string) {
	w.t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name}}
	if clientID != "" {
		sa.Annotations = map[string]string{workloadidentity.ClientIDAnnotation: clientID}
	}
	w.create(sa)
}

func podSpec(sa string) corev1.PodSpec {
	return corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}
}

// wiPod creates a pod the webhook mutates (polling until it serves).
func (w *world) wiPod(name, sa string) {
	w.t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: map[string]string{workloadidentity.UseLabel: "true"}}, Spec: podSpec(sa)}
	poll(w.t, 60*time.Second, func() error {
		p := pod.DeepCopy()
		if err := w.cl.Create(w.t.Context(), p, client.DryRunAll); err != nil {
			return err
		}
		if p.Annotations[webhook.InjectedAnnotation] == "" {
			return errors.New("not mutated yet")
		}
		return nil
	})
	w.create(pod)
}

// bindingPod is wiPod annotated for AKS identity bindings (served through
// the podid broker).
func (w *world) bindingPod(name, sa string) {
	w.t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: map[string]string{workloadidentity.UseLabel: "true"},
		Annotations: map[string]string{workloadidentity.UseIdentityBindingAnnotation: "true"}}, Spec: podSpec(sa)}
	poll(w.t, 60*time.Second, func() error {
		p := pod.DeepCopy()
		if err := w.cl.Create(w.t.Context(), p, client.DryRunAll); err != nil {
			return err
		}
		if p.Annotations[webhook.InjectedAnnotation] == "" {
			return errors.New("not mutated yet")
		}
		return nil
	})
	w.create(pod)
}

// brokerReady stands in for an installed broker: its Deployment with two
// ready replicas (no controller runs here to make them).
func (w *world) brokerReady() {
	w.t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": "podid-broker"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "podid-system", Name: "podid-broker"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec("podid-broker")}}}
	w.create(d)
	w.t.Cleanup(func() { _ = w.cl.Delete(context.Background(), d) })
	d.Status.Replicas, d.Status.ReadyReplicas = 2, 2
	if err := w.cl.Status().Update(w.t.Context(), d); err != nil {
		w.t.Fatal(err)
	}
}

// labelLater creates a pod without labels (so no webhook sees it) and
// labels it afterwards: a pod that asks for workload identity but was
// never mutated.
func (w *world) labelLater(name, sa string, labels map[string]string) {
	w.t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name}, Spec: podSpec(sa)}
	w.create(pod)
	pod.Labels = labels
	if err := w.cl.Update(w.t.Context(), pod); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) node() string { return "node-" + w.ns }

// v1Pod is a scheduled pod with the aadpodidbinding label.
func (w *world) v1Pod(name, sa, sel string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	w.t.Helper()
	spec := podSpec(sa)
	spec.NodeName = w.node()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: map[string]string{podidv1.PodLabelKey: sel}}, Spec: spec}
	for _, m := range mutate {
		m(pod)
	}
	w.create(pod)
	return pod
}

func (w *world) azureIdentity(ns, name, clientID string) {
	w.t.Helper()
	w.create(&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: clientID}})
}

func (w *world) binding(ns, name, identity, sel string) {
	w.t.Helper()
	w.create(&podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: identity, Selector: sel}})
}

func (w *world) assigned(pod *corev1.Pod, identity, binding, clientID string) {
	w.t.Helper()
	w.create(&podidv1.AzureAssignedIdentity{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: pod.Name + "-" + identity},
		Spec: podidv1.AzureAssignedIdentitySpec{
			AzureIdentityRef: &podidv1.IdentityRef{Name: identity, Namespace: w.ns, Spec: podidv1.AzureIdentitySpec{ClientID: clientID}},
			AzureBindingRef:  &podidv1.BindingRef{Name: binding, Namespace: w.ns},
			Pod:              pod.Name, PodNamespace: w.ns, PodUID: string(pod.UID), NodeName: w.node(),
		},
		Status: podidv1.AzureAssignedIdentityStatus{Status: "Assigned"},
	})
}

// agent runs a (stand-in) agent pod on the case's node, ready or not.
func (w *world) agent(ready bool) {
	w.t.Helper()
	spec := podSpec("")
	spec.NodeName = w.node()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "podid-system", Name: "podid-agent-" + w.ns,
		Labels: map[string]string{"app.kubernetes.io/name": "podid-agent"}}, Spec: spec}
	w.create(p)
	w.t.Cleanup(func() { _ = w.cl.Delete(w.t.Context(), p) })
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := w.cl.Status().Update(w.t.Context(), p); err != nil {
			w.t.Fatal(err)
		}
	}
}

// v1Ready is a v1 pod with everything up to the federated credential.
func (w *world) v1Ready() *corev1.Pod {
	id := w.identity("web")
	w.sa("app", "")
	w.azureIdentity(w.ns, "web", id.ClientID)
	w.binding(w.ns, "web-binding", "web", "web")
	pod := w.v1Pod("p", "app", "web")
	w.assigned(pod, "web", "web-binding", id.ClientID)
	w.agent(true)
	return pod
}

func TestDoctor(t *testing.T) {
	c := startCluster(t)
	for _, tc := range []struct {
		name  string
		setup func(w *world)
		code  int
		lines []string // each must be printed
		fix   string   // in the one fix line printed
	}{
		{
			name: "no identity at all",
			setup: func(w *world) {
				w.sa("app", "")
				w.create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "p"}, Spec: podSpec("app")})
			},
			code:  1,
			lines: []string{"✗ pod uses no identity: no aadpodidbinding label, no azure.workload.identity/use=true label"},
			fix:   "podid serviceaccount create -n NS --name app --identity <identity>",
		},
		{
			name: "service account deleted",
			setup: func(w *world) {
				w.sa("app", w.identity("web").ClientID)
				w.wiPod("p", "app")
				if err := w.cl.Delete(w.t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "app"}}); err != nil {
					w.t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{"✗ ServiceAccount NS/app does not exist"},
			fix:   "podid serviceaccount create -n NS --name app",
		},
		{
			name: "no client id annotation",
			setup: func(w *world) {
				w.sa("app", "")
				w.labelLater("p", "app", map[string]string{workloadidentity.UseLabel: "true"})
			},
			code:  1,
			lines: []string{"✓ ServiceAccount NS/app exists", "✗ ServiceAccount NS/app has no azure.workload.identity/client-id annotation"},
			fix:   "kubectl -n NS annotate serviceaccount app azure.workload.identity/client-id=<client id>",
		},
		{
			name: "client id not a GUID",
			setup: func(w *world) {
				w.sa("app", "my-identity")
				w.labelLater("p", "app", map[string]string{workloadidentity.UseLabel: "true"})
			},
			code:  1,
			lines: []string{`✗ ServiceAccount NS/app annotation azure.workload.identity/client-id="my-identity" is not a GUID`},
			fix:   "annotate --overwrite",
		},
		{
			name: "pod without use label",
			setup: func(w *world) {
				w.sa("app", w.identity("web").ClientID)
				w.labelLater("p", "app", map[string]string{"app": "web"})
			},
			code:  1,
			lines: []string{"✓ ServiceAccount NS/app names client id", `✗ pod has no label azure.workload.identity/use: "true"`},
			fix:   "add `azure.workload.identity/use: \"true\"` to the pod template's metadata.labels",
		},
		{
			name: "not mutated by the webhook",
			setup: func(w *world) {
				w.sa("app", w.identity("web").ClientID)
				w.labelLater("p", "app", map[string]string{workloadidentity.UseLabel: "true"})
			},
			code:  1,
			lines: []string{"✓ pod has label azure.workload.identity/use=true", "✗ webhook injection missing: container app has no AZURE_CLIENT_ID"},
			fix:   "recreate the pod",
		},
		{
			name: "service account changed after the pod started",
			setup: func(w *world) {
				w.sa("app", w.identity("web").ClientID)
				w.wiPod("p", "app")
				sa := &corev1.ServiceAccount{}
				_ = w.cl.Get(w.t.Context(), types.NamespacedName{Namespace: w.ns, Name: "app"}, sa)
				sa.Annotations[workloadidentity.ClientIDAnnotation] = w.identity("api").ClientID
				if err := w.cl.Update(w.t.Context(), sa); err != nil {
					w.t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{"✓ webhook injected AZURE_CLIENT_ID", "but the ServiceAccount now names"},
			fix:   "recreate the pod",
		},
		{
			name:  "identity unknown to the provider",
			setup: func(w *world) { w.sa("app", "0e9f1a36-1111-4222-8333-444455556666"); w.wiPod("p", "app") },
			code:  1,
			lines: []string{"✓ authority https://", "✗ no identity with client id 0e9f1a36-1111-4222-8333-444455556666 in subscription"},
			fix:   "podid identity create <name>",
		},
		{
			name:  "no federated credential",
			setup: func(w *world) { w.sa("app", w.identity("web").ClientID); w.wiPod("p", "app") },
			code:  1,
			lines: []string{"✗ identity web has no federated credential for issuer ISSUER, subject system:serviceaccount:NS:app, audience api://AzureADTokenExchange"},
			fix:   "podid federated-credential create --identity web -g rg --service-account NS/app",
		},
		{
			name: "federated credential with the wrong case",
			setup: func(w *world) {
				id := w.identity("web")
				w.sa("app", id.ClientID)
				w.wiPod("p", "app")
				if _, err := w.c.sts.PutFederatedCredential(w.t.Context(), id.ClientID, store.FederatedCredential{Name: "upper", Issuer: w.c.issuer, Subject: "system:serviceaccount:" + strings.ToUpper(w.ns) + ":app"}); err != nil {
					w.t.Fatal(err)
				}
			},
			code:  1,
			lines: []string{`(upper has subject "system:serviceaccount:` + "UPPERNS" + `:app" (matching is case-sensitive))`},
			fix:   "podid federated-credential create",
		},
		{
			name:  "workload identity works",
			setup: func(w *world) { w.sa("app", w.identity("web").ClientID); w.fic("web", "app"); w.wiPod("p", "app") },
			code:  0,
			lines: []string{
				"pod NS/p (workload-identity)",
				"✓ webhook injected AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST and a projected token (audience api://AzureADTokenExchange, 3600s)",
				"✓ identity web trusts system:serviceaccount:NS:app from ISSUER",
				"✓ the identity provider issued a token for client",
			},
		},
		{
			name: "v1: selector differs in case",
			setup: func(w *world) {
				w.azureIdentity(w.ns, "web", w.identity("web").ClientID)
				w.binding(w.ns, "web-binding", "web", "Web")
				w.v1Pod("p", "app", "web")
			},
			code:  1,
			lines: []string{"✓ pod has label aadpodidbinding=web", `✗ no AzureIdentityBinding selects aadpodidbinding=web in namespace NS (binding NS/web-binding has selector "Web": selectors are case-sensitive)`},
			fix:   "kind: AzureIdentityBinding",
		},
		{
			name: "v1: binding in another namespace",
			setup: func(w *world) {
				other := env.Namespace(w.t)
				w.azureIdentity(other, "web", w.identity("web").ClientID)
				w.binding(other, "web-binding", "web", "web")
				w.v1Pod("p", "app", "web")
			},
			code:  1,
			lines: []string{`selects "web" but is in namespace t-`, "bindings select pods of their own namespace"},
			fix:   "kubectl apply -f -",
		},
		{
			name:  "v1: hostNetwork",
			setup: func(w *world) { w.v1Pod("p", "app", "web", func(p *corev1.Pod) { p.Spec.HostNetwork = true }) },
			code:  1,
			lines: []string{"✗ pod uses hostNetwork"},
			fix:   "use workload identity (podid migrate)",
		},
		{
			name:  "v1: identity missing",
			setup: func(w *world) { w.binding(w.ns, "web-binding", "ghost", "web"); w.v1Pod("p", "app", "web") },
			code:  1,
			lines: []string{"✓ binding(s) NS/web-binding select the pod", `✗ binding NS/web-binding names AzureIdentity "ghost", which does not exist in namespace NS`},
			fix:   "create it or fix spec.azureIdentity",
		},
		{
			name: "v1: identity invalid",
			setup: func(w *world) {
				w.azureIdentity(w.ns, "web", "")
				w.binding(w.ns, "web-binding", "web", "web")
				w.v1Pod("p", "app", "web")
			},
			code:  1,
			lines: []string{"✗ AzureIdentity NS/web is invalid: spec.clientID is empty"},
			fix:   "az identity show --query clientId",
		},
		{
			name: "v1: excepted",
			setup: func(w *world) {
				w.azureIdentity(w.ns, "web", w.identity("web").ClientID)
				w.binding(w.ns, "web-binding", "web", "web")
				w.create(&podidv1.AzurePodIdentityException{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "no-aad"},
					Spec: podidv1.AzurePodIdentityExceptionSpec{PodLabels: map[string]podidv1.LabelValue{"noaad": "true"}}})
				w.v1Pod("p", "app", "web", func(p *corev1.Pod) { p.Labels["noaad"] = "true" })
			},
			code:  1,
			lines: []string{"✓ AzureIdentity NS/web: UserAssignedMSI", "✗ AzurePodIdentityException NS/no-aad excepts the pod"},
			fix:   "delete azurepodidentityexception no-aad",
		},
		{
			name: "v1: not assigned",
			setup: func(w *world) {
				w.azureIdentity(w.ns, "web", w.identity("web").ClientID)
				w.binding(w.ns, "web-binding", "web", "web")
				w.v1Pod("p", "app", "web")
			},
			code:  1,
			lines: []string{"✓ no AzurePodIdentityException excepts the pod", "✗ no AzureAssignedIdentity for the pod and identity NS/web"},
			fix:   "kubectl -n podid-system logs deploy/podid-controller",
		},
		{
			name: "v1: no agent on the node",
			setup: func(w *world) {
				id := w.identity("web")
				w.azureIdentity(w.ns, "web", id.ClientID)
				w.binding(w.ns, "web-binding", "web", "web")
				w.assigned(w.v1Pod("p", "app", "web"), "web", "web-binding", id.ClientID)
			},
			code:  1,
			lines: []string{"✓ AzureAssignedIdentity p-web is Assigned on node node-NS", "✗ no podid agent runs on node node-NS"},
			fix:   "kubectl -n podid-system get daemonset podid-agent",
		},
		{
			name: "v1: agent not ready",
			setup: func(w *world) {
				id := w.identity("web")
				w.azureIdentity(w.ns, "web", id.ClientID)
				w.binding(w.ns, "web-binding", "web", "web")
				w.assigned(w.v1Pod("p", "app", "web"), "web", "web-binding", id.ClientID)
				w.agent(false)
			},
			code:  1,
			lines: []string{"✗ agent podid-system/podid-agent-NS on node node-NS is not ready"},
			fix:   "kubectl -n podid-system logs podid-agent-NS",
		},
		{
			name:  "v1: no federated credential",
			setup: func(w *world) { w.v1Ready() },
			code:  1,
			lines: []string{"✓ agent podid-system/podid-agent-NS is ready on node node-NS", "✗ identity web has no federated credential for issuer ISSUER, subject system:serviceaccount:NS:app"},
			fix:   "podid federated-credential create --identity web -g rg --service-account NS/app",
		},
		{
			name:  "pod identity works",
			setup: func(w *world) { w.v1Ready(); w.fic("web", "app") },
			code:  0,
			lines: []string{"pod NS/p (pod-identity)", "✓ identity web trusts system:serviceaccount:NS:app",
				"✓ no pod outside the binding runs as ServiceAccount NS/app", "✓ the identity provider issued a token for client"},
		},
		{
			// The credential trusts the account, not the binding: a pod of the
			// same ServiceAccount without the label can exchange its own token.
			name: "pod identity works, ServiceAccount shared with unbound pods",
			setup: func(w *world) {
				w.v1Ready()
				w.fic("web", "app")
				w.create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "unbound"}, Spec: podSpec("app")})
				w.v1Pod("other-selector", "app", "db")
			},
			code: 0,
			lines: []string{"! pods the binding does not select also run as ServiceAccount NS/app (other-selector, unbound): the federated credential lets each of them exchange its own token for identity",
				"✓ the identity provider issued a token for client"},
		},
		{
			name: "identity binding: the broker refuses, no RBAC grant",
			setup: func(w *world) {
				w.sa("app", w.identity("web").ClientID)
				w.bindingPod("p", "app")
			},
			code:  1,
			lines: []string{"✓ webhook injected AZURE_CLIENT_ID=", "✗ the broker refuses this pod: system:serviceaccount:NS:app may not use-managed-identity resource"},
			fix:   "podid identity bind <identity> --service-account NS/app",
		},
		{
			name: "identity binding: granted, broker not installed",
			setup: func(w *world) {
				w.identity("web")
				w.c.ok("identity", "bind", "web", "--service-account", w.ns+"/app")
				w.bindingPod("p", "app")
			},
			code:  1,
			lines: []string{"✓ system:serviceaccount:NS:app may use-managed-identity", "✗ the podid broker is not installed in podid-system"},
			fix:   "--set broker.enabled=true",
		},
		{
			name: "identity binding: granted, broker ready, one credential",
			setup: func(w *world) {
				w.identity("web")
				w.c.ok("identity", "bind", "web", "--service-account", w.ns+"/app")
				w.bindingPod("p", "app")
				w.brokerReady()
			},
			code:  0,
			lines: []string{"✓ podid broker: 2 of 2 replicas ready", "✓ identity web trusts system:serviceaccount:podid-system:podid-broker from ISSUER (credential podid-broker)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := env.Namespace(t)
			w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
			tc.setup(w)
			r := c.podid("doctor", "pod/p", "-n", ns)
			out := r.stdout
			expand := strings.NewReplacer("NS", ns, "ISSUER", c.issuer, "UPPERNS", strings.ToUpper(ns))
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr: %s", r.code, tc.code, out, r.stderr)
			}
			for _, l := range tc.lines {
				if !strings.Contains(out, expand.Replace(l)) {
					t.Errorf("output lacks %q:\n%s", expand.Replace(l), out)
				}
			}
			fixes := strings.Count(out, "    fix: ")
			if tc.fix != "" && (fixes == 0 || !strings.Contains(out[strings.Index(out, "    fix: "):], expand.Replace(tc.fix))) {
				t.Errorf("fix lacks %q:\n%s", expand.Replace(tc.fix), out)
			}
			if tc.code == 0 && (strings.Contains(out, "✗") || fixes != 0) {
				t.Errorf("working pod reports a failure:\n%s", out)
			}
			if tc.code != 0 && !strings.Contains(r.stderr, "check(s) failed") {
				t.Errorf("stderr %q", r.stderr)
			}
			// Never a token: no JWT-looking string in any output.
			if strings.Contains(out+r.stderr, "eyJ") {
				t.Errorf("output contains a JWT:\n%s", out)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		ns := env.Namespace(t)
		w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
		w.sa("app", "")
		w.labelLater("p", "app", map[string]string{workloadidentity.UseLabel: "true"})
		r := c.podid("doctor", "p", "-n", ns, "-o", "json")
		var rep cli.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("%v\n%s", err, r.stdout)
		}
		if rep.Model != "workload-identity" || rep.Failed() == 0 || rep.Findings[1].Check != "serviceaccount.client-id" || rep.Findings[1].Fix == "" {
			t.Errorf("report %+v", rep)
		}
	})
	t.Run("no-exchange", func(t *testing.T) {
		ns := env.Namespace(t)
		w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
		w.sa("app", w.identity("web").ClientID)
		w.fic("web", "app")
		w.wiPod("p", "app")
		r := c.podid("doctor", "p", "-n", ns, "--no-exchange")
		if r.code != 0 || !strings.Contains(r.stdout, "- token exchange skipped (--no-exchange)") {
			t.Errorf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("viewer without token permission", func(t *testing.T) {
		// A user who may read pods and service accounts but not create
		// serviceaccounts/token gets every check but the exchange, which says why.
		ns := env.Namespace(t)
		w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
		w.sa("app", w.identity("web").ClientID)
		w.fic("web", "app")
		w.wiPod("p", "app")
		au, err := env.Env.AddUser(envtest.User{Name: "viewer-" + ns}, nil)
		if err != nil {
			t.Fatal(err)
		}
		kc, err := au.KubeConfig()
		if err != nil {
			t.Fatal(err)
		}
		subj := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "viewer-" + ns}}
		// What the view role grants on these kinds (envtest runs no
		// aggregation controller, so view itself is empty here).
		w.create(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "view"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "serviceaccounts"}, Verbs: []string{"get", "list", "watch"}}}})
		w.create(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "view"}, Subjects: subj,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "view"}})
		crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "issuer-discovery-" + ns}, Subjects: subj,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"}}
		w.create(crb)
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), crb) })
		v := &user{t: t, xdg: c.xdg, kubeconfig: ststest.WriteFile(t, "viewer.kubeconfig", kc)}
		var r result
		// RBAC sees new bindings once its informer has them.
		poll(t, 30*time.Second, func() error {
			r = v.podid("doctor", "p", "-n", ns)
			if !strings.Contains(r.stdout, "✓ identity web trusts") {
				return fmt.Errorf("not yet: %s%s", r.stdout, r.stderr)
			}
			return nil
		})
		if r.code != 0 || !strings.Contains(r.stdout, "! token exchange not tried: you may not create serviceaccounts/token in "+ns) {
			t.Errorf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown pod", []string{"doctor", "pod/nope", "-n", "default"}, "pod default/nope not found"},
		{"malformed name", []string{"doctor", "pod/Bad_Name"}, `pod name "Bad_Name"`},
		{"other kind", []string{"doctor", "deploy/web"}, "want pod/NAME or NAME"},
		{"no argument", []string{"doctor"}, "accepts 1 arg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(tc.args...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want 1 and one line with %q", r.code, r.stderr, tc.want)
			}
		})
	}
	t.Run("exchange refused", func(t *testing.T) {
		// A user who may not read identities (wrong secret) still gets the
		// exchange, and the provider's answer explained.
		ns := env.Namespace(t)
		w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
		w.sa("app", w.identity("web").ClientID)
		w.wiPod("p", "app")
		u := &user{t: t, xdg: t.TempDir(), kubeconfig: c.kubeconfig}
		wrong := ststest.WriteFile(t, "wrong", []byte("wrong-secret"))
		u.ok("config", "set-cloud", "local", "--authority", c.sts.URL, "--ca-file", c.sts.CAFile, "--tenant-id", c.sts.TenantID,
			"--client-id", ststest.AdminClientID, "--client-secret-file", wrong, "--subscription", ststest.SubscriptionID)
		r := u.podid("doctor", "p", "-n", ns)
		for _, want := range []string{
			"! federated credential not looked up:", "AADSTS7000215: the client secret is wrong",
			// "web" has credentials from the tests above, none for this subject.
			"✗ the identity provider refused the exchange: AADSTS700213: no federated credential matches the subject",
			"fix: check the federated credential of client " + w.identity("web").ClientID + ": issuer = the cluster's, subject system:serviceaccount:" + ns + ":app",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, r.stdout)
			}
		}
		if r.code != 1 {
			t.Errorf("exit %d", r.code)
		}
	})
	t.Run("pod names its own authority", func(t *testing.T) {
		// Adversary: the pod's author sets AZURE_AUTHORITY_HOST to a server
		// they control. doctor, run by an admin, must not send a freshly
		// minted token (or any request) there.
		var hits atomic.Int64 // connections, even ones whose TLS handshake fails
		evil := httptest.NewUnstartedServer(http.NotFoundHandler())
		evil.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				hits.Add(1)
			}
		}
		evil.StartTLS()
		defer evil.Close()
		ns := env.Namespace(t)
		w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
		id := w.identity("web")
		w.sa("app", id.ClientID)
		w.fic("web", "app")
		exp := int64(3600)
		spec := podSpec("app")
		spec.Containers[0].Env = []corev1.EnvVar{
			{Name: workloadidentity.EnvClientID, Value: id.ClientID}, {Name: workloadidentity.EnvTenantID, Value: c.sts.TenantID},
			{Name: workloadidentity.EnvFederatedTokenFile, Value: workloadidentity.TokenFile}, {Name: workloadidentity.EnvAuthorityHost, Value: evil.URL + "/"},
		}
		spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: workloadidentity.TokenVolumeName, MountPath: workloadidentity.TokenDir, ReadOnly: true}}
		spec.Volumes = []corev1.Volume{{Name: workloadidentity.TokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: cli.ExchangeAudience, ExpirationSeconds: &exp, Path: workloadidentity.TokenFileName}}}}}}}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, Spec: spec}
		w.create(pod)
		pod.Labels = map[string]string{workloadidentity.UseLabel: "true"}
		if err := w.cl.Update(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		r := c.podid("doctor", "p", "-n", ns)
		if r.code != 1 || !strings.Contains(r.stdout, fmt.Sprintf("✗ the pod's AZURE_AUTHORITY_HOST %q is neither the configured authority nor an Entra cloud", evil.URL+"/")) {
			t.Errorf("exit %d:\n%s", r.code, r.stdout)
		}
		if n := hits.Load(); n != 0 {
			t.Fatalf("doctor opened %d connection(s) to the pod's authority", n)
		}
		// Allowed explicitly, it is contacted (so the refusal above was the check).
		r = c.podid("doctor", "p", "-n", ns, "--allow-authority", evil.URL)
		if hits.Load() == 0 || !strings.Contains(r.stdout, "is not reachable from here") {
			t.Errorf("with --allow-authority: %d hits, exit %d:\n%s", hits.Load(), r.code, r.stdout)
		}
	})
	t.Run("untrusted authority", func(t *testing.T) {
		ns := env.Namespace(t)
		w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
		w.sa("app", w.identity("web").ClientID)
		w.wiPod("p", "app")
		// A user whose config trusts another CA than the sts's.
		u := &user{t: t, xdg: t.TempDir(), kubeconfig: c.kubeconfig}
		other := ststest.WriteFile(t, "other-ca.pem", env.Config.CAData)
		u.ok("config", "set-cloud", "local", "--authority", c.sts.URL, "--ca-file", other, "--tenant-id", c.sts.TenantID, "--client-id", ststest.AdminClientID)
		r := u.podid("doctor", "p", "-n", ns)
		if r.code != 1 || !strings.Contains(r.stdout, fmt.Sprintf("✗ authority %s/ (tenant %s) is not reachable from here", c.sts.URL, c.sts.TenantID)) ||
			!strings.Contains(r.stdout, "fix: check the authority runs and that the podid config's caFile") {
			t.Errorf("exit %d:\n%s", r.code, r.stdout)
		}
	})
}
