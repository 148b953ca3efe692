package intercept

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podid/podid/internal/testenv"
)

// netnsExec runs every command inside a fresh network namespace, so the
// test never touches the host's tables.
func netnsExec(t *testing.T) ExecFunc {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "podid-ic-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	return func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		return Exec(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
}

func TestInstallCheckRepairUninstall(t *testing.T) {
	testenv.NeedRoot(t, "ip", "iptables", "iptables-restore")
	ex := netnsExec(t)
	ctx := t.Context()
	i, err := New(Config{
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("10.245.0.0/24")},
		Target:   netip.MustParseAddrPort("10.0.0.4:2579"),
		Exec:     ex,
	})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := i.Check(ctx); ok || err != nil {
		t.Fatalf("check before install: %v %v", ok, err)
	}
	for range 3 { // idempotent
		if err := i.Install(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := i.Check(ctx); !ok || err != nil {
		t.Fatalf("check after install: %v %v", ok, err)
	}
	nat, _ := ex(ctx, nil, "iptables-save", "-t", "nat")
	if n := strings.Count(string(nat), "-j PODID-IMDS-NAT"); n != 1 {
		t.Fatalf("%d jumps to the nat chain after repeated installs:\n%s", n, nat)
	}
	if !strings.Contains(string(nat), "-s 10.244.0.0/24 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.4:2579") {
		t.Fatalf("DNAT rule missing:\n%s", nat)
	}
	filter, _ := ex(ctx, nil, "iptables-save", "-t", "filter")
	if !strings.Contains(string(filter), "-A PODID-IMDS-FILTER -s 10.245.0.0/24 -d 169.254.169.254/32 -j DROP") {
		t.Fatalf("drop rule missing:\n%s", filter)
	}

	// Someone deletes a rule, another adds one to our chain: both detected and repaired.
	if _, err := ex(ctx, nil, "iptables", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment", "podid: pod metadata traffic to the node agent", "-j", "PODID-IMDS-NAT"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := i.Check(ctx); ok {
		t.Fatal("missing jump not detected")
	}
	if err := i.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ex(ctx, nil, "iptables", "-t", "filter", "-A", "PODID-IMDS-FILTER", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := i.Check(ctx); ok {
		t.Fatal("foreign rule in podid chain not detected")
	}
	if err := i.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := i.Check(ctx); !ok || err != nil {
		t.Fatalf("after repair: %v %v", ok, err)
	}

	// Run keeps the rules after it stops (fail closed).
	rctx, cancel := context.WithCancel(ctx)
	cancel()
	_ = i.Run(rctx)
	if ok, _ := i.Check(ctx); !ok {
		t.Fatal("rules removed when Run stopped")
	}

	if err := i.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	all, _ := ex(ctx, nil, "iptables-save")
	if strings.Contains(string(all), "PODID") {
		t.Fatalf("leftovers after uninstall:\n%s", all)
	}
	if err := i.Uninstall(ctx); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, c := range []Config{
		{Target: netip.MustParseAddrPort("10.0.0.4:2579")},
		{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}, Target: netip.MustParseAddrPort("10.0.0.4:2579")},
		{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, Target: netip.MustParseAddrPort("10.0.0.4:0")},
	} {
		if _, err := New(c); err == nil {
			t.Fatalf("New(%+v) accepted", c)
		}
	}
}

func TestLookPathIn(t *testing.T) {
	root := t.TempDir()
	mk := func(p string, mode os.FileMode) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("usr/sbin/iptables-restore", 0o755)
	mk("usr/bin/notexec", 0o644)
	// Debian's alternatives link is absolute: it only resolves inside root.
	if err := os.Symlink("/etc/alternatives/iptables", filepath.Join(root, "usr/sbin/iptables")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, want string
		err        bool
	}{
		{name: "iptables-restore", want: "/usr/sbin/iptables-restore"},
		{name: "iptables", want: "/usr/sbin/iptables"},
		{name: "/opt/x/iptables", want: "/opt/x/iptables"},
		{name: "notexec", err: true},
		{name: "missing", err: true},
	} {
		got, err := lookPathIn(root, tt.name)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("lookPathIn(%q) = %q, %v; want %q (error %v)", tt.name, got, err, tt.want, tt.err)
		}
	}
}
