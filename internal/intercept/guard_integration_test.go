package intercept

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
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
	n := &spoofNet{t: t, id: id, node: "podid-gn-" + id, victim: "podid-gv-" + id, at: "podid-ga-" + id, serverAddr: "10.99.0.1:8080"}
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
	pod := func(ns, veth, mac, ip string) Sandbox {
		in(n.node, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		in(n.node, "ip", "link", "set", veth, "master", "br0", "up")
		in(ns, "ip", "link", "set", "eth0", "address", mac)
		in(ns, "ip", "addr", "add", ip+"/24", "dev", "eth0")
		in(ns, "ip", "link", "set", "eth0", "up")
		in(ns, "ip", "link", "set", "lo", "up")
		return Sandbox{ContainerID: ns, PodNamespace: "ns", PodName: ns, PodUID: "uid-" + ns, HostIf: veth, Bridge: "br0",
			MAC: mustMAC(mac), IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	}
	n.victimSB = pod(n.victim, "vethv"+id, "02:00:00:00:99:05", "10.99.0.5")
	n.atSB = pod(n.at, "vetha"+id, "02:00:00:00:99:06", "10.99.0.6")

	// The server: the address it sees is the identity it would serve.
	var ln net.Listener
	inNetns(t, n.node, func() {
		var err error
		ln, err = net.Listen("tcp", n.serverAddr)
		if err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_, _ = fmt.Fprintf(c, "token-for-%s\n", host)
			_ = c.Close()
		}
	}()
	return n
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

// ask connects from namespace ns with source address src and returns what
// the server answered ("" if nothing came back within the bound).
func (n *spoofNet) ask(ns, src string) string {
	var got string
	inNetns(n.t, ns, func() {
		d := net.Dialer{Timeout: 1500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", n.serverAddr)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		got, _ = bufio.NewReader(c).ReadString('\n')
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

	ex := func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		return Exec(ctx, stdin, "ip", append([]string{"netns", "exec", n.node, name}, args...)...)
	}
	g, err := NewGuard(GuardConfig{Exec: ex})
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
