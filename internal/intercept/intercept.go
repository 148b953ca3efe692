package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// MetadataAddr is the instance metadata service's address.
var MetadataAddr = netip.MustParseAddrPort("169.254.169.254:80")

// ExecFunc runs a command with stdin and returns its combined output.
type ExecFunc func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)

// Exec runs commands on the host.
func Exec(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// ChrootExec runs commands inside root (the host's filesystem mounted into
// the agent's container), so the node's own iptables binary, backend and
// lock file are used. It needs CAP_SYS_CHROOT.
func ChrootExec(root string) ExecFunc {
	return func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		// A bare name must be found in the host's PATH, not the container's:
		// exec would look it up here, before the chroot, and the agent's
		// image has no iptables.
		inside, err := lookPathIn(root, name)
		if err != nil {
			return nil, fmt.Errorf("(chroot %s) %w", root, err)
		}
		cmd := exec.CommandContext(ctx, inside, args...)
		cmd.Args[0] = name
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=" + hostPath}
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return out, fmt.Errorf("(chroot %s) %s %s: %w: %s", root, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return out, nil
	}
}

// hostPath is searched, inside the chroot, for bare command names.
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPathIn returns the path, as seen inside root, of the executable name.
func lookPathIn(root, name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(hostPath) {
		p := filepath.Join(dir, name)
		// Lstat: the host's links (Debian's /usr/sbin/iptables →
		// /etc/alternatives/…) are absolute and only resolve inside root.
		fi, err := os.Lstat(filepath.Join(root, p))
		if err == nil && (fi.Mode()&os.ModeSymlink != 0 || (fi.Mode().IsRegular() && fi.Mode()&0o111 != 0)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s under %s", name, hostPath, root)
}

// Config configures the rules.
type Config struct {
	// PodCIDRs are the sources redirected (this node's pod ranges). Required.
	PodCIDRs []netip.Prefix
	// Target is the agent's listener (a node address and port). Required.
	Target netip.AddrPort
	// Interval between re-checks; default 30s.
	Interval time.Duration
	// ChainPrefix names podid's chains; default "PODID-IMDS".
	ChainPrefix string
	// IPTables and IPTablesRestore are the binaries; default iptables, iptables-restore.
	IPTables, IPTablesRestore string
	// Exec runs commands; default Exec.
	Exec   ExecFunc
	Logger *slog.Logger
}

// Interceptor installs and keeps the rules.
type Interceptor struct {
	cfg       Config
	installed atomic.Bool
}

// New assembles an Interceptor (no I/O).
func New(cfg Config) (*Interceptor, error) {
	if len(cfg.PodCIDRs) == 0 {
		return nil, errors.New("intercept: at least one pod CIDR is required")
	}
	for _, p := range cfg.PodCIDRs {
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("intercept: pod CIDR %s is not IPv4", p)
		}
	}
	if !cfg.Target.Addr().Is4() || cfg.Target.Port() == 0 {
		return nil, fmt.Errorf("intercept: target %s must be an IPv4 address and port", cfg.Target)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.ChainPrefix == "" {
		cfg.ChainPrefix = "PODID-IMDS"
	}
	if len(cfg.ChainPrefix) > 20 {
		return nil, errors.New("intercept: chain prefix longer than 20 characters")
	}
	if cfg.IPTables == "" {
		cfg.IPTables = "iptables"
	}
	if cfg.IPTablesRestore == "" {
		cfg.IPTablesRestore = cfg.IPTables + "-restore"
	}
	if cfg.Exec == nil {
		cfg.Exec = Exec
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Interceptor{cfg: cfg}, nil
}

func (i *Interceptor) natChain() string    { return i.cfg.ChainPrefix + "-NAT" }
func (i *Interceptor) filterChain() string { return i.cfg.ChainPrefix + "-FILTER" }

// rule is one iptables rule: table, chain and the rule spec.
type rule struct {
	table, chain string
	spec         []string
}

func (i *Interceptor) comment() []string {
	return []string{"-m", "comment", "--comment", "podid: pod metadata traffic to the node agent"}
}

// jumps are the rules in built-in chains.
func (i *Interceptor) jumps() []rule {
	return []rule{
		{"filter", "FORWARD", append(i.comment(), "-j", i.filterChain())},
		{"nat", "PREROUTING", append(i.comment(), "-j", i.natChain())},
	}
}

// chainRules are the rules in podid's chains.
func (i *Interceptor) chainRules() []rule {
	md := MetadataAddr.Addr().String() + "/32"
	var out []rule
	for _, c := range i.cfg.PodCIDRs {
		out = append(out, rule{"filter", i.filterChain(), []string{"-s", c.Masked().String(), "-d", md, "-j", "DROP"}})
	}
	for _, c := range i.cfg.PodCIDRs {
		out = append(out, rule{"nat", i.natChain(), []string{"-s", c.Masked().String(), "-d", md, "-p", "tcp", "-m", "tcp",
			"--dport", strconv.Itoa(int(MetadataAddr.Port())), "-j", "DNAT", "--to-destination", i.cfg.Target.String()}})
	}
	return out
}

// restoreInput declares (and so flushes) podid's chains and fills them, one
// atomic transaction per table. The filter table goes first: while the nat
// rules are being replaced, pod traffic to the metadata address is dropped.
func (i *Interceptor) restoreInput() []byte {
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		chain := i.filterChain()
		if table == "nat" {
			chain = i.natChain()
		}
		fmt.Fprintf(&b, "*%s\n:%s - [0:0]\n", table, chain)
		for _, r := range i.chainRules() {
			if r.table == table {
				fmt.Fprintf(&b, "-A %s %s\n", r.chain, quoteSpec(r.spec))
			}
		}
		b.WriteString("COMMIT\n")
	}
	return []byte(b.String())
}

func quoteSpec(spec []string) string {
	q := make([]string, len(spec))
	for k, s := range spec {
		q[k] = s
		if strings.ContainsAny(s, " \t\"") {
			q[k] = strconv.Quote(s)
		}
	}
	return strings.Join(q, " ")
}

func (i *Interceptor) ipt(ctx context.Context, args ...string) ([]byte, error) {
	return i.cfg.Exec(ctx, nil, i.cfg.IPTables, append([]string{"-w", "5"}, args...)...)
}

// Check reports whether every rule is in place and podid's chains hold
// nothing else.
func (i *Interceptor) Check(ctx context.Context) (bool, error) {
	for _, r := range append(i.jumps(), i.chainRules()...) {
		if _, err := i.ipt(ctx, append([]string{"-t", r.table, "-C", r.chain}, r.spec...)...); err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, nil
		}
	}
	for table, chain := range map[string]string{"filter": i.filterChain(), "nat": i.natChain()} {
		out, err := i.ipt(ctx, "-t", table, "-S", chain)
		if err != nil {
			return false, nil
		}
		n := 0
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "-A ") {
				n++
			}
		}
		if n != len(i.cfg.PodCIDRs) {
			return false, nil
		}
	}
	return true, nil
}

// Install puts the rules in place; it is idempotent.
func (i *Interceptor) Install(ctx context.Context) error {
	if _, err := i.cfg.Exec(ctx, i.restoreInput(), i.cfg.IPTablesRestore, "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("install podid chains: %w", err)
	}
	for _, r := range i.jumps() {
		if _, err := i.ipt(ctx, append([]string{"-t", r.table, "-C", r.chain}, r.spec...)...); err == nil {
			continue
		}
		if _, err := i.ipt(ctx, append([]string{"-t", r.table, "-I", r.chain, "1"}, r.spec...)...); err != nil {
			return fmt.Errorf("install jump to podid chain: %w", err)
		}
	}
	return nil
}

// Uninstall removes every rule and chain podid installed. Only an explicit
// uninstall calls it; the agent never does.
func (i *Interceptor) Uninstall(ctx context.Context) error {
	var errs []error
	for _, r := range i.jumps() {
		for n := 0; n < 100; n++ {
			if _, err := i.ipt(ctx, append([]string{"-t", r.table, "-D", r.chain}, r.spec...)...); err != nil {
				break
			}
		}
	}
	for table, chain := range map[string]string{"filter": i.filterChain(), "nat": i.natChain()} {
		if _, err := i.ipt(ctx, "-t", table, "-S", chain); err != nil {
			continue // no such chain
		}
		if _, err := i.ipt(ctx, "-t", table, "-F", chain); err != nil {
			errs = append(errs, err)
		}
		if _, err := i.ipt(ctx, "-t", table, "-X", chain); err != nil {
			errs = append(errs, err)
		}
	}
	i.installed.Store(false)
	return errors.Join(errs...)
}

// Installed reports whether the rules were in place at the last check.
func (i *Interceptor) Installed() bool { return i.installed.Load() }

// Run installs the rules and re-checks them every Interval until ctx ends.
// It never removes them. Failures are logged and retried; Run returns only
// when ctx ends.
func (i *Interceptor) Run(ctx context.Context) error {
	t := time.NewTicker(i.cfg.Interval)
	defer t.Stop()
	for {
		ok, err := i.Check(ctx)
		if err == nil && !ok {
			if err = i.Install(ctx); err == nil {
				i.cfg.Logger.Info("interception rules installed", "target", i.cfg.Target.String(), "pod_cidrs", fmt.Sprint(i.cfg.PodCIDRs))
				ok, err = i.Check(ctx)
				if err == nil && !ok {
					err = errors.New("rules missing right after install (another tool rewriting the tables?)")
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			i.cfg.Logger.Error("interception rules not in place", "error", err.Error())
		}
		i.installed.Store(ok && err == nil)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
