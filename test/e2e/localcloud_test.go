package e2e

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podid/podid/test/e2e/framework"
)

// clusterDNSIP is hack/cluster.sh's CoreDNS Service (the kubelet's clusterDNS).
const clusterDNSIP = "10.96.0.10"

// TestLocalCloud proves the local cloud on the real node (docs/local-cloud.md):
//
//	00 the sts (deploy/sts, with its local-cloud-dns name table) and a
//	   workload identity trusting seed 003's ServiceAccount;
//	01 the cluster DNS, asked from a pod: Azure's public names the local cloud
//	   serves are the sts's address, authoritative; other names — public,
//	   under a served zone, or unmapped Azure names — are NXDOMAIN; cluster
//	   names still resolve; and no DNS packet left the pod network meanwhile
//	   (a counting rule on the node's FORWARD chain);
//	02 the unmodified Go SDK with default options — WorkloadIdentityCredential
//	   and DefaultAzureCredential, AZURE_AUTHORITY_HOST the public
//	   authority as on AKS, the sts CA as the system trust store's file — gets
//	   a token by the public names.
func TestLocalCloud(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ns := c.Namespace(t)

	w := wiWorkload{name: "local-cloud", sa: "sademo", app: "localcloud", fic: true, clientID: newUUID(t)}
	w.subject = "system:serviceaccount:" + ns + ":" + w.sa

	// 00: the sts and the name table.
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, []wiWorkload{w})
	tr, caPEM := stsClientTransport(ctx, t, stsPodIP)
	var corefile corev1.ConfigMap
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &corefile))
	for _, plugin := range []string{"forward", "grpc"} {
		if strings.Contains(corefile.Data["Corefile"], plugin+" ") {
			t.Fatalf("the cluster DNS's Corefile uses %s: names it does not serve would leave the cluster", plugin)
		}
	}

	// 01: the cluster DNS, from a pod, with the node counting leaks.
	leaks := countDNSLeaks(t, c)
	pod := framework.TestClientPod(ns, "dns")
	c.CreatePod(ctx, t, pod)
	if _, err := c.WaitForPodReady(ctx, ns, pod.Name); err != nil {
		t.Fatal(err)
	}
	// The kubelet's clusterDNS: the pod asks CoreDNS, never the node's resolver.
	resolv, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "cat", "/etc/resolv.conf")
	must(t, err)
	if !strings.Contains(resolv, "nameserver "+clusterDNSIP+"\n") || strings.Count(resolv, "nameserver ") != 1 {
		t.Fatalf("pod resolv.conf:\n%s\nwant the one nameserver %s", resolv, clusterDNSIP)
	}
	dnsAsk := func(name string) string {
		out, stderr, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "dns", name)
		if err != nil {
			t.Fatalf("dns %s: %v %s", name, err, stderr)
		}
		return strings.TrimSpace(out)
	}
	served := "rcode=NOERROR aa=true a=" + stsServiceIP
	nx := "rcode=NXDOMAIN aa=true a="
	cases := []struct{ name, want string }{
		{"login.microsoftonline.com", served},
		{"LOGIN.microsoftonline.com", served}, // names are case-insensitive
		{"management.azure.com", served},
		{"podid-sts.podid-system.svc.cluster.local", served},
		{"kubernetes.default.svc.cluster.local", "rcode=NOERROR aa=true a=10.96.0.1"},
		{"graph.microsoft.com", nx},                                                        // an Azure name the local cloud does not serve
		{"myvault.vault.azure.net", served},                                                // the sts's Key Vaults, by Host
		{"devstoreaccount1.queue.core.windows.net", "rcode=NOERROR aa=true a=10.96.0.110"}, // Azurite's Service in podid-local
		{"a.b.vault.azure.net", nx},                                                        // one label below the suffix only
		{"x.login.microsoftonline.com", nx},                                                // under a served name
		{"example.com", nx},                                                                // the internet
		{"login.microsoftonline.com.evil.test", nx},                                        // a served name as a prefix
		{"no-such-svc.default.svc.cluster.local", nx},                                      // the kubernetes plugin's own answer
	}
	// The name table reaches CoreDNS with the kubelet's volume refresh (10 s
	// sync on the local node) and its reload (2 s): wait for the first name.
	var got string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
		got = dnsAsk(cases[0].name)
		return got == served, nil
	})
	if err != nil {
		t.Fatalf("login.microsoftonline.com from a pod: %q after 90 s, want %q", got, served)
	}
	for _, tc := range cases {
		if got := dnsAsk(tc.name); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if n := leaks(); n != 0 {
		t.Errorf("%d DNS packets left the pod network while pods resolved names", n)
	}
	t.Logf("cluster DNS: served names → %s, the rest NXDOMAIN; 0 DNS packets left the pod network", stsServiceIP)

	// 02: the Go SDK with default options by the public names.
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "podid-sts-ca"},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}))
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: w.sa},
	}))
	for _, cred := range []struct{ app, flag string }{{"wicred", ""}, {"defaultcred", "-default"}} {
		t.Run(cred.app, func(t *testing.T) {
			dep, cmd := seed003Deployment(ctx, t, c, cred.app, w.sa)
			if cred.flag != "" {
				dep.Spec.Template.Spec.Containers[0].Command = append(dep.Spec.Template.Spec.Containers[0].Command, cred.flag)
			}
			injectEnv(&dep.Spec.Template.Spec, w.clientID, publicAuthority)
			c.Apply(ctx, t, ns, mustYAML(t, dep))
			p := waitForPodOf(ctx, t, c, ns, "app="+cred.app)
			logs := waitForLog(ctx, t, c, ns, p.Name, "wiclient: token acquired")
			t.Logf("%s", lastLine(logs))
			access, _, err := c.Exec(ctx, ns, p.Name, "", append(cmd, "cat", "/tmp/access-token")...)
			if err != nil {
				t.Fatalf("read access token: %v", err)
			}
			verifyAccessToken(ctx, t, tr, strings.TrimSpace(access), w.clientID)
		})
	}
}

// countDNSLeaks adds rules without a target to the node's FORWARD chain that
// count DNS packets (UDP and TCP port 53) from the pod network to anywhere
// outside it — a resolver forwarding to the host's nameservers or the
// internet — and returns a reader of their total. Pods' queries to the
// cluster DNS are DNATed to the CoreDNS pod before FORWARD, so they stay
// inside the pod network and are not counted. Removed at cleanup.
func countDNSLeaks(t *testing.T, c *framework.Cluster) func() int64 {
	t.Helper()
	comment := "podid-e2e-dns-leak-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	rule := func(proto string) []string {
		return []string{"FORWARD", "-s", c.PodCIDR, "!", "-d", c.PodCIDR, "-p", proto, "--dport", "53", "-m", "comment", "--comment", comment}
	}
	ipt := func(args ...string) (string, error) {
		out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, proto := range []string{"udp", "tcp"} {
		if out, err := ipt(append([]string{"-I"}, rule(proto)...)...); err != nil {
			t.Fatalf("iptables -I %v: %v %s", rule(proto), err, out)
		}
		t.Cleanup(func() {
			if out, err := ipt(append([]string{"-D"}, rule(proto)...)...); err != nil {
				t.Errorf("iptables -D %v: %v %s", rule(proto), err, out)
			}
		})
	}
	return func() int64 {
		out, err := ipt("-nvxL", "FORWARD")
		if err != nil {
			t.Fatalf("iptables -L FORWARD: %v %s", err, out)
		}
		var n int64
		seen := 0
		for _, l := range strings.Split(out, "\n") {
			if !strings.Contains(l, comment) {
				continue
			}
			f := strings.Fields(l)
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatalf("iptables counter %q: %v", l, err)
			}
			n += v
			seen++
		}
		if seen != 2 {
			t.Fatalf("found %d of the 2 counting rules in FORWARD:\n%s", seen, out)
		}
		return n
	}
}

// injectEnv adds what podid webhook injects (docs/contracts.md §5) with the
// given authority.
func injectEnv(spec *corev1.PodSpec, clientID, authority string) {
	for i := range spec.Containers {
		spec.Containers[i].Env = append(spec.Containers[i].Env,
			corev1.EnvVar{Name: "AZURE_CLIENT_ID", Value: clientID},
			corev1.EnvVar{Name: "AZURE_TENANT_ID", Value: wiTenantID},
			corev1.EnvVar{Name: "AZURE_FEDERATED_TOKEN_FILE", Value: framework.AzureTokenFile},
			corev1.EnvVar{Name: "AZURE_AUTHORITY_HOST", Value: authority},
		)
	}
	pod := &corev1.Pod{Spec: *spec}
	framework.AddProjectedToken(pod, framework.TokenExchangeAudience)
	*spec = pod.Spec
}
