package intercept

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podid/podid/internal/testenv"
)

// spoofNet is a node in miniature, all in fresh network namespaces: a
// "node" namespace with a bridge and a server on the bridge address that
// answers each connection with the caller's source address (as the agent
// attributes a request), and two "pods" on the bridge through veths.
type spoofNet struct {
	t                testing.TB
	id               string
	node, victim, at string // namespace names
	serverAddr       string
	serverAddr6      string
	victimSB, atSB   Sandbox
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newSpoofNet(t *testing.T) *spoofNet {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	n := &spoofNet{t: t, id: id, node: "podid-gn-" + id, victim: "podid-gv-" + id, at: "podid-ga-" + id, serverAddr: "10.99.0.1:8080", serverAddr6: "[fd99::1]:8080"}
	for _, ns := range []string{n.node, n.victim, n.at} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	in := func(ns string, args ...string) string {
		return sh(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
	}
	in(n.node, "ip", "link", "add", "br0", "type", "bridge")
	in(n.node, "ip", "addr", "add", "10.99.0.1/24", "dev", "br0")
	in(n.node, "ip", "link", "set", "br0", "up")
	in(n.node, "ip", "link", "set", "lo", "up")
	// Dual stack, as a cluster with IPv6 pod addresses (nodad: no
	// duplicate detection delays in a test).
	in(n.node, "ip", "addr", "add", "fd99::1/64", "dev", "br0", "nodad")
	pod := func(ns, veth, mac, ip, ip6 string) Sandbox {
		in(n.node, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		in(n.node, "ip", "link", "set", veth, "master", "br0", "up")
		in(ns, "ip", "link", "set", "eth0", "address", mac)
		in(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1") // the tests take the victim down and up
		// A new namespace may inherit the host's IPv4 forwarding; a pod
		// that forwards hands the answers it steals on to their owner,
		// whose reset can end the theft. Off, so that the unguarded
		// controls are not a race.
		in(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		in(ns, "ip", "addr", "add", ip+"/24", "dev", "eth0")
		in(ns, "ip", "addr", "add", ip6+"/64", "dev", "eth0", "nodad")
		in(ns, "ip", "link", "set", "eth0", "up")
		in(ns, "ip", "link", "set", "lo", "up")
		return Sandbox{ContainerID: ns, PodNamespace: "ns", PodName: ns, PodUID: "uid-" + ns, HostIf: veth, Bridge: "br0",
			MAC: mustMAC(mac), IPs: []netip.Addr{netip.MustParseAddr(ip), netip.MustParseAddr(ip6)}}
	}
	n.victimSB = pod(n.victim, "vethv"+id, "02:00:00:00:99:05", "10.99.0.5", "fd99::5")
	n.atSB = pod(n.at, "vetha"+id, "02:00:00:00:99:06", "10.99.0.6", "fd99::6")

	n.serve(n.serverAddr)
	n.serve(n.serverAddr6)
	return n
}

// serve runs, in the node's namespace until the test ends, the server whose
// answer is the identity it would serve: the address it sees. It speaks
// just enough HTTP for spoofer get to read its answer.
func (n *spoofNet) serve(addr string) {
	var ln net.Listener
	inNetns(n.t, n.node, func() {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			n.t.Error(err)
		}
	})
	if ln == nil {
		n.t.FailNow()
	}
	n.t.Cleanup(func() { _ = ln.Close() }) // ends the accept loop
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			body := "token-for-" + host + "\n"
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = bufio.NewReader(c).ReadString('\n') // the request line, if any
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			_ = c.Close()
		}
	}()
}

// guard is a Guard of the test's node namespace: its commands run there
// and it sees that namespace's interfaces.
func (n *spoofNet) guard(cfg GuardConfig) (*Guard, error) {
	cfg.Exec = func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		return Exec(ctx, stdin, "ip", append([]string{"netns", "exec", n.node, name}, args...)...)
	}
	cfg.Links = func() (names map[string]bool, err error) {
		inNetns(n.t, n.node, func() { names, err = interfaceNames() })
		return names, err
	}
	return NewGuard(cfg)
}

// inNetns runs f on an OS thread switched into namespace ns; the thread is
// discarded afterwards (it never returns to the runtime's pool).
func inNetns(t testing.TB, ns string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := os.Open("/run/netns/" + ns)
		if err != nil {
			t.Error(err)
			return
		}
		defer fd.Close()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns %s: %v", ns, err)
			return
		}
		f()
	}()
	<-done
}

// ask connects from namespace ns with source address src (IPv4 or IPv6)
// and returns the body the server answered ("" if nothing came back
// within the bound).
func (n *spoofNet) ask(ns, src string) string {
	var got string
	server := n.serverAddr
	if strings.Contains(src, ":") {
		server = n.serverAddr6
	}
	inNetns(n.t, ns, func() {
		d := net.Dialer{Timeout: 1500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", server)
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = fmt.Fprint(c, "GET / HTTP/1.1\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		b, _ := io.ReadAll(c)
		_, got, _ = strings.Cut(string(b), "\r\n\r\n")
	})
	return strings.TrimSpace(got)
}

// claimARP sends, from a raw packet socket in namespace ns (what NET_RAW
// allows), a gratuitous ARP reply saying ip is at mac, with Ethernet
// source mac.
func (n *spoofNet) claimARP(ns, ifname string, mac net.HardwareAddr, ip string) {
	inNetns(n.t, ns, func() {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			n.t.Error(err)
			return
		}
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ARP)))
		if err != nil {
			n.t.Error(err)
			return
		}
		defer syscall.Close(fd)
		a := netip.MustParseAddr(ip).As4()
		frame := make([]byte, 0, 42)
		frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		frame = append(frame, mac...)
		frame = binary.BigEndian.AppendUint16(frame, syscall.ETH_P_ARP)
		frame = append(frame, 0, 1, 8, 0, 6, 4, 0, 2) // Ethernet/IPv4, reply
		frame = append(frame, mac...)
		frame = append(frame, a[:]...)
		frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		frame = append(frame, a[:]...)
		sa := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		if err := syscall.Sendto(fd, frame, 0, sa); err != nil {
			n.t.Error(err)
		}
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (n *spoofNet) in(ns string, args ...string) string {
	return sh(n.t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// neighMAC is the node's neighbour entry for ip ("" if none).
func (n *spoofNet) neighMAC(ip string) string {
	f := strings.Fields(n.in(n.node, "ip", "neigh", "show", ip, "dev", "br0"))
	for i, w := range f {
		if w == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// TestGuardStopsSpoofedCallers plays the attacker pod on a real bridge:
// with the victim's address (NET_ADMIN), with a gratuitous ARP from a raw
// socket (NET_RAW), and with the victim's MAC too. Without the guard the
// first attack gets the victim's "token" (the harness can see a theft);
// with it none does, and the victim still gets its own.
func TestGuardStopsSpoofedCallers(t *testing.T) {
	testenv.NeedRoot(t, "ip", "ebtables", "ebtables-restore")
	n := newSpoofNet(t)
	victimTok := "token-for-10.99.0.5"
	if got := n.ask(n.victim, "10.99.0.5"); got != victimTok {
		t.Fatalf("victim before any rule: %q", got)
	}

	// Control, no guard: the attacker takes the victim's address, claims
	// it in ARP and is answered as the victim.
	n.in(n.at, "ip", "addr", "add", "10.99.0.5/32", "dev", "eth0")
	n.in(n.node, "ip", "neigh", "flush", "dev", "br0")
	n.in(n.victim, "ip", "link", "set", "eth0", "down") // the victim does not race the attacker's ARP answer
	n.claimARP(n.at, "eth0", n.atSB.MAC, "10.99.0.5")
	if got := n.ask(n.at, "10.99.0.5"); got != victimTok {
		t.Fatalf("control: the unguarded attack got %q, want the victim's token (the harness cannot see a theft)", got)
	}
	n.in(n.victim, "ip", "link", "set", "eth0", "up")
	n.in(n.at, "ip", "addr", "del", "10.99.0.5/32", "dev", "eth0")
	n.in(n.node, "ip", "neigh", "flush", "dev", "br0")

	g, err := n.guard(GuardConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(t.Context(), []Sandbox{n.victimSB, n.atSB}, false); err != nil {
		t.Fatal(err)
	}
	if got := n.ask(n.victim, "10.99.0.5"); got != victimTok {
		t.Fatalf("victim with the guard: %q", got)
	}

	for _, tt := range []struct {
		name  string
		setup func()
	}{
		{"raw socket: gratuitous ARP claim of the victim's address", func() {
			n.claimARP(n.at, "eth0", n.atSB.MAC, "10.99.0.5")
		}},
		{"NET_ADMIN: victim's address on the interface, then gratuitous ARP", func() {
			n.in(n.at, "ip", "addr", "add", "10.99.0.5/32", "dev", "eth0")
			n.claimARP(n.at, "eth0", n.atSB.MAC, "10.99.0.5")
		}},
		{"victim's MAC and address", func() {
			n.in(n.at, "ip", "link", "set", "eth0", "address", n.victimSB.MAC.String())
			n.in(n.at, "ip", "addr", "add", "10.99.0.5/32", "dev", "eth0")
			n.claimARP(n.at, "eth0", n.victimSB.MAC, "10.99.0.5")
		}},
		{"victim silent while the attacker claims its address", func() {
			n.in(n.at, "ip", "addr", "add", "10.99.0.5/32", "dev", "eth0")
			n.in(n.victim, "ip", "link", "set", "eth0", "down")
			n.in(n.node, "ip", "neigh", "flush", "dev", "br0")
			n.claimARP(n.at, "eth0", n.atSB.MAC, "10.99.0.5")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			if got := n.ask(n.at, "10.99.0.5"); got != "" {
				t.Errorf("the attacker got %q", got)
			}
			if m := n.neighMAC("10.99.0.5"); m == n.atSB.MAC.String() {
				t.Errorf("the node's neighbour entry for the victim moved to the attacker's MAC %s", m)
			}
			// Undo the attacker's setup; the victim is answered as itself.
			_ = exec.Command("ip", "netns", "exec", n.at, "ip", "addr", "del", "10.99.0.5/32", "dev", "eth0").Run()
			n.in(n.at, "ip", "link", "set", "eth0", "address", n.atSB.MAC.String())
			n.in(n.victim, "ip", "link", "set", "eth0", "up")
			if got := n.ask(n.victim, "10.99.0.5"); got != victimTok {
				t.Errorf("victim after the attack: %q", got)
			}
			if got := n.ask(n.at, "10.99.0.6"); got != "token-for-10.99.0.6" {
				t.Errorf("attacker as itself: %q", got)
			}
		})
	}

	// The victim leaves; the attacker's next pod is given its address on
	// the same bridge: it is answered as itself once the guard syncs.
	if err := g.Sync(t.Context(), []Sandbox{n.atSB}, false); err != nil {
		t.Fatal(err)
	}
	out := n.in(n.node, "ebtables", "-t", "filter", "-L", "PODID-GUARD-OUT")
	if strings.Contains(out, "10.99.0.5") {
		t.Fatalf("rules of the departed victim remain:\n%s", out)
	}
	if err := g.Uninstall(t.Context()); err != nil {
		t.Fatal(err)
	}
	if out := n.in(n.node, "ebtables-save"); strings.Contains(out, "PODID-GUARD") {
		t.Fatalf("guard chains left after Uninstall:\n%s", out)
	}
}

// claimNDP sends, from a raw packet socket in namespace ns, an unsolicited
// neighbour advertisement (override) saying target is at mac, from IPv6
// address src, to all nodes.
func (n *spoofNet) claimNDP(ns, ifname string, mac net.HardwareAddr, src, target string) {
	inNetns(n.t, ns, func() {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			n.t.Error(err)
			return
		}
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_IPV6)))
		if err != nil {
			n.t.Error(err)
			return
		}
		defer syscall.Close(fd)
		s, d, tg := netip.MustParseAddr(src).As16(), netip.MustParseAddr("ff02::1").As16(), netip.MustParseAddr(target).As16()
		icmp := []byte{136, 0, 0, 0, 0x20, 0, 0, 0} // neighbour advertisement, override
		icmp = append(icmp, tg[:]...)
		icmp = append(icmp, 2, 1) // option: target link-layer address
		icmp = append(icmp, mac...)
		pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 0, 0, 0, 58)
		binary.BigEndian.PutUint16(icmp[2:4], inetChecksum(append(pseudo, icmp...)))
		frame := []byte{0x33, 0x33, 0, 0, 0, 1}
		frame = append(frame, mac...)
		frame = binary.BigEndian.AppendUint16(frame, syscall.ETH_P_IPV6)
		frame = append(frame, 0x60, 0, 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 58, 255)
		frame = append(frame, s[:]...)
		frame = append(frame, d[:]...)
		frame = append(frame, icmp...)
		sa := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IPV6), Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[:6])
		if err := syscall.Sendto(fd, frame, 0, sa); err != nil {
			n.t.Error(err)
		}
	})
}

func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// spooferResult is what test/e2e/images/spoofer get prints (the fields
// these tests judge).
type spooferResult struct {
	ARPClaims int    `json:"arp_claims"`
	SYNs      int    `json:"syns"`
	SynAck    bool   `json:"synack"`
	Status    string `json:"status"`
	Body      string `json:"body"`
	Error     string `json:"error"`
}

// buildSpoofer builds the e2e attacker program (test/e2e/images/spoofer)
// once per test.
func buildSpoofer(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command builds the attacker program: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "spoofer")
	cmd := exec.Command(gobin, "build", "-o", bin, "../../test/e2e/images/spoofer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the spoofer: %v\n%s", err, out)
	}
	return bin
}

// rawAsk runs the spoofer in namespace ns: ARP claim of src and a
// hand-built TCP connection from it to the server (NET_RAW only).
func (n *spoofNet) rawAsk(bin, ns, src string) spooferResult {
	out := n.in(ns, bin, "get", "-timeout", "4s", "-src", src, "-gw", "10.99.0.1", "-dst", n.serverAddr, "/token")
	var r spooferResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		n.t.Fatalf("spoofer printed %q: %v", out, err)
	}
	r.Body = strings.TrimSpace(r.Body)
	return r
}

// TestGuardStopsHandBuiltTCP plays the attacker of issue 14 with nothing but
// a packet socket: ARP claims of the victim's address and a TCP connection
// spoken by hand from it. Controls: without the guard it is answered as the
// victim, and with the guard the same program, sent from the attacker's
// own address, is answered as the attacker.
func TestGuardStopsHandBuiltTCP(t *testing.T) {
	testenv.NeedRoot(t, "ip", "ebtables", "ebtables-restore")
	bin := buildSpoofer(t)
	n := newSpoofNet(t)
	if got := n.ask(n.victim, "10.99.0.5"); got != "token-for-10.99.0.5" {
		t.Fatalf("victim before any rule: %q", got)
	}
	r := n.rawAsk(bin, n.at, "10.99.0.5")
	if r.Body != "token-for-10.99.0.5" {
		t.Fatalf("control: the unguarded raw attack got %+v, want the victim's token (the harness cannot see a theft)", r)
	}
	t.Logf("no guard: the raw attacker was answered as the victim: %s %q", r.Status, r.Body)
	n.in(n.node, "ip", "neigh", "flush", "dev", "br0")

	g, err := n.guard(GuardConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(t.Context(), []Sandbox{n.victimSB, n.atSB}, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Uninstall(context.Background()) })
	if got := n.ask(n.victim, "10.99.0.5"); got != "token-for-10.99.0.5" {
		t.Fatalf("victim with the guard: %q", got)
	}
	r = n.rawAsk(bin, n.at, "10.99.0.5")
	if r.SYNs == 0 || r.ARPClaims == 0 {
		t.Fatalf("the attack did not run: %+v", r)
	}
	if r.SynAck || r.Status != "" || r.Body != "" {
		t.Fatalf("guarded: the raw attacker got %+v", r)
	}
	if m := n.neighMAC("10.99.0.5"); m == n.atSB.MAC.String() {
		t.Errorf("the node's neighbour entry for the victim moved to the attacker's MAC %s", m)
	}
	t.Logf("guard: the raw attacker sent %d ARP claims and %d SYNs and got nothing (%s)", r.ARPClaims, r.SYNs, r.Error)
	if got := n.ask(n.victim, "10.99.0.5"); got != "token-for-10.99.0.5" {
		t.Fatalf("victim after the attack: %q", got)
	}
	// The same program from the attacker's own address (removed from its
	// kernel, which would otherwise reset the connection) is answered.
	n.in(n.at, "ip", "addr", "del", "10.99.0.6/24", "dev", "eth0")
	r = n.rawAsk(bin, n.at, "10.99.0.6")
	n.in(n.at, "ip", "addr", "add", "10.99.0.6/24", "dev", "eth0")
	if r.Status != "HTTP/1.1 200 OK" || r.Body != "token-for-10.99.0.6" {
		t.Fatalf("control, own address under the guard: %+v (the raw TCP is broken: the guarded case proves nothing)", r)
	}
}

// TestGuardIPv6 plays the attacker on a dual-stack bridge: it takes the
// victim's IPv6 address and claims it by an unsolicited neighbour
// advertisement (from that address, and from its own). Without the guard
// it is answered as the victim; with it, never — the node's neighbour
// entry may move (neighbour discovery is not filtered) but the answers
// still leave only through the victim's port.
func TestGuardIPv6(t *testing.T) {
	testenv.NeedRoot(t, "ip", "ebtables", "ebtables-restore")
	n := newSpoofNet(t)
	const vip = "fd99::5"
	victimTok := "token-for-" + vip
	if got := n.ask(n.victim, vip); got != victimTok {
		t.Fatalf("victim before any rule: %q", got)
	}
	claim := func(from string) {
		_ = exec.Command("ip", "netns", "exec", n.at, "ip", "addr", "add", vip+"/128", "dev", "eth0", "nodad").Run()
		n.in(n.victim, "ip", "link", "set", "eth0", "down") // the victim does not answer for itself
		n.claimNDP(n.at, "eth0", n.atSB.MAC, from, vip)
	}
	undo := func() {
		_ = exec.Command("ip", "netns", "exec", n.at, "ip", "addr", "del", vip+"/128", "dev", "eth0").Run()
		n.in(n.victim, "ip", "link", "set", "eth0", "up")
		n.in(n.node, "ip", "neigh", "flush", "dev", "br0")
	}
	claim(vip)
	if got := n.ask(n.at, vip); got != victimTok {
		t.Fatalf("control: the unguarded IPv6 attack got %q, want the victim's token (the harness cannot see a theft)", got)
	}
	undo()

	g, err := n.guard(GuardConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(t.Context(), []Sandbox{n.victimSB, n.atSB}, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Uninstall(context.Background()) })
	for _, tt := range []struct{ name, from string }{
		{"advertisement from the victim's address", vip},
		{"advertisement from the attacker's own address", "fd99::6"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer undo()
			// The node has an entry to override: the victim talks first.
			n.in(n.victim, "ip", "link", "set", "eth0", "up")
			if got := n.ask(n.victim, vip); got != victimTok {
				t.Fatalf("victim with the guard: %q", got)
			}
			claim(tt.from)
			if got := n.ask(n.at, vip); got != "" {
				t.Errorf("the attacker got %q", got)
			}
			if m := n.neighMAC(vip); tt.from == vip && m == n.atSB.MAC.String() {
				t.Errorf("an advertisement sent as the victim's address moved the node's entry to the attacker's MAC")
			}
			t.Logf("node's neighbour entry for %s after the claim: %q (attacker's MAC %s)", vip, n.neighMAC(vip), n.atSB.MAC)
		})
	}
	if got := n.ask(n.victim, vip); got != victimTok {
		t.Fatalf("victim after the attacks: %q", got)
	}
	if got := n.ask(n.at, "fd99::6"); got != "token-for-fd99::6" {
		t.Fatalf("attacker as itself over IPv6: %q", got)
	}
}

// newRoutedNet is a node of a routed CNI (Calico-style) in network
// namespaces: each pod has a veth whose host side has no address, proxy
// ARP, and a /32 host route; pods route everything through 169.254.1.1 on
// that link. The server listens on a node address. No bridge anywhere.
func newRoutedNet(t *testing.T) (*spoofNet, string) {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	n := &spoofNet{t: t, id: id, node: "podid-rn-" + id, victim: "podid-rv-" + id, at: "podid-ra-" + id, serverAddr: "10.97.255.1:8080"}
	for _, ns := range []string{n.node, n.victim, n.at} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	n.in(n.node, "ip", "link", "set", "lo", "up")
	n.in(n.node, "ip", "addr", "add", "10.97.255.1/32", "dev", "lo")
	// Reverse-path filtering off: what drops a spoofed source must be the
	// guard, not the kernel's heuristics (CNIs set it either way).
	n.in(n.node, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.ip_forward=1")
	// Proxy ARP answers for 169.254.1.1 only if the node routes it out of
	// another interface: a default route, as a real node has.
	n.in(n.node, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	n.in(n.node, "ip", "link", "set", "up1", "up")
	n.in(n.node, "ip", "link", "set", "up0", "up")
	n.in(n.node, "ip", "route", "add", "default", "dev", "up0")
	pod := func(ns, hostIf, mac, ip string) Sandbox {
		n.in(n.node, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns)
		n.in(n.node, "sysctl", "-qw", "net.ipv4.conf."+hostIf+".proxy_arp=1", "net.ipv4.conf."+hostIf+".rp_filter=0")
		n.in(n.node, "ip", "link", "set", hostIf, "up")
		n.in(n.node, "ip", "route", "add", ip+"/32", "dev", hostIf)
		n.in(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0") // as in newSpoofNet
		n.in(ns, "ip", "link", "set", "eth0", "address", mac)
		n.in(ns, "ip", "addr", "add", ip+"/32", "dev", "eth0")
		n.in(ns, "ip", "link", "set", "eth0", "up")
		n.in(ns, "ip", "link", "set", "lo", "up")
		n.in(ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		n.in(ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		return Sandbox{ContainerID: ns, PodNamespace: "ns", PodName: ns, PodUID: "uid-" + ns, HostIf: hostIf,
			MAC: mustMAC(mac), IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	}
	n.victimSB = pod(n.victim, "caliv"+id, "02:00:00:00:97:05", "10.97.0.5")
	n.atSB = pod(n.at, "calia"+id, "02:00:00:00:97:06", "10.97.0.6")
	n.serve(n.serverAddr)
	// The node's routing table as the guard reads it: /proc/<pid>/net/route
	// of a process in the node's namespace.
	sleeper := exec.Command("ip", "netns", "exec", n.node, "sleep", "3600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	routes := fmt.Sprintf("/proc/%d/net/route", sleeper.Process.Pid)
	if err := wait(t, func() bool { // ip netns exec switches namespace, then execs sleep
		b, err := os.ReadFile(routes)
		return err == nil && strings.Contains(string(b), "caliv"+id)
	}); err != nil {
		t.Fatal(err)
	}
	return n, routes
}

// wait polls cond every 10 ms for up to 5 s.
func wait(t *testing.T, cond func() bool) error {
	t.Helper()
	for range 500 {
		if cond() {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // polling an external process's state
	}
	return fmt.Errorf("condition not met in 5s")
}

// TestGuardRoutedCNI plays the attacker on a routed node: the host route
// already sends answers for the victim's address to the victim's link;
// the guard adds that nothing but the victim's link may send as it, and
// refuses a pod the node does not route through its own interface (the
// one case, shown by the control, in which the attacker is answered).
func TestGuardRoutedCNI(t *testing.T) {
	testenv.NeedRoot(t, "ip", "iptables", "iptables-restore")
	bin := buildSpoofer(t)
	n, routes := newRoutedNet(t)
	const vip, victimTok = "10.97.0.5", "token-for-10.97.0.5"
	if got := n.ask(n.victim, vip); got != victimTok {
		t.Fatalf("victim before any rule: %q", got)
	}
	if got := n.ask(n.at, "10.97.0.6"); got != "token-for-10.97.0.6" {
		t.Fatalf("attacker as itself: %q", got)
	}
	rawAsk := func() spooferResult {
		out := n.in(n.at, bin, "get", "-timeout", "4s", "-src", vip, "-gw", "169.254.1.1", "-dst", n.serverAddr, "/token")
		var r spooferResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("spoofer printed %q: %v", out, err)
		}
		return r
	}
	// Without the guard, routing alone keeps the answers on the victim's
	// link: the raw attacker (ARP claim + hand-built TCP) gets nothing.
	if r := rawAsk(); r.Status != "" || r.SynAck {
		t.Fatalf("routed, no guard: the raw attacker got %+v", r)
	}
	// Control: a node that routes the victim's address to the attacker's
	// link (a broken CNI) hands the attacker the victim's answer ...
	n.in(n.node, "ip", "route", "replace", vip+"/32", "dev", n.atSB.HostIf)
	n.in(n.at, "ip", "addr", "add", vip+"/32", "dev", "eth0")
	if got := n.ask(n.at, vip); got != victimTok {
		t.Fatalf("control: misrouted, the attacker got %q, want the victim's token (the harness cannot see a theft)", got)
	}
	// ... and that is what the guard refuses to vouch for.
	g, err := n.guard(GuardConfig{RoutesFile: routes, EBTables: "true", EBTablesRestore: "true"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Uninstall(context.Background()) })
	err = g.Sync(t.Context(), []Sandbox{n.victimSB, n.atSB}, false)
	if err == nil || !strings.Contains(err.Error(), "not through "+n.victimSB.HostIf+" alone") {
		t.Fatalf("misrouted victim: %v, want it refused", err)
	}
	if _, ok := g.Owner(netip.MustParseAddr(vip)); ok {
		t.Fatal("the guard vouches for a pod the node routes elsewhere")
	}
	n.in(n.node, "ip", "route", "replace", vip+"/32", "dev", n.victimSB.HostIf)

	// Routed right: the guard vouches for both and drops the forgeries.
	if err := g.Sync(t.Context(), []Sandbox{n.victimSB, n.atSB}, false); err != nil {
		t.Fatal(err)
	}
	if sb, ok := g.Owner(netip.MustParseAddr(vip)); !ok || sb.PodUID != n.victimSB.PodUID {
		t.Fatalf("victim not guarded: %+v %v", sb, ok)
	}
	before := droppedAs(t, n, vip)
	if got := n.ask(n.at, vip); got != "" { // NET_ADMIN: the victim's address on its interface
		t.Errorf("guarded: the attacker with the victim's address got %q", got)
	}
	n.in(n.at, "ip", "addr", "del", vip+"/32", "dev", "eth0")
	if r := rawAsk(); r.Status != "" || r.SynAck || r.SYNs == 0 {
		t.Errorf("guarded: the raw attacker got %+v", r)
	}
	if after := droppedAs(t, n, vip); after <= before {
		t.Errorf("the guard's rule for %s dropped no packets (%d before the attacks, %d after): the forgeries did not reach it", vip, before, after)
	}
	if got := n.ask(n.victim, vip); got != victimTok {
		t.Fatalf("victim with the guard: %q", got)
	}
	if got := n.ask(n.at, "10.97.0.6"); got != "token-for-10.97.0.6" {
		t.Fatalf("attacker as itself with the guard: %q", got)
	}
	if err := g.Uninstall(t.Context()); err != nil {
		t.Fatal(err)
	}
	if out := n.in(n.node, "iptables-save", "-t", "raw"); strings.Contains(out, "PODID-GUARD") {
		t.Fatalf("guard chain left after Uninstall:\n%s", out)
	}
}

// droppedAs is how many packets the guard's rule for address a dropped.
func droppedAs(t *testing.T, n *spoofNet, a string) int {
	t.Helper()
	for _, l := range strings.Split(n.in(n.node, "iptables", "-t", "raw", "-L", "PODID-GUARD-RAW", "-v", "-x", "-n"), "\n") {
		f := strings.Fields(l)
		if len(f) > 8 && f[2] == "DROP" && f[7] == a {
			c, err := strconv.Atoi(f[0])
			must(t, err)
			return c
		}
	}
	t.Fatalf("no guard rule for %s", a)
	return 0
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
