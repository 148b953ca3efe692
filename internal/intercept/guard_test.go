package intercept

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const bridgeConf = `{"cniVersion":"0.4.0","name":"podid","plugins":[{"type":"bridge","bridge":"podid0","isGateway":true},{"type":"portmap"}]}`

// cniRecord is a libcni cache record as the bridge plugin leaves it:
// interfaces bridge, host veth, pod eth0; the address on interface 2.
func cniRecord(id, ns, name, uid, veth, mac, addr string) string {
	return fmt.Sprintf(`{"kind":"cniCacheV1","containerId":%q,"config":%q,"ifName":"eth0","networkName":"podid",
"cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAMESPACE",%q],["K8S_POD_NAME",%q],["K8S_POD_INFRA_CONTAINER_ID",%q],["K8S_POD_UID",%q]],
"result":{"cniVersion":"0.4.0","interfaces":[{"name":"podid0","mac":"aa:bb:cc:00:00:01"},{"name":%q,"mac":"aa:bb:cc:00:00:02"},{"name":"eth0","mac":%q,"sandbox":"/var/run/netns/cni-1"}],
"ips":[{"version":"4","interface":2,"address":%q,"gateway":"10.244.0.1"}],"dns":{}}}`,
		id, base64.StdEncoding.EncodeToString([]byte(bridgeConf)), ns, name, id, uid, veth, mac, addr)
}

func TestParseCNIResult(t *testing.T) {
	ok := cniRecord("c1", "ns", "p", "uid-1", "veth0a1b2c3d", "0a:58:0a:f4:00:05", "10.244.0.5/24")
	routed := `{"kind":"cniCacheV1","containerId":"c2","config":"` + base64.StdEncoding.EncodeToString([]byte(`{"type":"ptp"}`)) + `","ifName":"eth0",
"cniArgs":[["K8S_POD_NAMESPACE","ns"],["K8S_POD_NAME","r"]],
"result":{"interfaces":[{"name":"cali1234","mac":"ee:ee:ee:ee:ee:ee"},{"name":"eth0","mac":"02:00:00:00:00:07","sandbox":"/run/netns/x"}],"ips":[{"interface":1,"address":"10.1.2.3/32"},{"interface":1,"address":"fd00::3/128"}]}}`
	for _, tt := range []struct {
		name, data string
		want       Sandbox
		err        string
	}{
		{"bridge", ok, Sandbox{ContainerID: "c1", PodUID: "uid-1", PodNamespace: "ns", PodName: "p", HostIf: "veth0a1b2c3d", Bridge: "podid0",
			MAC: mustMAC("0a:58:0a:f4:00:05"), IPs: []netip.Addr{netip.MustParseAddr("10.244.0.5")}}, ""},
		{"routed", routed, Sandbox{ContainerID: "c2", PodNamespace: "ns", PodName: "r", HostIf: "cali1234",
			MAC: mustMAC("02:00:00:00:00:07"), IPs: []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::3")}}, ""},
		{"not JSON", "{", Sandbox{}, "not a CNI cache record"},
		{"other kind", `{"kind":"x"}`, Sandbox{}, "kind"},
		{"no pod", strings.Replace(ok, "K8S_POD_NAME\"", "X\"", 1), Sandbox{}, "names no pod"},
		{"bad MAC", strings.Replace(ok, "0a:58:0a:f4:00:05", "zz", 1), Sandbox{}, "no Ethernet address"},
		{"no address", strings.Replace(ok, `"ips":[{"version":"4","interface":2,"address":"10.244.0.5/24","gateway":"10.244.0.1"}]`, `"ips":[]`, 1), Sandbox{}, "no address"},
		{"address of another interface", strings.Replace(ok, `"interface":2`, `"interface":1`, 1), Sandbox{}, "no address"},
		{"two host interfaces", strings.Replace(ok, `{"name":"podid0",`, `{"name":"other0",`, 1), Sandbox{}, "2 host-side interfaces"},
		{"host interface not a plain name", strings.Replace(ok, "veth0a1b2c3d", "veth+", 1), Sandbox{}, "not a plain interface name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCNIResult([]byte(tt.data))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func sandbox(id, veth, mac, ip string) Sandbox {
	return Sandbox{ContainerID: id, PodNamespace: "ns", PodName: id, PodUID: "uid-" + id, HostIf: veth, Bridge: "podid0",
		MAC: mustMAC(mac), IPs: []netip.Addr{netip.MustParseAddr(ip)}}
}

// nodeLinks is a GuardConfig.Links for a node with these interfaces.
func nodeLinks(names ...string) func() (map[string]bool, error) {
	return func() (map[string]bool, error) {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m, nil
	}
}

// A record whose host interface is gone (its sandbox was killed without a
// CNI DEL) claims nothing: the live pod the IPAM gave the address to next
// is guarded, and the stale record gets no rules. If the interfaces cannot
// be listed every record counts: the address is refused, never guessed.
func TestGuardIgnoresStaleRecords(t *testing.T) {
	stale := sandbox("old", "vethgone", "02:00:00:00:00:01", "10.244.0.5")
	fresh := sandbox("new", "vethnew", "02:00:00:00:00:02", "10.244.0.5")
	other := sandbox("o", "vetho", "02:00:00:00:00:03", "10.244.0.6")
	for _, tt := range []struct {
		name      string
		links     func() (map[string]bool, error)
		wantOwner string // uid guarded at 10.244.0.5, "" for none
		wantStale int
		wantErr   string
	}{
		{"stale record ignored", nodeLinks("vethnew", "vetho"), "uid-new", 1, ""},
		{"both live: refused", nodeLinks("vethgone", "vethnew", "vetho"), "", 0, "claimed by more than one sandbox"},
		{"interfaces unknown: refused", func() (map[string]bool, error) { return nil, errors.New("netlink down") }, "", 0, "netlink down"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			g, _ := NewGuard(GuardConfig{Exec: r.exec, Links: tt.links})
			err := g.Sync(t.Context(), []Sandbox{stale, fresh, other}, false)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			sb, ok := g.Owner(netip.MustParseAddr("10.244.0.5"))
			if got := map[bool]string{true: sb.PodUID}[ok]; got != tt.wantOwner {
				t.Errorf("10.244.0.5 guarded for %q, want %q", got, tt.wantOwner)
			}
			if _, ok := g.Owner(netip.MustParseAddr("10.244.0.6")); !ok {
				t.Error("an unrelated live sandbox is not guarded")
			}
			if g.Stale() != tt.wantStale {
				t.Errorf("Stale() = %d, want %d", g.Stale(), tt.wantStale)
			}
			if strings.Contains(strings.Join(r.stdin, ""), "vethgone") && tt.wantStale > 0 {
				t.Errorf("rules for a stale record:\n%s", r.stdin)
			}
		})
	}
}

// recorder is an ExecFunc that records commands and fails on demand.
type recorder struct {
	mu      sync.Mutex // protects the fields
	cmds    []string
	stdin   []string
	fail    string // a command line containing this fails
	listing string // output of -L
	// rawChain: the iptables chain for routed pods exists (else listing
	// it fails, as iptables does).
	rawChain bool
}

func (r *recorder) exec(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := name + " " + strings.Join(args, " ")
	r.cmds = append(r.cmds, line)
	if stdin != nil {
		r.stdin = append(r.stdin, string(stdin))
	}
	if r.fail != "" && strings.Contains(line, r.fail) {
		return nil, errors.New("injected failure")
	}
	if strings.Contains(line, "-t raw -S ") && !r.rawChain {
		return nil, errors.New("iptables: No chain/target/match by that name")
	}
	if strings.Contains(line, " -L ") {
		return []byte(r.listing), nil
	}
	return nil, nil
}

func TestGuardRulesAndOwners(t *testing.T) {
	r := &recorder{}
	g, err := NewGuard(GuardConfig{Exec: r.exec, Links: nodeLinks("vethv", "vetha", "vethn")})
	if err != nil {
		t.Fatal(err)
	}
	victim := sandbox("v", "vethv", "02:00:00:00:00:01", "10.244.0.5")
	victim.IPs = append(victim.IPs, netip.MustParseAddr("fd00:10:244::5")) // dual stack
	attacker := sandbox("a", "vetha", "02:00:00:00:00:02", "10.244.0.6")
	if err := g.Sync(t.Context(), []Sandbox{victim, attacker}, false); err != nil {
		t.Fatal(err)
	}
	in := r.stdin[0]
	for _, want := range []string{
		"*nat\n:PODID-GUARD-IN RETURN\n",
		"-A PODID-GUARD-IN -s 02:00:00:00:00:01 ! -i vethv -j DROP\n",
		"-A PODID-GUARD-IN -p IPv4 --ip-src 10.244.0.5 ! -i vethv -j DROP\n",
		"-A PODID-GUARD-IN -p ARP --arp-ip-src 10.244.0.5 ! -i vethv -j DROP\n",
		"-A PODID-GUARD-IN -i vetha ! -s 02:00:00:00:00:02 -j DROP\n",
		"-A PODID-GUARD-IN -i vetha -p IPv4 ! --ip-src 10.244.0.6 -j DROP\n",
		"-A PODID-GUARD-IN -i vetha -p ARP --arp-mac-src ! 02:00:00:00:00:02 -j DROP\n",
		"-A PODID-GUARD-IN -i vetha -p 802_1Q -j DROP\n",
		"*filter\n:PODID-GUARD-OUT RETURN\n",
		"-A PODID-GUARD-OUT -p IPv4 --ip-dst 10.244.0.5 ! -o vethv -j DROP\n",
		"-A PODID-GUARD-IN -p IPv6 --ip6-src fd00:10:244::5 ! -i vethv -j DROP\n",
		"-A PODID-GUARD-OUT -p IPv6 --ip6-dst fd00:10:244::5 ! -o vethv -j DROP\n",
	} {
		if !strings.Contains(in, want) {
			t.Errorf("restore input lacks %q:\n%s", want, in)
		}
	}
	for _, want := range []string{"ebtables -t nat -I PREROUTING 1 -j PODID-GUARD-IN", "ebtables -t filter -I OUTPUT 1 -j PODID-GUARD-OUT", "ebtables -t filter -I FORWARD 1 -j PODID-GUARD-OUT"} {
		if !strings.Contains(strings.Join(r.cmds, "\n"), want) {
			t.Errorf("no %q in %q", want, r.cmds)
		}
	}
	if sb, ok := g.Owner(netip.MustParseAddr("10.244.0.5")); !ok || sb.PodUID != "uid-v" || !g.Ready() {
		t.Fatalf("owner of the victim's address: %+v %v", sb, ok)
	}

	// Unchanged records: nothing applied; forced: applied again.
	n := len(r.stdin)
	_ = g.Sync(t.Context(), []Sandbox{attacker, victim}, false)
	if len(r.stdin) != n {
		t.Fatal("unchanged rules applied again")
	}
	r.listing = "Bridge chain: PREROUTING, entries: 1, policy: ACCEPT\n-j PODID-GUARD-IN\n"
	_ = g.Sync(t.Context(), []Sandbox{attacker, victim}, true)
	if len(r.stdin) != n+1 || strings.Contains(r.cmds[len(r.cmds)-1], "-I PREROUTING") {
		t.Fatalf("forced sync: %q", r.cmds)
	}

	// The victim leaves and the rules cannot be applied: its address is no
	// longer reported as guarded; the attacker's (unchanged) still is.
	r.fail = "ebtables-restore"
	if err := g.Sync(t.Context(), []Sandbox{attacker}, false); err == nil {
		t.Fatal("failed apply not reported")
	}
	if _, ok := g.Owner(netip.MustParseAddr("10.244.0.5")); ok || g.Ready() {
		t.Fatal("a gone sandbox's address is reported guarded after a failed apply")
	}
	if _, ok := g.Owner(netip.MustParseAddr("10.244.0.6")); !ok {
		t.Fatal("an unchanged sandbox lost its guard on a failed apply")
	}
	// A sandbox that arrives while rules cannot be applied is not guarded.
	newcomer := sandbox("n", "vethn", "02:00:00:00:00:03", "10.244.0.7")
	_ = g.Sync(t.Context(), []Sandbox{attacker, newcomer}, false)
	if _, ok := g.Owner(netip.MustParseAddr("10.244.0.7")); ok {
		t.Fatal("a sandbox whose rules failed to apply is reported guarded")
	}
}

func TestGuardRefusesWhatItCannotProtect(t *testing.T) {
	r := &recorder{}
	g, _ := NewGuard(GuardConfig{Exec: r.exec, Links: nodeLinks("vetha", "vethb", "cali1", "veths", "vetho")})
	a := sandbox("a", "vetha", "02:00:00:00:00:01", "10.244.0.5")
	dup := sandbox("b", "vethb", "02:00:00:00:00:02", "10.244.0.5") // same address: records inconsistent
	routed := sandbox("r", "cali1", "02:00:00:00:00:03", "10.244.0.9")
	routed.Bridge = ""
	v6 := sandbox("s", "veths", "02:00:00:00:00:04", "fd00::4")
	ok := sandbox("o", "vetho", "02:00:00:00:00:05", "10.244.0.10")
	err := g.Sync(t.Context(), []Sandbox{a, dup, routed, v6, ok}, false)
	for _, want := range []string{"claimed by more than one sandbox", "the node routes 10.244.0.9/32 through [], not through cali1 alone", "0 IPv4 addresses"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	for _, ip := range []string{"10.244.0.5", "10.244.0.9", "fd00::4"} {
		if _, ok := g.Owner(netip.MustParseAddr(ip)); ok {
			t.Errorf("%s reported guarded", ip)
		}
	}
	if _, ok := g.Owner(netip.MustParseAddr("10.244.0.10")); !ok {
		t.Error("a protectable sandbox is not guarded")
	}
	if strings.Contains(r.stdin[0], "vetha") || strings.Contains(r.stdin[0], "cali1") {
		t.Errorf("rules for refused sandboxes:\n%s", r.stdin[0])
	}
}

// Routed pods (no bridge): an iptables rule per pod, and only for a pod
// the node routes through its own interface alone.
func TestGuardRoutedPods(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "route")
	// /proc/net/route as the kernel prints it: 10.244.0.9 and 10.244.0.10
	// through their own interfaces, 10.244.0.11 through another's.
	if err := os.WriteFile(routes, []byte("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
		"eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"+
		"cali1\t0900F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"+
		"cali2\t0A00F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"+
		"cali1\t0B00F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	links := nodeLinks("cali1", "cali2", "cali3", "vetho")
	g, _ := NewGuard(GuardConfig{Exec: r.exec, RoutesFile: routes, Links: links})
	routed := func(id, hostIf, ip string) Sandbox {
		sb := sandbox(id, hostIf, "02:00:00:00:00:09", ip)
		sb.Bridge, sb.MAC = "", nil
		return sb
	}
	a, b, wrong := routed("a", "cali1", "10.244.0.9"), routed("b", "cali2", "10.244.0.10"), routed("w", "cali3", "10.244.0.11")
	bridged := sandbox("o", "vetho", "02:00:00:00:00:05", "10.244.0.12")
	err := g.Sync(t.Context(), []Sandbox{a, b, wrong, bridged}, false)
	if err == nil || !strings.Contains(err.Error(), "routes 10.244.0.11/32 through [cali1], not through cali3 alone") {
		t.Fatalf("error %v, want the misrouted pod refused", err)
	}
	for ip, want := range map[string]bool{"10.244.0.9": true, "10.244.0.10": true, "10.244.0.11": false, "10.244.0.12": true} {
		if _, ok := g.Owner(netip.MustParseAddr(ip)); ok != want {
			t.Errorf("%s guarded: %v, want %v", ip, ok, want)
		}
	}
	var raw string
	for _, in := range r.stdin {
		if strings.HasPrefix(in, "*raw") {
			raw = in
		}
	}
	want := "*raw\n:PODID-GUARD-RAW - [0:0]\n-A PODID-GUARD-RAW -s 10.244.0.9/32 ! -i cali1 -j DROP\n-A PODID-GUARD-RAW -s 10.244.0.10/32 ! -i cali2 -j DROP\nCOMMIT\n"
	if raw != want {
		t.Fatalf("iptables input:\n%s\nwant:\n%s", raw, want)
	}
	if !strings.Contains(strings.Join(r.cmds, "\n"), "iptables -w 5 -t raw -C PREROUTING -j PODID-GUARD-RAW") {
		t.Errorf("jump not checked: %q", r.cmds)
	}
	if strings.Contains(r.stdin[len(r.stdin)-1], "cali") {
		t.Errorf("ebtables rules for routed pods:\n%s", r.stdin[len(r.stdin)-1])
	}
	r.fail = "-C PREROUTING" // the jump is missing: it is inserted
	_ = g.Sync(t.Context(), []Sandbox{a, b, wrong, bridged}, true)
	if !strings.Contains(strings.Join(r.cmds, "\n"), "iptables -w 5 -t raw -I PREROUTING 1 -j PODID-GUARD-RAW") {
		t.Errorf("no jump installed: %q", r.cmds)
	}
	r.fail = ""

	// The routed pods leave: the chain is emptied, not left with their
	// addresses.
	if err := g.Sync(t.Context(), []Sandbox{bridged}, false); err != nil {
		t.Fatal(err)
	}
	if got := r.stdin[len(r.stdin)-1]; got != "*raw\n:PODID-GUARD-RAW - [0:0]\nCOMMIT\n" {
		t.Fatalf("after the routed pods left: %q", got)
	}

	// A bridge-only node never creates the chain, but empties one an
	// earlier run left (at the first, forced, sync).
	r2 := &recorder{}
	g2, _ := NewGuard(GuardConfig{Exec: r2.exec, RoutesFile: routes, Links: links})
	_ = g2.Sync(t.Context(), []Sandbox{bridged}, true)
	if strings.Contains(strings.Join(r2.stdin, ""), "*raw") {
		t.Fatal("iptables chain created on a bridge-only node")
	}
	r3 := &recorder{rawChain: true}
	g3, _ := NewGuard(GuardConfig{Exec: r3.exec, RoutesFile: routes, Links: links})
	_ = g3.Sync(t.Context(), []Sandbox{bridged}, true)
	if !strings.Contains(strings.Join(r3.stdin, ""), "*raw\n:PODID-GUARD-RAW - [0:0]\nCOMMIT\n") {
		t.Fatalf("a leftover chain was not emptied: %q", r3.stdin)
	}
}

// A pod whose CNI record appears after the agent started is guarded by
// the time Ensure returns: Ensure reads the records afresh.
func TestGuardEnsureSyncsOnDemand(t *testing.T) {
	dir := t.TempDir()
	r := &recorder{}
	g, _ := NewGuard(GuardConfig{Exec: r.exec, ResultsDir: dir, Interval: time.Hour, Links: nodeLinks("vethx")})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ip := netip.MustParseAddr("10.244.0.5")
	if _, ok := g.Ensure(ctx, ip, false); ok {
		t.Fatal("guarded without a record")
	}
	if err := os.WriteFile(filepath.Join(dir, "podid-c1-eth0"), []byte(cniRecord("c1", "ns", "p", "uid-1", "vethx", "02:00:00:00:00:01", "10.244.0.5/24")), 0o600); err != nil {
		t.Fatal(err)
	}
	sb, ok := g.Ensure(ctx, ip, false)
	if !ok || sb.PodUID != "uid-1" || sb.HostIf != "vethx" {
		t.Fatalf("after the record appeared: %+v %v", sb, ok)
	}
	// The record is removed (CNI DEL): a fresh Ensure no longer finds it.
	if err := os.Remove(filepath.Join(dir, "podid-c1-eth0")); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Ensure(ctx, ip, true); ok {
		t.Fatal("still guarded after the record was removed")
	}
	// A cancelled wait returns at once.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, ok := g.Ensure(cctx, netip.MustParseAddr("10.244.0.77"), false); ok {
		t.Fatal("cancelled Ensure reported a guard")
	}
}

// A pod's record written after the agent started is guarded without any
// request asking (the watch on the records), so its first request finds
// the rules in place; its removal drops them.
func TestGuardWatchesRecords(t *testing.T) {
	dir := t.TempDir()
	r := &recorder{}
	g, _ := NewGuard(GuardConfig{Exec: r.exec, ResultsDir: dir, Interval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// The first sync (at start) has run once the on-demand sync returns.
	ip := netip.MustParseAddr("10.244.0.5")
	if _, ok := g.Ensure(ctx, ip, true); ok {
		t.Fatal("guarded without a record")
	}
	owned := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := g.Owner(ip); ok == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Owner(%s) did not become %v without a request", ip, want)
			}
			g.wmu.Lock()
			ch := g.synced
			g.wmu.Unlock()
			select { // the next sync, or a recheck
			case <-ch:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	// The host side is "lo": an interface every network namespace has.
	if err := os.WriteFile(filepath.Join(dir, "podid-c1-eth0"), []byte(cniRecord("c1", "ns", "p", "uid-1", "lo", "02:00:00:00:00:01", "10.244.0.5/24")), 0o600); err != nil {
		t.Fatal(err)
	}
	owned(true)
	if err := os.Remove(filepath.Join(dir, "podid-c1-eth0")); err != nil {
		t.Fatal(err)
	}
	owned(false)
}

func TestReadCNIResultsSkipsBadRecords(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "good"), []byte(cniRecord("c1", "ns", "p", "uid-1", "vethx", "02:00:00:00:00:01", "10.244.0.5/24")), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "bad"), []byte("{"), 0o600)
	// containerd's loopback record, as on the node: skipped without an error.
	_ = os.WriteFile(filepath.Join(dir, "cni-loopback-c1-lo"), []byte(`{"kind":"cniCacheV1","containerId":"c1","config":"e30=","ifName":"lo","networkName":"cni-loopback",
"cniArgs":[["K8S_POD_INFRA_CONTAINER_ID","c1"],["K8S_POD_UID","uid-1"],["IgnoreUnknown","1"],["K8S_POD_NAMESPACE","ns"],["K8S_POD_NAME","p"]],
"result":{"cniVersion":"0.3.1","dns":{},"interfaces":[{"mac":"00:00:00:00:00:00","name":"lo","sandbox":"/var/run/netns/cni-1"}],"ips":[{"address":"127.0.0.1/8","interface":0,"version":""},{"address":"::1/128","interface":0,"version":""}]}}`), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "huge"), make([]byte, maxResultSize+1), 0o600)
	sbs, errs := ReadCNIResults(dir)
	if len(sbs) != 1 || sbs[0].ContainerID != "c1" || len(errs) != 2 {
		t.Fatalf("got %d sandboxes, errors %v", len(sbs), errs)
	}
	if sbs, errs := ReadCNIResults(filepath.Join(dir, "missing")); len(sbs) != 0 || len(errs) != 0 {
		t.Fatalf("missing dir: %v %v", sbs, errs)
	}
}
