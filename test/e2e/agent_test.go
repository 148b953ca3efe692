package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/intercept"
	"github.com/podid/podid/internal/sts/tokenverify"
	"github.com/podid/podid/test/e2e/framework"
)

const (
	agentNamespace  = "podid-system"
	agentDaemonSet  = "podid-agent"
	agentPort       = "2579" // deploy/agent/daemonset.yaml --port
	miClientImage   = "localhost/podid-miclient:dev"
	spooferImage    = "localhost/podid-spoofer:dev"
	imdsTokenPath   = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + wiResource
	agentV1Selector = "podid-e2e-v1"
	// agentMultiSelector selects pods for two identities at once, both
	// trusting agentMultiSA.
	agentMultiSelector = "podid-e2e-multi"
	agentMultiSA       = "sa-multi"
	// agentAuthority is the sts as the agent (hostNetwork) reaches it: the
	// Service's ClusterIP, which kube-proxy also translates for host
	// processes, and which the sts certificate names.
	agentAuthority = "https://" + stsServiceIP
)

// TestAgent proves podid agent end to end on the real node: podid sts
// (deploy/sts) trusts the cluster's issuer; podid agent runs as
// deploy/agent ships it (the kustomization's resources in order, only its
// two ConfigMaps filled for this cluster, see deployAgent); pods running the
// unmodified azidentity.ManagedIdentityCredential (test/e2e/images/miclient,
// no endpoint override) reach http://169.254.169.254 only through the
// agent's interception rule, and the access tokens they get verify against
// the sts's JWKS.
//
// Steps: 00 sts, 01 CRDs, 02 webhook (deploy/webhook, for the agent token
// guard) and agent (DaemonSet Ready), 03 identities and bindings, 04 cases:
// v1 binding, no binding, v2 service account, hostNetwork pod, binding of
// another namespace, excepted pod, two identities chosen by client_id, IP
// reused by a new pod, a stale CNI record for a live pod's address, a NET_ADMIN pod spoofing another's address and MAC,
// default-capability pods claiming a victim's address by ARP and speaking
// TCP by hand from it (with the controls: the same program from its own
// address, and with the guard removed), first token at container start, an
// API-server outage, the agent's credential read from the node refused
// for a pod of another node, agent restarted under load, and last agent
// gone (fail closed: nothing reaches a stand-in metadata service on the
// node, which the same request does reach once the rules are removed).
func TestAgent(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if !nodeHasImage(ctx, t, c, miClientImage) {
		t.Fatalf("image %s not imported: run hack/image.sh miclient", miClientImage)
	}
	ns := c.Namespace(t)

	// Identities in the sts: each trusts exactly one service account of ns.
	v1 := wiWorkload{name: "v1", sa: "sa-v1", fic: true, clientID: newUUID(t)}
	v2 := wiWorkload{name: "v2", sa: "sa-v2", fic: true, clientID: newUUID(t)}
	for _, w := range []*wiWorkload{&v1, &v2} {
		w.subject = "system:serviceaccount:" + ns + ":" + w.sa
	}
	// Two identities for one selector, both trusting agentMultiSA (sa only
	// names the sts identity here: deploySTS names identities after it).
	multiX := wiWorkload{name: "multi-x", sa: "multi-x", fic: true, clientID: newUUID(t)}
	multiY := wiWorkload{name: "multi-y", sa: "multi-y", fic: true, clientID: newUUID(t)}
	for _, w := range []*wiWorkload{&multiX, &multiY} {
		w.subject = "system:serviceaccount:" + ns + ":" + agentMultiSA
	}

	// 00: the sts.
	start := time.Now()
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, []wiWorkload{v1, v2, multiX, multiY})
	stsTransport, caPEM := stsClientTransport(ctx, t, stsPodIP)
	t.Logf("00 sts ready at %s (%s)", stsPodIP, time.Since(start).Round(time.Millisecond))

	// 01: the pod-identity CRDs (no controller: the agent reads the objects).
	start = time.Now()
	applyCRDs(ctx, t, c)
	t.Logf("01 CRDs established (%s)", time.Since(start).Round(time.Millisecond))

	// 02: the agent. Its interception rules outlive it by design; this test
	// removes them from the node (it runs on the node, as root) once the
	// agent is gone, so that no later test meets them.
	start = time.Now()
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), framework.PodTimeout+30*time.Second)
		defer cancel()
		if t.Failed() {
			c.DumpNamespace(ctx, t, agentNamespace) // the agent's log says why a pod was not guarded
		}
		deleteAgent(ctx, t, c)
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
		if g, err := intercept.NewGuard(intercept.GuardConfig{}); err != nil || g.Uninstall(ctx) != nil {
			t.Errorf("remove the agent's anti-spoofing rules from the node: %v", err)
		}
	})
	// The webhook first: it serves the agent token guard, which scopes every
	// TokenRequest the agent makes to pods on its node.
	deployWebhook(ctx, t, c)
	deployAgent(ctx, t, c, caPEM)
	if ok, err := rules.Check(ctx); err != nil || !ok {
		t.Fatalf("agent Ready but its interception rules are not on the node (ok=%v, err=%v)", ok, err)
	}
	t.Logf("02 webhook (token guard) and agent DaemonSet ready (%s)", time.Since(start).Round(time.Millisecond))

	// 03: the v1 identities and bindings, the service accounts.
	applyV1Identity(ctx, t, c, ns, "id-v1", v1.clientID, agentV1Selector)
	applyV1Identity(ctx, t, c, ns, "id-multi-x", multiX.clientID, agentMultiSelector)
	applyV1Identity(ctx, t, c, ns, "id-multi-y", multiY.clientID, agentMultiSelector)
	applyServiceAccount(ctx, t, c, ns, v1.sa, nil)
	applyServiceAccount(ctx, t, c, ns, agentMultiSA, nil)
	applyServiceAccount(ctx, t, c, ns, v2.sa, map[string]string{
		"azure.workload.identity/client-id": v2.clientID, "azure.workload.identity/tenant-id": wiTenantID,
	})

	// 04: the cases, in order; "agent-gone" must stay last.
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"v1-binding", func(t *testing.T) {
			pod := miClientPod(ns, "v1-bound", v1.sa, map[string]string{podidv1.PodLabelKey: agentV1Selector})
			pod = c.CreatePod(ctx, t, pod)
			verifyPodToken(ctx, t, c, stsTransport, pod, v1.clientID)
		}},
		{"no-binding-denied", func(t *testing.T) {
			// Same service account (its FIC exists), no aadpodidbinding label:
			// the agent must refuse before any exchange.
			pod := miClientPod(ns, "unbound", v1.sa, nil, "-max-retries=-1")
			pod = c.CreatePod(ctx, t, pod)
			line := waitForNoIdentity(ctx, t, c, pod)
			t.Logf("azidentity reported: %s", line)
		}},
		{"v2-service-account", func(t *testing.T) {
			pod := miClientPod(ns, "v2-wi", v2.sa, map[string]string{"azure.workload.identity/use": "true"})
			pod = c.CreatePod(ctx, t, pod)
			verifyPodToken(ctx, t, c, stsTransport, pod, v2.clientID)
		}},
		{"host-network-denied", func(t *testing.T) {
			// Labelled for the binding, but sharing the node's network: its
			// traffic is not in the pod CIDR, so it is not intercepted; it
			// calls the agent's listener directly and must get 403.
			pod := framework.TestClientPod(ns, "host-net")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Spec.HostNetwork = true
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod = c.CreatePod(ctx, t, pod)
			url := "http://" + c.NodeIP + ":" + agentPort + imdsTokenPath
			out, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", "-H", "Metadata: true", url)
			if err != nil {
				t.Fatalf("hostNetwork pod could not reach the agent: %v", err)
			}
			if !strings.HasPrefix(out, "status=403\n") || !strings.Contains(out, `"error"`) || strings.Contains(out, "access_token") {
				t.Fatalf("hostNetwork pod got %q, want status=403 with a JSON error and no token", firstLine(out))
			}
			t.Logf("hostNetwork pod: %s %s", firstLine(out), strings.TrimSpace(strings.TrimPrefix(out, firstLine(out))))
		}},
		{"other-namespace-binding-denied", func(t *testing.T) {
			// The agent is namespaced by default: the binding of ns selects
			// nothing here, whatever label the pod carries.
			other := c.Namespace(t)
			applyServiceAccount(ctx, t, c, other, "sa-other", nil)
			pod := miClientPod(other, "foreign", "sa-other", map[string]string{podidv1.PodLabelKey: agentV1Selector}, "-max-retries=-1")
			pod = c.CreatePod(ctx, t, pod)
			line := waitForNoIdentity(ctx, t, c, pod)
			t.Logf("pod of %s labelled for a binding of %s: %s", other, ns, line)
		}},
		{"exception-denied", func(t *testing.T) {
			const excepted = "podid.dev/e2e-excepted"
			c.Apply(ctx, t, ns, mustYAML(t, &podidv1.AzurePodIdentityException{
				TypeMeta:   metav1.TypeMeta{APIVersion: podidv1.GroupVersion.String(), Kind: "AzurePodIdentityException"},
				ObjectMeta: metav1.ObjectMeta{Name: "except-e2e"},
				Spec:       podidv1.AzurePodIdentityExceptionSpec{PodLabels: map[string]podidv1.LabelValue{excepted: "true"}},
			}))
			// Bound to v1 as well: the exception must win over the binding.
			pod := framework.TestClientPod(ns, "excepted")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Labels[excepted] = "true"
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod = c.CreatePod(ctx, t, pod)
			a := waitIMDSAnswer(ctx, t, c, ns, pod.Name, "")
			code, desc, err := imdsError(a.body)
			if a.status != http.StatusForbidden || err != nil {
				t.Fatalf("excepted pod got status=%d (%v), want 403 with a JSON error and no token", a.status, err)
			}
			t.Logf("excepted pod: status=%d %s: %s", a.status, code, desc)
		}},
		{"two-identities-client-id", func(t *testing.T) {
			probe := framework.TestClientPod(ns, "multi-probe")
			probe.Labels[podidv1.PodLabelKey] = agentMultiSelector
			probe.Spec.DeprecatedServiceAccount = agentMultiSA
			probe = c.CreatePod(ctx, t, probe)
			a := waitIMDSAnswer(ctx, t, c, ns, probe.Name, "")
			code, desc, err := imdsError(a.body)
			if a.status != http.StatusBadRequest || err != nil || !strings.Contains(desc, "Multiple user assigned identities") {
				t.Fatalf("pod with two identities and no client_id got status=%d %s %q (%v), want 400 \"Multiple user assigned identities…\"", a.status, code, desc, err)
			}
			t.Logf("no client_id: status=%d %s: %s", a.status, code, desc)
			// Each identity by the SDK's own option (ManagedIdentityCredentialOptions.ID).
			pods := map[string]*corev1.Pod{}
			for _, w := range []wiWorkload{multiX, multiY} {
				pods[w.clientID] = c.CreatePod(ctx, t, miClientPod(ns, w.name, agentMultiSA,
					map[string]string{podidv1.PodLabelKey: agentMultiSelector}, "-client-id="+w.clientID))
			}
			for _, w := range []wiWorkload{multiX, multiY} {
				verifyPodToken(ctx, t, c, stsTransport, pods[w.clientID], w.clientID)
			}
		}},
		{"ip-reuse-after-pod-deletion", func(t *testing.T) {
			ipam := hostLocalState(t)
			old := miClientPod(ns, "reuse-old", v1.sa, map[string]string{podidv1.PodLabelKey: agentV1Selector})
			old = c.CreatePod(ctx, t, old)
			waitForLog(ctx, t, c, ns, old.Name, "miclient: token acquired")
			ip, err := netip.ParseAddr(old.Status.PodIP)
			must(t, err)
			deleted := time.Now()
			deletePodAndWait(ctx, t, c, old)
			nextPodGetsIP(ctx, t, ipam, ip)
			// Same service account (its token for v1 is in the agent's
			// cache), no binding: anything but a refusal is the old pod's token.
			reused := miClientPod(ns, "reuse-new", v1.sa, nil, "-max-retries=-1")
			reused = c.CreatePod(ctx, t, reused)
			if reused.Status.PodIP != ip.String() {
				t.Fatalf("could not arrange IP reuse: %s got %s, not %s (host-local state %s)", reused.Name, reused.Status.PodIP, ip, ipam)
			}
			t.Logf("IP %s reused: %s (uid %s) deleted, %s (uid %s) Running with it %s later",
				ip, old.Name, old.UID, reused.Name, reused.UID, time.Since(deleted).Round(time.Millisecond))
			line := waitForNoIdentity(ctx, t, c, reused)
			logs, _ := c.Logs(ctx, ns, reused.Name, "")
			if first, _, _ := strings.Cut(logs, "\n"); first != line {
				t.Logf("new pod's first answer: %s", first)
			}
			t.Logf("new pod's answer once the agent saw it: %s", line)
		}},
		{"stale-cni-record-claims-nothing", func(t *testing.T) {
			// A sandbox killed without a CNI DEL (a runtime crash, its
			// state wiped) leaves libcni's record behind, naming an address
			// the IPAM hands out again. Such a record, for the address the
			// next pod gets and a host interface the node does not have, must
			// not take that address from the live pod: it is guarded and
			// gets its token.
			ipam := hostLocalState(t)
			next := nextHostLocalIP(t, ipam)
			plantStaleCNIRecord(t, next)
			pod := framework.TestClientPod(ns, "after-stale-record")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod = c.CreatePod(ctx, t, pod)
			if pod.Status.PodIP != next.String() {
				t.Fatalf("could not arrange the stale record's address: %s got %s, not %s", pod.Name, pod.Status.PodIP, next)
			}
			a := waitIMDSAnswer(ctx, t, c, ns, pod.Name, "")
			if a.err != nil || a.status != http.StatusOK {
				t.Fatalf("the pod at %s with a stale record for its address: status=%d %v %.300s", next, a.status, a.err, a.body)
			}
			if err := checkToken(accessTokenVerifier(t, stsTransport), a.body, v1.clientID); err != nil {
				t.Fatal(err)
			}
			t.Logf("stale CNI record for %s ignored: the live pod got its own verified token", next)
		}},
		{"spoofed-caller-gets-nothing", func(t *testing.T) {
			// The victim holds the v1 binding; the attacker, in the same
			// namespace with no binding, has NET_ADMIN (more than the
			// default NET_RAW) and takes the victim's address, claims it by
			// gratuitous ARP and sends its metadata traffic from it — then
			// does the same with the victim's MAC too. The node's guard
			// (ebtables, from the CNI records) drops all of it: no token,
			// and the victim's next request still succeeds.
			verifier := accessTokenVerifier(t, stsTransport)
			victim := framework.TestClientPod(ns, "spoof-victim")
			victim.Labels[podidv1.PodLabelKey] = agentV1Selector
			victim.Spec.DeprecatedServiceAccount = v1.sa
			victim = c.CreatePod(ctx, t, victim)
			if a := waitIMDSAnswer(ctx, t, c, ns, victim.Name, ""); a.err != nil || a.status != http.StatusOK {
				t.Fatalf("victim before the attack: %d %v %s", a.status, a.err, a.body)
			}
			vmac, _, err := c.Exec(ctx, ns, victim.Name, "", "cat", "/sys/class/net/eth0/address")
			must(t, err)
			vmac = strings.TrimSpace(vmac)
			attacker := framework.TestClientPod(ns, "spoof-attacker")
			attacker.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}
			attacker = c.CreatePod(ctx, t, attacker)
			vip, gw := victim.Status.PodIP, podGateway(t, c)
			for _, at := range []struct{ name, setup, undo string }{
				{"victim-address-and-arp-claim",
					"ip addr add " + vip + "/32 dev eth0 && ip route add 169.254.169.254/32 via " + gw + " dev eth0 src " + vip + " && arping -U -c 2 -w 2 -I eth0 -s " + vip + " " + vip + "; true",
					"ip route del 169.254.169.254/32; ip addr del " + vip + "/32 dev eth0; true"},
				{"victim-mac-address-and-arp-claim",
					"ip link set eth0 address " + vmac + " && ip addr add " + vip + "/32 dev eth0 && ip route add 169.254.169.254/32 via " + gw + " dev eth0 src " + vip + " && arping -U -c 2 -w 2 -I eth0 -s " + vip + " " + vip + "; true",
					"ip route del 169.254.169.254/32; ip addr del " + vip + "/32 dev eth0; ip link set eth0 address $(cat /tmp/own-mac); true"},
			} {
				t.Run(at.name, func(t *testing.T) {
					_, _, err := c.Exec(ctx, ns, attacker.Name, "", "sh", "-c", "[ -f /tmp/own-mac ] || cat /sys/class/net/eth0/address >/tmp/own-mac; "+at.setup)
					must(t, err)
					a := imdsGet(ctx, c, ns, attacker.Name, "")
					_, _, uerr := c.Exec(ctx, ns, attacker.Name, "", "sh", "-c", at.undo)
					if a.status != 0 || a.body != "" || a.err == nil {
						t.Errorf("the attacker got an answer: status=%d %.300s", a.status, a.body)
					}
					t.Logf("attacker got no HTTP answer: %v", a.err)
					must(t, uerr)
					victimStillServed(ctx, t, c, verifier, victim, v1.clientID)
				})
			}
		}},
		{"raw-socket-attacks", func(t *testing.T) {
			// The attack of issue 14, with nothing but the default
			// capabilities (containerd grants NET_RAW, not NET_ADMIN): from
			// an AF_PACKET socket the attacker answers ARP for the victim's
			// address, announces it by gratuitous ARP, and speaks TCP to
			// 169.254.169.254:80 by hand from that address (spoofer get).
			// The control shows the same program gets a real answer — the
			// pod's own token — when it sends from its own address, and the
			// last subtest that it takes the victim's token once the
			// guard's ebtables jumps are removed.
			if !nodeHasImage(ctx, t, c, spooferImage) {
				t.Fatalf("image %s not imported: run hack/image.sh spoofer", spooferImage)
			}
			verifier := accessTokenVerifier(t, stsTransport)
			gw := podGateway(t, c)
			victimV1 := framework.TestClientPod(ns, "raw-victim-v1")
			victimV1.Labels[podidv1.PodLabelKey] = agentV1Selector
			victimV1.Spec.DeprecatedServiceAccount = v1.sa
			victimV2 := framework.TestClientPod(ns, "raw-victim-v2")
			victimV2.Labels["azure.workload.identity/use"] = "true"
			victimV2.Spec.DeprecatedServiceAccount = v2.sa
			// The control: bound to v1 like a victim, NET_ADMIN only so that
			// its own kernel can be kept out of the hand-built connection.
			control := spooferPod(ns, "raw-control")
			control.Labels[podidv1.PodLabelKey] = agentV1Selector
			control.Spec.DeprecatedServiceAccount = v1.sa
			control.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
			all := []*corev1.Pod{victimV1, victimV2, spooferPod(ns, "raw-attacker"), spooferPod(c.Namespace(t), "raw-attacker-elsewhere"), control}
			for _, p := range all { // created at once, waited for together
				must(t, c.Client.Create(ctx, p))
			}
			pods := map[string]*corev1.Pod{}
			for _, p := range all {
				rp, err := c.WaitForPodReady(ctx, p.Namespace, p.Name)
				must(t, err)
				pods[p.Name] = rp
			}
			for _, name := range []string{"raw-attacker", "raw-attacker-elsewhere"} {
				p := pods[name]
				out, _, err := c.Exec(ctx, p.Namespace, p.Name, "", "cat", "/proc/self/status")
				must(t, err)
				capRaw, capAdmin := effectiveCap(t, out, 13), effectiveCap(t, out, 12) // CAP_NET_RAW, CAP_NET_ADMIN
				if !capRaw || capAdmin {
					t.Fatalf("%s/%s: NET_RAW=%v NET_ADMIN=%v, want the default capabilities (NET_RAW, no NET_ADMIN)", p.Namespace, p.Name, capRaw, capAdmin)
				}
				fwd, _, _ := c.Exec(ctx, p.Namespace, p.Name, "", "cat", "/proc/sys/net/ipv4/ip_forward")
				t.Logf("%s/%s: default capabilities (NET_RAW, no NET_ADMIN); ip_forward=%s", p.Namespace, p.Name, strings.TrimSpace(fwd))
			}
			for _, v := range []*corev1.Pod{pods["raw-victim-v1"], pods["raw-victim-v2"]} {
				if a := waitIMDSAnswer(ctx, t, c, ns, v.Name, ""); a.err != nil || a.status != http.StatusOK {
					t.Fatalf("victim %s before the attack: %d %v %.300s", v.Name, a.status, a.err, a.body)
				}
			}

			t.Run("control-own-address", func(t *testing.T) {
				p := pods["raw-control"]
				// Without its address the pod's kernel drops the server's
				// answers instead of resetting a connection it never opened.
				_, _, err := c.Exec(ctx, ns, p.Name, "", "ip", "addr", "del", p.Status.PodIP+"/"+podPrefixLen(t, c), "dev", "eth0")
				must(t, err)
				r := runSpoofer(ctx, t, c, p, p.Status.PodIP, gw)
				if r.Status != "HTTP/1.1 200 OK" {
					t.Fatalf("the hand-built connection from the pod's own address got %q (%s), want HTTP/1.1 200 OK: the attack program is broken, the attack cases would prove nothing", r.Status, r.Error)
				}
				if err := checkToken(verifier, r.Body, v1.clientID); err != nil {
					t.Fatalf("control: the token from the hand-built connection: %v", err)
				}
				t.Logf("control, own address %s: %s, a verified token for its own identity %s (ARP claims %d, SYNs %d)", r.Src, r.Status, v1.clientID, r.ARPClaims, r.SYNs)
			})
			for _, at := range []struct {
				name, attacker, victim, clientID string
			}{
				{"v1-victim", "raw-attacker", "raw-victim-v1", v1.clientID},
				{"v2-victim", "raw-attacker", "raw-victim-v2", v2.clientID},
				{"attacker-in-another-namespace", "raw-attacker-elsewhere", "raw-victim-v1", v1.clientID},
			} {
				t.Run(at.name, func(t *testing.T) {
					a, v := pods[at.attacker], pods[at.victim]
					r := runSpoofer(ctx, t, c, a, v.Status.PodIP, gw)
					t.Logf("%s/%s as %s (%s): gateway %q, ARP claims %d, ARP answers %d, SYNs %d, SYN-ACK %v, reset %v, status %q, %s",
						a.Namespace, a.Name, v.Status.PodIP, v.Name, r.GatewayMAC, r.ARPClaims, r.ARPAnswers, r.SYNs, r.SynAck, r.Reset, r.Status, r.Error)
					if r.GatewayMAC == "" || r.SYNs == 0 || r.ARPClaims == 0 {
						t.Fatalf("the attack did not run (gateway %q, SYNs %d, ARP claims %d)", r.GatewayMAC, r.SYNs, r.ARPClaims)
					}
					if r.Status != "" || r.Body != "" || r.SynAck {
						t.Errorf("the attacker got an answer as %s: SYN-ACK %v, %q %.300s", v.Name, r.SynAck, r.Status, r.Body)
					}
					if m := nodeNeighbour(t, c, v.Status.PodIP); m == podMAC(ctx, t, c, a) {
						t.Errorf("the node's neighbour entry for %s moved to the attacker's MAC %s", v.Status.PodIP, m)
					}
					victimStillServed(ctx, t, c, verifier, v, at.clientID)
				})
			}
			t.Run("control-guard-removed", func(t *testing.T) {
				// Without the guard's jumps the same attack takes the
				// victim's token: so the nothing above is the guard's doing.
				// The agent re-applies its rules every 10 s whatever their
				// state, which ends an attempt cut short: try again.
				a, v := pods["raw-attacker"], pods["raw-victim-v1"]
				var r spooferResult
				for attempt := 1; attempt <= 4; attempt++ {
					removeGuardJumps()
					r = runSpoofer(ctx, t, c, a, v.Status.PodIP, gw)
					t.Logf("guard removed, attempt %d: ARP claims %d, SYNs %d, SYN-ACK %v, status %q %s", attempt, r.ARPClaims, r.SYNs, r.SynAck, r.Status, r.Error)
					if r.Status != "" {
						break
					}
				}
				if r.Status != "HTTP/1.1 200 OK" {
					t.Fatalf("without the guard the attack got %q (%s), want the victim's token: the attack cases above prove nothing", r.Status, r.Error)
				}
				if err := checkToken(verifier, r.Body, v1.clientID); err != nil {
					t.Fatalf("without the guard the attacker got a 200 that is not the victim's token: %v", err)
				}
				t.Logf("control, guard removed: the attacker %s/%s took %s's token (%s, a verified token for %s)", a.Namespace, a.Name, v.Name, r.Status, v1.clientID)
				// The agent repairs its rules by itself (every 10 s).
				err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
					return guardJumpsInPlace(t), nil
				})
				if err != nil {
					t.Fatalf("the agent did not restore the guard's jumps within 30 s: %v", err)
				}
				// The poisoned neighbour entry outlives the attack; the guard
				// keeps the victim's traffic away from the attacker, so the
				// victim would only wait for the kernel to re-probe it.
				_ = exec.Command("ip", "neigh", "del", v.Status.PodIP, "dev", c.Bridge).Run()
				victimStillServed(ctx, t, c, verifier, v, v1.clientID)
			})
		}},
		{"ipv6-reaches-no-token", func(t *testing.T) {
			// The cluster is IPv4-only, but pods and the bridge have IPv6
			// link-local addresses and the node may have others. A pod
			// with NET_ADMIN (so it can route to any of them) tries the
			// agent's port over IPv6: nothing answers. The control shows
			// IPv6 from the pod to the node works: a server of this test
			// on the node, listening on every IPv6 address, answers over
			// the same paths.
			bridgeLL := nodeIPv6(t, "dev", c.Bridge, "scope", "link")
			if len(bridgeLL) == 0 {
				t.Fatalf("the bridge %s has no IPv6 link-local address: no IPv6 path to test", c.Bridge)
			}
			ll := bridgeLL[0]
			pod := framework.TestClientPod(ns, "v6-prober")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
			pod = c.CreatePod(ctx, t, pod)
			get := func(url string) imdsAnswer {
				out, stderr, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", "-H", "Metadata: true", url)
				if err != nil {
					return imdsAnswer{err: fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr))}
				}
				st, body, _ := strings.Cut(out, "\n")
				n, _ := strconv.Atoi(strings.TrimPrefix(st, "status="))
				return imdsAnswer{status: n, body: body}
			}
			ln, err := net.Listen("tcp6", "[::]:0")
			must(t, err)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "node over IPv6") }), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			targets := []string{"[" + ll + "%25eth0]"}
			for _, g := range nodeIPv6(t, "scope", "global") {
				_, _, err := c.Exec(ctx, ns, pod.Name, "", "ip", "-6", "route", "add", g+"/128", "via", ll, "dev", "eth0")
				must(t, err)
				targets = append(targets, "["+g+"]")
			}
			for _, h := range targets {
				if a := get("http://" + h + ":" + port + "/"); a.status != http.StatusOK {
					t.Fatalf("control: a server on the node at %s over IPv6: status=%d %v; the path does not work, a refusal of the agent's port there would mean nothing", h, a.status, a.err)
				}
				a := get("http://" + h + ":" + agentPort + imdsTokenPath)
				if a.status != 0 || a.err == nil || strings.Contains(a.body, "access_token") {
					t.Errorf("the agent's port over IPv6 at %s answered: status=%d %.200s", h, a.status, a.body)
				}
				t.Logf("IPv6 %s:%s: %v", h, agentPort, a.err)
			}
		}},
		{"first-token-at-container-start", func(t *testing.T) {
			// An app that asks at once: the container's first process sends
			// token requests 10ms apart from its first instant. The time
			// from its first request to its first 200 is the startup race
			// the node's records close (the kubelet reports the pod's IP
			// to the API server only later). 20 pods, one after another.
			const n = 20
			var lat []time.Duration
			first200 := 0
			for i := range n {
				pod := framework.TestClientPod(ns, fmt.Sprintf("first-token-%d", i))
				pod.Labels[podidv1.PodLabelKey] = agentV1Selector
				pod.Spec.DeprecatedServiceAccount = v1.sa
				pod.Spec.Containers[0].Command = []string{"/testclient", "get", "-H", "Metadata: true", "-n", "500", "-every", "10ms", "http://169.254.169.254" + imdsTokenPath}
				pod = c.CreatePod(ctx, t, pod)
				logs := waitForLog(ctx, t, c, ns, pod.Name, "status=200")
				var t0 int64
				for j, line := range strings.Split(logs, "\n") {
					var start, end int64
					if _, err := fmt.Sscanf(line, "start=%d end=%d", &start, &end); err != nil {
						continue
					}
					if t0 == 0 {
						t0 = start
					}
					if strings.Contains(line, "status=200") {
						lat = append(lat, time.Duration(end-t0))
						if j == 0 {
							first200++
						}
						break
					}
				}
				must(t, c.Client.Delete(ctx, pod))
			}
			if len(lat) != n {
				t.Fatalf("%d of %d pods got a token", len(lat), n)
			}
			slices.Sort(lat)
			t.Logf("container's first request -> first token, %d pods in sequence: p50 %s, p90 %s, max %s (goal: p99 < 100ms); answered 200 on the first request: %d of %d",
				n, lat[n/2].Round(time.Millisecond), lat[n*9/10].Round(time.Millisecond), lat[n-1].Round(time.Millisecond), first200, n)
			if lat[n-1] > time.Second {
				t.Errorf("a pod waited %s for its first token, want well under 1s", lat[n-1])
			}
			// The unmodified azidentity app, with the SDK's retries off: a
			// 404 on its first request would fail its first GetToken.
			const m = 5
			firstTry := 0
			for i := range m {
				pod := c.CreatePod(ctx, t, miClientPod(ns, fmt.Sprintf("first-token-sdk-%d", i), v1.sa, map[string]string{podidv1.PodLabelKey: agentV1Selector}, "-max-retries=-1"))
				logs := waitForLog(ctx, t, c, ns, pod.Name, "miclient: token acquired")
				if first := firstLine(logs); strings.HasPrefix(first, "miclient: token acquired") {
					firstTry++
				} else {
					t.Errorf("%s: the SDK's first GetToken failed: %s", pod.Name, first)
				}
				must(t, c.Client.Delete(ctx, pod))
			}
			t.Logf("unmodified azidentity (no SDK retries), %d pods: token on the first GetToken in %d of %d", m, firstTry, m)
		}},
		{"api-server-outage", func(t *testing.T) {
			// Three pods ask every 500 ms from their own process (exec
			// needs the API server); the API server is frozen (SIGSTOP:
			// connections hang, the worst kind of outage) for 60 s. Their
			// cached tokens must keep flowing; after it returns a new pod
			// must get its token at once.
			const every = 500 * time.Millisecond
			var askers []*corev1.Pod
			for i := range 3 {
				pod := framework.TestClientPod(ns, fmt.Sprintf("outage-%d", i))
				pod.Labels[podidv1.PodLabelKey] = agentV1Selector
				pod.Spec.DeprecatedServiceAccount = v1.sa
				pod.Spec.Containers[0].Command = []string{"/testclient", "get", "-H", "Metadata: true", "-n", "400", "-every", every.String(), "http://169.254.169.254" + imdsTokenPath}
				pod = c.CreatePod(ctx, t, pod)
				waitForLog(ctx, t, c, ns, pod.Name, "status=200")
				askers = append(askers, pod)
			}
			pidFile := filepath.Join(filepath.Dir(c.KubeletDir), "pids", "kube-apiserver.pid")
			b, err := os.ReadFile(pidFile)
			must(t, err)
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			must(t, err)
			must(t, syscall.Kill(pid, syscall.SIGSTOP))
			frozen := time.Now()
			resumed := false
			resume := func() {
				if !resumed {
					resumed = true
					must(t, syscall.Kill(pid, syscall.SIGCONT))
				}
			}
			defer resume()
			timer := time.NewTimer(60 * time.Second) // the outage itself, not a synchronisation
			select {
			case <-timer.C:
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
			thawed := time.Now()
			resume()
			// A pod created just after the API server returns.
			late := framework.TestClientPod(ns, "outage-late")
			late.Labels[podidv1.PodLabelKey] = agentV1Selector
			late.Spec.DeprecatedServiceAccount = v1.sa
			late.Spec.Containers[0].Command = []string{"/testclient", "get", "-H", "Metadata: true", "-n", "1000", "-every", "10ms", "http://169.254.169.254" + imdsTokenPath}
			late = c.CreatePod(ctx, t, late)
			logs := waitForLog(ctx, t, c, ns, late.Name, "status=200")
			var first, ok int64
			for _, line := range strings.Split(logs, "\n") {
				var start, end int64
				if _, err := fmt.Sscanf(line, "start=%d end=%d", &start, &end); err != nil {
					continue
				}
				if first == 0 {
					first = start
				}
				if strings.Contains(line, "status=200") {
					ok = end
					break
				}
			}
			t.Logf("pod created after the outage: first request -> first token %s (its first request %s after the API server returned)",
				time.Duration(ok-first).Round(time.Millisecond), time.Unix(0, first).Sub(thawed).Round(time.Millisecond))
			if time.Duration(ok-first) > time.Second {
				t.Errorf("the pod created after the outage waited %s for its first token, want under 1s", time.Duration(ok-first))
			}
			for _, p := range askers {
				logs, err := c.Logs(ctx, ns, p.Name, "")
				must(t, err)
				var served, other int
				var sample string
				for _, line := range strings.Split(logs, "\n") {
					var start, end int64
					if _, err := fmt.Sscanf(line, "start=%d end=%d", &start, &end); err != nil {
						continue
					}
					if st := time.Unix(0, start); st.Before(frozen) || st.After(thawed) {
						continue
					}
					if strings.Contains(line, "status=200") {
						served++
					} else {
						other++
						sample = line
					}
				}
				t.Logf("%s during the 60s outage: %d answered 200, %d not", p.Name, served, other)
				if served < 60 || other > 0 {
					t.Errorf("%s during the outage: %d tokens, %d failures (e.g. %.200s); want every request served", p.Name, served, other, sample)
				}
			}
			// The frozen API server missed the node's heartbeats, so the
			// node controller marked the node's pods unready and their
			// Services lost their endpoints; the next cases need the
			// webhook and the sts reachable again.
			for _, d := range []struct{ ns, name string }{{"podid-system", "podid-webhook"}, {stsNamespace, stsDeployment}} {
				if err := waitDeploymentAvailable(ctx, c, d.ns, d.name); err != nil {
					t.Fatalf("after the outage: %v", err)
				}
			}
		}},
		{"stolen-agent-credential-stays-on-its-node", func(t *testing.T) {
			// Whoever owns the node can read the agent's credential (the
			// kubelet projected it there). With it they may mint exchange
			// tokens for pods of this node — what the agent itself does —
			// but the token guard refuses a pod bound to another node.
			stolen := agentCredential(ctx, t, c)
			elsewhere := framework.TestClientPod(ns, "on-another-node")
			elsewhere.Spec.NodeName = "podid-e2e-elsewhere" // never runs: no such kubelet
			elsewhere.Spec.DeprecatedServiceAccount = v1.sa
			must(t, c.Client.Create(ctx, elsewhere))
			t.Cleanup(func() { _ = c.Client.Delete(context.Background(), elsewhere) })
			here := c.CreatePod(ctx, t, miClientPod(ns, "on-this-node", v1.sa, nil, "-max-retries=-1"))
			request := func(p *corev1.Pod) error {
				secs := int64(600)
				_, err := stolen.CoreV1().ServiceAccounts(ns).CreateToken(ctx, v1.sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
					Audiences: []string{"api://AzureADTokenExchange"}, ExpirationSeconds: &secs,
					BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
				}}, metav1.CreateOptions{})
				return err
			}
			if err := request(here); err != nil {
				t.Fatalf("the agent's credential could not mint a token for a pod on its own node: %v", err)
			}
			err := request(elsewhere)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may only request tokens for pods on its own node") {
				t.Fatalf("token for a pod on another node: %v, want 403 from the podid token guard", err)
			}
			t.Logf("agent credential, pod on another node: %v", err)
		}},
		{"agent-restarted-under-load", func(t *testing.T) {
			verifier := accessTokenVerifier(t, stsTransport)
			// Four pods, four identities (v1 binding, v2 service account, and
			// the two multi identities each named by client_id).
			multi := map[string]string{podidv1.PodLabelKey: agentMultiSelector}
			load := []*loadPod{
				{name: "load-v1", sa: v1.sa, labels: map[string]string{podidv1.PodLabelKey: agentV1Selector}, want: v1.clientID},
				{name: "load-v2", sa: v2.sa, labels: map[string]string{"azure.workload.identity/use": "true"}, want: v2.clientID},
				{name: "load-x", sa: agentMultiSA, labels: multi, want: multiX.clientID, query: "&client_id=" + multiX.clientID},
				{name: "load-y", sa: agentMultiSA, labels: multi, want: multiY.clientID, query: "&client_id=" + multiY.clientID},
			}
			for _, lp := range load {
				pod := framework.TestClientPod(ns, lp.name)
				for k, v := range lp.labels {
					pod.Labels[k] = v
				}
				pod.Spec.DeprecatedServiceAccount = lp.sa
				c.CreatePod(ctx, t, pod)
			}
			// Stopped between bursts, not by cancelling one: an exec cut
			// short is no answer, only noise.
			stop := make(chan struct{})
			stopLoad := sync.OnceFunc(func() { close(stop) })
			var wg sync.WaitGroup
			defer func() { stopLoad(); wg.Wait() }()
			started := time.Now()
			for _, lp := range load {
				wg.Add(1)
				go func() { defer wg.Done(); lp.run(ctx, stop, c, ns, verifier) }()
			}
			waitAllServedAfter(ctx, t, load, started, "before the restart")

			old := agentPod(ctx, t, c)
			deleted := time.Now()
			gone := deletePodAndWait(ctx, t, c, old)
			// Only now can no answer come from the old agent: the pod object
			// goes once the kubelet saw its container end.
			recovered := waitAllServedAfter(ctx, t, load, gone, "after the restart")
			stopLoad()
			wg.Wait()

			var total, tokens int
			var slowest time.Duration // of the answers without a token
			failures := map[string]int{}
			for _, lp := range load {
				for _, r := range lp.results {
					total++
					if r.a.status != http.StatusOK {
						slowest = max(slowest, r.end.Sub(r.start))
					}
					switch {
					case r.wrong != nil:
						t.Errorf("%s got a token that is not its identity's (%s) at %s: %v", lp.name, lp.want, r.start.Sub(deleted).Round(time.Millisecond), r.wrong)
					case r.a.status == http.StatusOK:
						tokens++
					case r.a.status != 0:
						if _, _, err := imdsError(r.a.body); err != nil {
							t.Errorf("%s: status=%d is not an IMDS error: %v", lp.name, r.a.status, err)
						}
						failures[fmt.Sprintf("status=%d", r.a.status)]++
					default:
						failures[failureKind(r.a)]++
					}
				}
			}
			first := recovered
			for _, lp := range load {
				if at, ok := lp.servedAfter(gone); ok && at.Before(first) {
					first = at
				}
			}
			t.Logf("agent restart: recovered in %s (old agent pod gone after %s; every pod served again after %s)",
				first.Sub(deleted).Round(time.Millisecond), gone.Sub(deleted).Round(time.Millisecond), recovered.Sub(deleted).Round(time.Millisecond))
			t.Logf("agent restart: %d requests in %s from %d pods (each every 100 ms): %d tokens, each for the asking pod's identity; no token: %v, the slowest in %s",
				total, time.Since(started).Round(time.Millisecond), len(load), tokens, failures, slowest.Round(time.Millisecond))
			if ok, err := rules.Check(ctx); err != nil || !ok {
				t.Fatalf("the interception rules are not in place after the restart (ok=%v, err=%v)", ok, err)
			}
		}},
		{"agent-gone-fails-closed", func(t *testing.T) {
			// A stand-in for a cloud's real metadata service on the node:
			// what pod traffic to 169.254.169.254 reaches if interception
			// fails open.
			imds := framework.StartStandInIMDS(t)
			pod := framework.TestClientPod(ns, "after-agent")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod = c.CreatePod(ctx, t, pod)
			deleteAgent(ctx, t, c)
			if ok, err := rules.Check(ctx); err != nil || !ok {
				t.Fatalf("the interception rules did not outlive the agent (ok=%v, err=%v)", ok, err)
			}
			// The interception rules stay (the agent never removes them):
			// the DNAT now leads to a closed port, so the request is
			// refused at once rather than leaking anywhere else.
			t0 := time.Now()
			out, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", "-H", "Metadata: true", "http://169.254.169.254"+imdsTokenPath)
			took := time.Since(t0)
			if err == nil {
				t.Fatalf("with the agent gone the pod's request was answered: %q", firstLine(out))
			}
			if !strings.Contains(err.Error(), "connection refused") {
				t.Fatalf("with the agent gone the request failed, but not by refusal: %v", err)
			}
			if took > 5*time.Second {
				t.Errorf("refusal took %s, want well under 5s", took)
			}
			if n := len(imds.Requests()); n != 0 {
				t.Fatalf("%d requests reached the stand-in metadata service while the agent was gone", n)
			}
			t.Logf("agent gone: request refused in %s; the stand-in metadata service saw nothing", took.Round(time.Millisecond))

			// Control: without podid's rules the same request does reach
			// the stand-in — so its silence above was the rules' doing.
			must(t, rules.Uninstall(ctx))
			out, _, err = c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", "-H", "Metadata: true", "http://169.254.169.254"+imdsTokenPath)
			if err != nil {
				t.Fatalf("without interception the pod could not reach the stand-in: %v", err)
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			// Other pods of the test still retrying reach it too now: wait
			// for this pod's request.
			r, err := imds.WaitFor(rctx, "token request from "+pod.Status.PodIP, func(r framework.HostRequest) bool {
				return r.SourceIP == pod.Status.PodIP && r.Path == "/metadata/identity/oauth2/token"
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("control, rules removed: the stand-in answered the pod (%s): %s", r.SourceIP, firstLine(out))
		}},
	}
	for _, tc := range cases {
		start := time.Now()
		ok := t.Run(tc.name, tc.run)
		t.Logf("case %s: pass=%v (%s)", tc.name, ok, time.Since(start).Round(time.Millisecond))
	}
}

// verifyPodToken waits until miclient in pod logs a token, then checks the
// access token it saved verifies and belongs to clientID.
func verifyPodToken(ctx context.Context, t *testing.T, c *framework.Cluster, tr http.RoundTripper, pod *corev1.Pod, clientID string) {
	t.Helper()
	logs := waitForLog(ctx, t, c, pod.Namespace, pod.Name, "miclient: token acquired")
	t.Logf("%s: %s", pod.Name, lastLine(logs))
	access, _, err := c.Exec(ctx, pod.Namespace, pod.Name, "", "/miclient", "cat", "/tmp/access-token")
	if err != nil {
		t.Fatalf("read access token of %s: %v", pod.Name, err)
	}
	verifyAccessToken(ctx, t, tr, strings.TrimSpace(access), clientID)
}

// miClientPod is a pod running miclient as sa with extra labels and args.
func miClientPod(ns, name, sa string, labels map[string]string, args ...string) *corev1.Pod {
	l := map[string]string{"app": name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec: corev1.PodSpec{
			DeprecatedServiceAccount:      sa,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "client", Image: miClientImage, ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"/miclient"}, args...),
			}},
		},
	}
}

// applyKustomization applies the resources a kustomization.yaml lists, in
// order (the kustomizations podid ships have neither patches nor
// generators), after patch has adjusted each object.
func applyKustomization(ctx context.Context, t *testing.T, c *framework.Cluster, dir string, patch func(*unstructured.Unstructured)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(framework.RepoRoot(), dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	var raw map[string]any
	must(t, yaml.Unmarshal(b, &raw))
	for key := range raw {
		if key != "apiVersion" && key != "kind" && key != "resources" {
			t.Fatalf("%s/kustomization.yaml uses %q: applyKustomization handles only resources", dir, key)
		}
	}
	for _, f := range k.Resources {
		objs := readManifest(t, filepath.Join(dir, f))
		var rest []*unstructured.Unstructured
		for _, o := range objs {
			if patch != nil {
				patch(o)
			}
			if o.GetKind() == "Namespace" {
				// Shared with the sts (and whoever else): applied, never deleted.
				ob, err := yaml.Marshal(o.Object)
				must(t, err)
				nsObj, err := framework.DecodeManifest(ob)
				must(t, err)
				if err := c.Client.Patch(ctx, nsObj[0], client.Apply, client.FieldOwner(framework.FieldOwner), client.ForceOwnership); err != nil {
					t.Fatalf("apply namespace %s: %v", o.GetName(), err)
				}
				continue
			}
			rest = append(rest, o)
		}
		applyObjects(ctx, t, c, rest)
	}
}

// deployAgent applies deploy/agent as shipped, with the ConfigMaps filled
// for this cluster — the only change:
//   - podid-agent-config: POD_CIDR = the node's pod CIDR, AUTHORITY = the
//     sts at its ClusterIP (reachable from the host network through
//     kube-proxy, and named by its certificate), AZURE_TENANT_ID = the sts
//     tenant;
//   - podid-sts-ca: ca.pem = the sts CA;
//
// plus a pod-template annotation with their digest, so that a DaemonSet left
// by an interrupted run restarts with this configuration. The DaemonSet's
// args are as shipped. It waits until the DaemonSet is Ready (its readiness
// probe: caches synced, rules installed).
func deployAgent(ctx context.Context, t *testing.T, c *framework.Cluster, caPEM []byte) {
	t.Helper()
	config := map[string]any{"POD_CIDR": c.PodCIDR, "AUTHORITY": agentAuthority, "AZURE_TENANT_ID": wiTenantID}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%v\n%s", config, caPEM)))
	applyKustomization(ctx, t, c, filepath.Join("deploy", "agent"), func(o *unstructured.Unstructured) {
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == "podid-agent-config":
			must(t, unstructured.SetNestedField(o.Object, config, "data"))
		case o.GetKind() == "ConfigMap" && o.GetName() == "podid-sts-ca":
			must(t, unstructured.SetNestedField(o.Object, string(caPEM), "data", "ca.pem"))
		case o.GetKind() == "DaemonSet":
			must(t, unstructured.SetNestedField(o.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", "podid.dev/e2e-config"))
		}
	})
	var ds appsv1.DaemonSet
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: agentNamespace, Name: agentDaemonSet}, &ds); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		s := ds.Status
		return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled >= 1 &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady == s.DesiredNumberScheduled &&
			s.NumberAvailable == s.DesiredNumberScheduled, nil
	})
	if err != nil {
		if p := agentPodLogs(ctx, c); p != "" {
			t.Logf("agent logs:\n%s", p)
		}
		t.Fatalf("DaemonSet %s/%s not Ready (status %+v): %v", agentNamespace, agentDaemonSet, ds.Status, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if p := agentPodLogs(ctx, c); p != "" {
				t.Logf("agent logs (tail):\n%s", p)
			}
		}
	})
}

// agentPodLogs returns the last lines of the agent pods' logs (never tokens:
// the agent does not log them).
func agentPodLogs(ctx context.Context, c *framework.Cluster) string {
	pods, err := c.Clientset.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-agent"})
	if err != nil {
		return ""
	}
	var b strings.Builder
	tail := int64(40)
	for _, p := range pods.Items {
		l, err := c.Clientset.CoreV1().Pods(agentNamespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		if err == nil {
			fmt.Fprintf(&b, "--- %s\n%s", p.Name, l)
		}
	}
	return b.String()
}

// deleteAgent deletes the agent DaemonSet and waits until its pods are gone.
func deleteAgent(ctx context.Context, t *testing.T, c *framework.Cluster) {
	t.Helper()
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: agentNamespace, Name: agentDaemonSet}}
	if err := c.Client.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationForeground)); client.IgnoreNotFound(err) != nil {
		t.Fatalf("delete DaemonSet: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Clientset.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-agent"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("agent pods still present: %v", err)
	}
}

// nodeInterceptor is the agent's interception as configured by deployAgent,
// driven with this machine's (the node's) iptables: to check and, at the
// end, remove the rules the agent installed.
func nodeInterceptor(t *testing.T, c *framework.Cluster) *intercept.Interceptor {
	t.Helper()
	cidr, err := netip.ParsePrefix(c.PodCIDR)
	must(t, err)
	node, err := netip.ParseAddr(c.NodeIP)
	must(t, err)
	port, err := netip.ParseAddrPort("0.0.0.0:" + agentPort)
	must(t, err)
	ic, err := intercept.New(intercept.Config{PodCIDRs: []netip.Prefix{cidr}, Target: netip.AddrPortFrom(node, port.Port())})
	if err != nil {
		t.Fatalf("interceptor: %v", err)
	}
	return ic
}

// waitCRDEstablished polls until the CRD reports Established.
// applyCRDs applies deploy/crds (plain files, as `kubectl apply -f deploy/crds`)
// and waits until every pod-identity CRD is served.
func applyCRDs(ctx context.Context, t *testing.T, c *framework.Cluster) {
	t.Helper()
	crdFiles, err := filepath.Glob(filepath.Join(framework.RepoRoot(), "deploy", "crds", "*.yaml"))
	must(t, err)
	if len(crdFiles) == 0 {
		t.Fatal("no CRD files in deploy/crds")
	}
	for _, f := range crdFiles {
		applyObjects(ctx, t, c, readManifest(t, filepath.Join("deploy", "crds", filepath.Base(f))))
	}
	for _, crd := range []string{"azureidentities", "azureidentitybindings", "azurepodidentityexceptions", "azureassignedidentities"} {
		if err := waitCRDEstablished(ctx, c, crd+".aadpodidentity.k8s.io"); err != nil {
			t.Fatal(err)
		}
	}
}

func waitCRDEstablished(ctx context.Context, c *framework.Cluster, name string) error {
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, x := range conds {
			m, _ := x.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// lineWith returns the last line of s containing sub.
func lineWith(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}

// applyV1Identity applies a user-assigned AzureIdentity name (client
// clientID, the sts tenant) and a binding name-binding for selector.
func applyV1Identity(ctx context.Context, t *testing.T, c *framework.Cluster, ns, name, clientID, selector string) {
	t.Helper()
	c.Apply(ctx, t, ns, mustYAML(t, &podidv1.AzureIdentity{
		TypeMeta:   metav1.TypeMeta{APIVersion: podidv1.GroupVersion.String(), Kind: "AzureIdentity"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: clientID, TenantID: wiTenantID},
	}))
	c.Apply(ctx, t, ns, mustYAML(t, &podidv1.AzureIdentityBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: podidv1.GroupVersion.String(), Kind: "AzureIdentityBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name + "-binding"},
		Spec:       podidv1.AzureIdentityBindingSpec{AzureIdentity: name, Selector: selector},
	}))
}

// applyServiceAccount applies a service account with annotations.
func applyServiceAccount(ctx context.Context, t *testing.T, c *framework.Cluster, ns, name string, annotations map[string]string) {
	t.Helper()
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
	}))
}

// waitForNoIdentity waits until miclient in pod reports the agent's "no
// identity is assigned" refusal naming this very pod (so the agent judged
// the pod, not an unknown IP), checks that it was a 404 and that the pod got
// no token, and returns the line.
func waitForNoIdentity(ctx context.Context, t *testing.T, c *framework.Cluster, pod *corev1.Pod) string {
	t.Helper()
	logs := waitForLog(ctx, t, c, pod.Namespace, pod.Name, "no identity is assigned to pod "+pod.Namespace+"/"+pod.Name)
	line := lineWith(logs, "no identity is assigned")
	if !strings.Contains(line, "404") {
		t.Errorf("denial is not a 404: %s", line)
	}
	if strings.Contains(logs, "miclient: token acquired") {
		t.Fatalf("pod %s/%s got a token", pod.Namespace, pod.Name)
	}
	return line
}

// imdsAnswer is what a pod got for one IMDS token request sent with
// testclient: the status and body, or (status 0) why no HTTP answer came.
type imdsAnswer struct {
	status int
	body   string
	err    error
	inPod  bool // err is testclient's (the request failed in the pod), not the exec's
}

// imdsGet sends one token request (query appended to imdsTokenPath) from
// inside a testclient pod to 169.254.169.254, as an application would.
func imdsGet(ctx context.Context, c *framework.Cluster, ns, pod, query string) imdsAnswer {
	out, stderr, err := c.Exec(ctx, ns, pod, "", "/testclient", "get", "-H", "Metadata: true", "http://169.254.169.254"+imdsTokenPath+query)
	if err != nil {
		return imdsAnswer{err: err, inPod: strings.HasPrefix(stderr, "testclient:")}
	}
	head, body, _ := strings.Cut(out, "\n")
	status, err := strconv.Atoi(strings.TrimPrefix(head, "status="))
	if err != nil || !strings.HasPrefix(head, "status=") {
		return imdsAnswer{err: fmt.Errorf("testclient printed %q, want status=N", head)}
	}
	return imdsAnswer{status: status, body: body}
}

// waitIMDSAnswer polls imdsGet until the agent knows the calling pod (its
// watch may not have seen a new pod's IP yet: 404 "no running pod") and
// returns that answer.
func waitIMDSAnswer(ctx context.Context, t *testing.T, c *framework.Cluster, ns, pod, query string) imdsAnswer {
	t.Helper()
	var a imdsAnswer
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		a = imdsGet(ctx, c, ns, pod, query)
		return a.err == nil && (a.status != http.StatusNotFound || !strings.Contains(a.body, "no running pod on this node has IP")), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s: the agent never judged it: %v (last: status=%d %s, %v)", ns, pod, err, a.status, a.body, a.err)
	}
	return a
}

// imdsError decodes an IMDS error body; anything else, a token above all, is
// an error.
func imdsError(body string) (code, desc string, err error) {
	var e map[string]any
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return "", "", fmt.Errorf("not JSON: %w", err)
	}
	if _, ok := e["access_token"]; ok {
		return "", "", errors.New("the error response carries an access token")
	}
	code, _ = e["error"].(string)
	desc, _ = e["error_description"].(string)
	if code == "" {
		return "", "", fmt.Errorf("no \"error\" in %s", body)
	}
	return code, desc, nil
}

// checkToken checks a 200 IMDS body: its access token verifies and names
// want as its app, and so does client_id.
func checkToken(v *tokenverify.Verifier, body, want string) error {
	var r struct {
		AccessToken string `json:"access_token"`
		ClientID    string `json:"client_id"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return fmt.Errorf("token response is not JSON: %w", err)
	}
	// Not the load's context: its end must not turn into a failed check.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	claims, err := v.Verify(ctx, r.AccessToken)
	if err != nil {
		return fmt.Errorf("access token does not verify: %w", err)
	}
	if !strings.EqualFold(r.ClientID, want) || !strings.EqualFold(claims.AppID, want) {
		return fmt.Errorf("client_id %s, token appid %s", r.ClientID, claims.AppID)
	}
	return nil
}

// failureKind names why a request got no HTTP answer.
func failureKind(a imdsAnswer) string {
	if !a.inPod {
		return "exec failed"
	}
	for _, k := range []string{"connection refused", "connection reset", "EOF", "timeout"} {
		if strings.Contains(a.err.Error(), k) {
			return k
		}
	}
	return "other transport error"
}

// loadPod is a testclient pod of agent-restarted-under-load: it asks for
// a token in a loop and records every answer.
type loadPod struct {
	name, sa string
	labels   map[string]string
	query    string // added to the request: client_id=
	want     string // the client id of its identity

	mu      sync.Mutex // protects results
	results []loadResult
}

type loadResult struct {
	start, end time.Time
	a          imdsAnswer
	wrong      error // a 200 whose token is not want's
}

// run asks for a token every 100 ms until stop is closed (or ctx ends),
// in bursts of 10 requests per exec (an exec alone takes about a second on
// a busy node).
func (lp *loadPod) run(ctx context.Context, stop <-chan struct{}, c *framework.Cluster, ns string, v *tokenverify.Verifier) {
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		rs, err := imdsBurst(rctx, c, ns, lp.name, lp.query, 10, 100*time.Millisecond)
		cancel()
		if ctx.Err() != nil {
			return // the test is over: not answers
		}
		if err != nil {
			rs = []loadResult{{start: start, end: time.Now(), a: imdsAnswer{err: err}}}
		}
		for i := range rs {
			if rs[i].a.err == nil && rs[i].a.status == http.StatusOK {
				rs[i].wrong = checkToken(v, rs[i].a.body, lp.want)
			}
		}
		lp.mu.Lock()
		lp.results = append(lp.results, rs...)
		lp.mu.Unlock()
	}
}

// imdsBurst sends n token requests, every apart, from inside a testclient
// pod in one exec (testclient get -n) and returns them with the times the
// pod saw (the node's clock, as the test's).
func imdsBurst(ctx context.Context, c *framework.Cluster, ns, pod, query string, n int, every time.Duration) ([]loadResult, error) {
	out, _, err := c.Exec(ctx, ns, pod, "", "/testclient", "get", "-H", "Metadata: true", "-n", strconv.Itoa(n), "-every", every.String(),
		"http://169.254.169.254"+imdsTokenPath+query)
	if err != nil {
		return nil, err
	}
	var rs []loadResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var start, end int64
		var r loadResult
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("testclient printed %q", line)
		}
		if _, err := fmt.Sscanf(f[0]+" "+f[1], "start=%d end=%d", &start, &end); err != nil {
			return nil, fmt.Errorf("testclient printed %q: %w", line, err)
		}
		r.start, r.end = time.Unix(0, start), time.Unix(0, end)
		if msg, ok := strings.CutPrefix(f[2], "error="); ok {
			msg, err := strconv.Unquote(msg)
			if err != nil {
				return nil, fmt.Errorf("testclient printed %q: %w", line, err)
			}
			r.a = imdsAnswer{err: errors.New(msg), inPod: true}
		} else if _, err := fmt.Sscanf(f[2], "status=%d body=%q", &r.a.status, &r.a.body); err != nil {
			return nil, fmt.Errorf("testclient printed %q: %w", line, err)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// servedAfter returns when the first request sent after t0 got a token of
// the pod's identity.
func (lp *loadPod) servedAfter(t0 time.Time) (time.Time, bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	for _, r := range lp.results {
		if r.start.After(t0) && r.a.err == nil && r.a.status == http.StatusOK && r.wrong == nil {
			return r.end, true
		}
	}
	return time.Time{}, false
}

// last describes the pod's last answer.
func (lp *loadPod) last() string {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if len(lp.results) == 0 {
		return lp.name + ": no answer yet"
	}
	r := lp.results[len(lp.results)-1]
	if r.a.err != nil {
		return fmt.Sprintf("%s: %v", lp.name, r.a.err)
	}
	return fmt.Sprintf("%s: status=%d %.200s (wrong: %v)", lp.name, r.a.status, r.a.body, r.wrong)
}

// waitAllServedAfter waits until every pod got its token for a request sent
// after t0 and returns when the last of them did.
func waitAllServedAfter(ctx context.Context, t *testing.T, load []*loadPod, t0 time.Time, what string) time.Time {
	t.Helper()
	var last time.Time
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		last = time.Time{}
		for _, lp := range load {
			at, ok := lp.servedAfter(t0)
			if !ok {
				return false, nil
			}
			if at.After(last) {
				last = at
			}
		}
		return true, nil
	})
	if err != nil {
		var lasts []string
		for _, lp := range load {
			lasts = append(lasts, lp.last())
		}
		t.Fatalf("not every pod got its token %s: %v; last answers:\n%s", what, err, strings.Join(lasts, "\n"))
	}
	return last
}

// agentCredential reads the agent pod's service-account token from the
// node's disk, as anyone with root on the node could, and returns a client
// using it.
func agentCredential(ctx context.Context, t *testing.T, c *framework.Cluster) *kubernetes.Clientset {
	t.Helper()
	pod := agentPod(ctx, t, c)
	files, err := filepath.Glob(filepath.Join(c.KubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~projected", "kube-api-access-*", "token"))
	if err != nil || len(files) != 1 {
		t.Fatalf("the agent pod's projected token under %s: %v (%d files)", c.KubeletDir, err, len(files))
	}
	tok, err := os.ReadFile(files[0])
	must(t, err)
	rc := rest.AnonymousClientConfig(c.Config)
	rc.BearerToken = strings.TrimSpace(string(tok))
	cs, err := kubernetes.NewForConfig(rc)
	must(t, err)
	return cs
}

// agentPod returns the agent's pod (one node, one pod).
func agentPod(ctx context.Context, t *testing.T, c *framework.Cluster) *corev1.Pod {
	t.Helper()
	pods, err := c.Clientset.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-agent"})
	if err != nil {
		t.Fatalf("list agent pods: %v", err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("%d agent pods, want 1", len(pods.Items))
	}
	return &pods.Items[0]
}

// deletePodAndWait deletes pod with its own grace period and returns when
// it is gone from the API server (the kubelet saw its containers end).
func deletePodAndWait(ctx context.Context, t *testing.T, c *framework.Cluster, pod *corev1.Pod) time.Time {
	t.Helper()
	if err := c.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); err != nil {
		t.Fatalf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		var p corev1.Pod
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), &p)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && p.UID != pod.UID, err
	})
	if err != nil {
		t.Fatalf("pod %s/%s not gone: %v", pod.Namespace, pod.Name, err)
	}
	return time.Now()
}

// cniConfDir is where hack/cluster.sh writes the node's CNI config
// ($CLUSTER_RUN/cni/net.d, hack/lib.sh).
const cniConfDir = "/run/podid/cni/net.d"

// hostLocalState returns the directory in which the node's host-local IPAM
// records the pod network's allocations (<dataDir>/<network name>).
func hostLocalState(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(cniConfDir, "*.conflist"))
	if err != nil || len(files) != 1 {
		t.Fatalf("want one CNI config in %s, found %v (%v)", cniConfDir, files, err)
	}
	b, err := os.ReadFile(files[0])
	must(t, err)
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			IPAM struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("%s: %v", files[0], err)
	}
	for _, p := range conf.Plugins {
		if p.IPAM.Type == "host-local" {
			dir := p.IPAM.DataDir
			if dir == "" {
				dir = "/var/lib/cni/networks" // host-local's default
			}
			return filepath.Join(dir, conf.Name)
		}
	}
	t.Fatalf("%s has no host-local IPAM", files[0])
	return ""
}

// nextHostLocalIP is the address host-local gives the next pod (round
// robin: the one after last_reserved_ip.0).
func nextHostLocalIP(t *testing.T, dir string) netip.Addr {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "last_reserved_ip.0"))
	must(t, err)
	last, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	must(t, err)
	return last.Next()
}

// plantStaleCNIRecord leaves in libcni's cache what a sandbox killed
// without a CNI DEL leaves: a record (a copy of a live one) that gives ip
// to a pod that is gone, on a host interface the node does not have. It is
// removed when t ends.
func plantStaleCNIRecord(t *testing.T, ip netip.Addr) {
	t.Helper()
	live, err := filepath.Glob(filepath.Join(intercept.DefaultCNIResultsDir, "podid-*"))
	if err != nil || len(live) == 0 {
		t.Fatalf("no CNI record of the pod network to copy in %s (%v)", intercept.DefaultCNIResultsDir, err)
	}
	b, err := os.ReadFile(live[0])
	must(t, err)
	var rec map[string]any
	must(t, json.Unmarshal(b, &rec))
	id := hex.EncodeToString([]byte(t.Name()))[:32] + "deadbeefdeadbeefdeadbeefdeadbeef"
	rec["containerId"] = id
	rec["cniArgs"] = [][2]string{{"K8S_POD_NAMESPACE", "gone"}, {"K8S_POD_NAME", "killed-without-del"}, {"K8S_POD_UID", "00000000-0000-0000-0000-000000000001"}, {"K8S_POD_INFRA_CONTAINER_ID", id}}
	res, _ := rec["result"].(map[string]any)
	ifs, _ := res["interfaces"].([]any)
	ips, _ := res["ips"].([]any)
	if len(ifs) != 3 || len(ips) != 1 {
		t.Fatalf("%s: want the bridge plugin's 3 interfaces and 1 address, got %d and %d", live[0], len(ifs), len(ips))
	}
	ifs[1].(map[string]any)["name"] = "vethgone0"
	ifs[2].(map[string]any)["mac"] = "02:00:00:de:ad:01"
	ips[0].(map[string]any)["address"] = ip.String() + "/24"
	out, err := json.Marshal(rec)
	must(t, err)
	path := filepath.Join(intercept.DefaultCNIResultsDir, "podid-"+id+"-eth0")
	must(t, os.WriteFile(path, out, 0o600))
	t.Cleanup(func() { _ = os.Remove(path) })
}

// nextPodGetsIP makes host-local give ip to the next pod set up on the
// node. host-local allocates round robin, from the address after the one in
// last_reserved_ip.<range>, so a released IP would otherwise come back only
// after the whole range: once ip is released, that file is set to the
// address before it, under host-local's own lock.
func nextPodGetsIP(ctx context.Context, t *testing.T, dir string, ip netip.Addr) {
	t.Helper()
	file := filepath.Join(dir, ip.String())
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(file)
		if os.IsNotExist(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("host-local never released %s: %v", ip, err)
	}
	// One range set in the config: its index is 0.
	cursor := filepath.Join(dir, "last_reserved_ip.0")
	if _, err := os.Stat(cursor); err != nil {
		t.Fatalf("host-local state without its round-robin cursor: %v", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	must(t, err)
	defer lock.Close() // releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock host-local state: %v", err)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatalf("%s was allocated again before the test could reuse it", ip)
	}
	must(t, os.WriteFile(cursor, []byte(ip.Prev().String()), 0o644))
}

// spooferPod is a pod running spoofer (sleeping until exec'd) with the
// default capabilities.
func spooferPod(ns, name string) *corev1.Pod {
	p := framework.TestClientPod(ns, name)
	p.Spec.Containers[0].Image = spooferImage
	p.Spec.Containers[0].Command = []string{"/spoofer", "sleep"}
	return p
}

// spooferResult is what spoofer get printed (test/e2e/images/spoofer).
type spooferResult struct {
	Src        string `json:"src"`
	GatewayMAC string `json:"gateway_mac"`
	ARPClaims  int    `json:"arp_claims"`
	ARPAnswers int    `json:"arp_answers"`
	SYNs       int    `json:"syns"`
	SynAck     bool   `json:"synack"`
	Reset      bool   `json:"reset"`
	Status     string `json:"status"`
	Body       string `json:"body"`
	Error      string `json:"error"`
}

// runSpoofer has pod speak TCP by hand to 169.254.169.254:80 from address
// src (claimed in ARP) and ask for a token, as an application would.
func runSpoofer(ctx context.Context, t *testing.T, c *framework.Cluster, pod *corev1.Pod, src, gw string) spooferResult {
	t.Helper()
	out, stderr, err := c.Exec(ctx, pod.Namespace, pod.Name, "", "/spoofer", "get", "-timeout", "5s", "-src", src, "-gw", gw, "-H", "Metadata: true", imdsTokenPath)
	if err != nil {
		t.Fatalf("spoofer in %s/%s: %v (%s)", pod.Namespace, pod.Name, err, stderr)
	}
	var r spooferResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("spoofer printed %q: %v", out, err)
	}
	return r
}

// podGateway is the pod network's gateway: the bridge's address.
func podGateway(t *testing.T, c *framework.Cluster) string {
	t.Helper()
	if _, err := netip.ParseAddr(c.BridgeIP); err != nil {
		t.Fatalf("bridge address %q: %v", c.BridgeIP, err)
	}
	return c.BridgeIP
}

// podPrefixLen is the prefix length of the pods' addresses (the pod CIDR's).
func podPrefixLen(t *testing.T, c *framework.Cluster) string {
	t.Helper()
	p, err := netip.ParsePrefix(c.PodCIDR)
	must(t, err)
	return strconv.Itoa(p.Bits())
}

// effectiveCap reports whether capability bit is in the CapEff line of a
// /proc/<pid>/status.
func effectiveCap(t *testing.T, status string, bit uint) bool {
	t.Helper()
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			must(t, err)
			return caps&(1<<bit) != 0
		}
	}
	t.Fatalf("no CapEff in %q", status)
	return false
}

// nodeNeighbour is the MAC the node's neighbour table has for ip on the
// pod bridge ("" if none).
func nodeNeighbour(t *testing.T, c *framework.Cluster, ip string) string {
	t.Helper()
	out, err := exec.Command("ip", "neigh", "show", ip, "dev", c.Bridge).Output()
	must(t, err)
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// podMAC is the MAC of pod's eth0.
func podMAC(ctx context.Context, t *testing.T, c *framework.Cluster, pod *corev1.Pod) string {
	t.Helper()
	out, _, err := c.Exec(ctx, pod.Namespace, pod.Name, "", "cat", "/sys/class/net/eth0/address")
	must(t, err)
	return strings.TrimSpace(out)
}

// victimStillServed checks the victim's next request gets a token that
// verifies and is its own identity's.
func victimStillServed(ctx context.Context, t *testing.T, c *framework.Cluster, v *tokenverify.Verifier, victim *corev1.Pod, clientID string) {
	t.Helper()
	a := imdsGet(ctx, c, victim.Namespace, victim.Name, "")
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("victim %s after the attack: status=%d %v %.300s", victim.Name, a.status, a.err, a.body)
	}
	if err := checkToken(v, a.body, clientID); err != nil {
		t.Fatalf("victim %s after the attack: %v", victim.Name, err)
	}
	t.Logf("victim %s after the attack: 200, a verified token for its own identity %s", victim.Name, clientID)
}

// guardJumps are the jumps into the agent's anti-spoofing chains
// (intercept.Guard with its default chain prefix): table, chain, target.
var guardJumps = [][3]string{
	{"nat", "PREROUTING", "PODID-GUARD-IN"},
	{"filter", "OUTPUT", "PODID-GUARD-OUT"},
	{"filter", "FORWARD", "PODID-GUARD-OUT"},
}

// removeGuardJumps takes the agent's anti-spoofing rules out of the node's
// path (the chains stay; the agent puts the jumps back within 10 s).
func removeGuardJumps() {
	for _, j := range guardJumps {
		for exec.Command("ebtables", "-t", j[0], "-D", j[1], "-j", j[2]).Run() == nil {
		}
	}
}

// guardJumpsInPlace reports whether every jump into the guard's chains is
// on the node.
func guardJumpsInPlace(t *testing.T) bool {
	t.Helper()
	for _, j := range guardJumps {
		out, err := exec.Command("ebtables", "-t", j[0], "-L", j[1]).Output()
		must(t, err)
		if !strings.Contains(string(out), "-j "+j[2]) {
			return false
		}
	}
	return true
}

// nodeIPv6 lists the node's IPv6 addresses (ip -6 addr show ARGS).
func nodeIPv6(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-6", "-o", "addr", "show"}, args...)...).Output()
	must(t, err)
	var addrs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		for i, w := range f {
			if w == "inet6" && i+1 < len(f) {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					addrs = append(addrs, p.Addr().String())
				}
			}
		}
	}
	return addrs
}
