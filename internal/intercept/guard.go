package intercept

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// GuardConfig configures the per-pod anti-spoofing rules.
type GuardConfig struct {
	// ChainPrefix names podid's ebtables chains; default "PODID-GUARD".
	ChainPrefix string
	// EBTables and EBTablesRestore are the binaries; default ebtables, ebtables-restore.
	EBTables, EBTablesRestore string
	// IPTables and IPTablesRestore guard pods of routed CNIs; default
	// iptables, iptables-restore.
	IPTables, IPTablesRestore string
	// RoutesFile is the node's IPv4 routing table as the kernel lists it;
	// default /proc/net/route (the agent runs in the node's network
	// namespace).
	RoutesFile string
	// ResultsDir holds the node's CNI records as this process sees them;
	// default DefaultCNIResultsDir.
	ResultsDir string
	// Interval between full re-applications (repairs rules someone
	// removed); default 10s.
	Interval time.Duration
	// Exec runs commands; default Exec.
	Exec ExecFunc
	// Links lists the names of the node's network interfaces; default
	// this process's network namespace (the agent runs in the node's). A
	// CNI record whose host interface is not among them is stale — its
	// sandbox was killed without a CNI DEL, e.g. by a crash or a runtime
	// whose state was wiped — and claims nothing: otherwise it would take
	// its old address away from the live pod the IPAM gives it to next.
	Links  func() (map[string]bool, error)
	Logger *slog.Logger
}

// Guard keeps, for every pod interface the node's CNI records name, rules
// that tie the pod's addresses to the host side of its interface, and
// tells which sandbox owns an address once — and only once — its rules are
// in place.
//
// Bridged pods (ebtables), per pod (address a, host interface v, pod MAC m):
//
//	nat PREROUTING -> <prefix>-IN (before the bridge learns source MACs):
//	  -s m ! -i v -j DROP                 no other port sends with the pod's MAC
//	  -p IPv4 --ip-src a ! -i v -j DROP    no other port sends as the pod's address
//	  -p ARP --arp-ip-src a ! -i v -j DROP no other port claims the address in ARP
//	  -i v ! -s m -j DROP                 the pod sends only with its own MAC ...
//	  -i v -p IPv4 ! --ip-src a -j DROP    ... only from its own address ...
//	  -i v -p ARP ! --arp-ip-src a -j DROP ... claims only its own address ...
//	  -i v -p ARP --arp-mac-src ! m -j DROP
//	  -i v -p 802_1Q -j DROP               ... and sends no VLAN-tagged frames
//	  -p IPv6 --ip6-src a6 ! -i v -j DROP  per IPv6 address a6 the records give the pod
//	filter OUTPUT, FORWARD -> <prefix>-OUT:
//	  -p IPv4 --ip-dst a ! -o v -j DROP    what is sent to the pod leaves only through v
//	  -p IPv6 --ip6-dst a6 ! -o v -j DROP
//
// The OUT rules alone keep a pod's token from reaching another port: a
// forged connection from elsewhere never sees the agent's answer. IPv6
// neighbour discovery is not filtered (ebtables cannot match a neighbour
// advertisement's target): another pod can move the node's neighbour
// entry for a6, which then black-holes the node's IPv6 traffic to the pod
// until the entry is resolved again, but never delivers it elsewhere.
//
// Routed pods (ptp, Calico-style: no bridge, a host route per pod), per
// pod, in iptables:
//
//	raw PREROUTING -> <prefix>-RAW:
//	  -s a/32 ! -i v -j DROP              no other interface sends as the pod's address
//
// and the node must route a/32 through v (checked in RoutesFile at every
// sync; a pod without that route is not guarded): then whatever anyone
// announces by ARP, answers to a leave only through v.
type Guard struct {
	cfg GuardConfig

	mu         sync.Mutex // serialises Sync; protects applied, appliedRaw, rawChain
	applied    string     // ebtables restore input last applied successfully
	appliedRaw string     // iptables restore input last applied successfully
	rawChain   bool       // the iptables chain for routed pods may exist
	owners     atomic.Pointer[map[netip.Addr]Sandbox]
	ready      atomic.Bool
	stale      atomic.Int64 // CNI records the last sync found stale

	kick      chan struct{}
	requested atomic.Uint64 // refreshes asked for
	wmu       sync.Mutex    // protects completed, synced
	completed uint64        // requests the last finished sync covers
	synced    chan struct{} // closed (and replaced) when a sync finishes
}

// NewGuard assembles a Guard (no I/O).
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.ChainPrefix == "" {
		cfg.ChainPrefix = "PODID-GUARD"
	}
	if len(cfg.ChainPrefix) > 24 {
		return nil, errors.New("intercept: guard chain prefix longer than 24 characters")
	}
	if cfg.EBTables == "" {
		cfg.EBTables = "ebtables"
	}
	if cfg.EBTablesRestore == "" {
		cfg.EBTablesRestore = cfg.EBTables + "-restore"
	}
	if cfg.IPTables == "" {
		cfg.IPTables = "iptables"
	}
	if cfg.IPTablesRestore == "" {
		cfg.IPTablesRestore = cfg.IPTables + "-restore"
	}
	if cfg.RoutesFile == "" {
		cfg.RoutesFile = "/proc/net/route"
	}
	if cfg.Exec == nil {
		cfg.Exec = Exec
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Links == nil {
		cfg.Links = interfaceNames
	}
	if cfg.ResultsDir == "" {
		cfg.ResultsDir = DefaultCNIResultsDir
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	g := &Guard{cfg: cfg, kick: make(chan struct{}, 1), synced: make(chan struct{})}
	g.owners.Store(&map[netip.Addr]Sandbox{})
	return g, nil
}

func (g *Guard) inChain() string      { return g.cfg.ChainPrefix + "-IN" }
func (g *Guard) outChain() string     { return g.cfg.ChainPrefix + "-OUT" }
func (g *Guard) rawChainName() string { return g.cfg.ChainPrefix + "-RAW" }

// Owner returns the sandbox that owns ip, if its rules are in place.
func (g *Guard) Owner(ip netip.Addr) (Sandbox, bool) {
	sb, ok := (*g.owners.Load())[ip.Unmap()]
	return sb, ok
}

// Guarded is the number of addresses whose rules are in place.
func (g *Guard) Guarded() int { return len(*g.owners.Load()) }

// Stale is the number of CNI records the last sync ignored because their
// host interface is gone.
func (g *Guard) Stale() int { return int(g.stale.Load()) }

// interfaceNames lists the interfaces of this process's network namespace.
func interfaceNames() (map[string]bool, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list the node's network interfaces: %w", err)
	}
	names := make(map[string]bool, len(ifs))
	for _, i := range ifs {
		names[i.Name] = true
	}
	return names, nil
}

// live drops the sandboxes whose host interface the node does not have.
// If the interfaces cannot be listed every record counts (a stale one can
// then only make an address unguarded, never guard it for the wrong pod).
func live(sbs []Sandbox, links map[string]bool) (out []Sandbox, stale int) {
	if links == nil {
		return sbs, 0
	}
	for _, sb := range sbs {
		if sb.HostIf != "" && !links[sb.HostIf] {
			stale++
			continue
		}
		out = append(out, sb)
	}
	return out, stale
}

// guardable splits sandboxes into those the guard can protect and the
// reasons it cannot protect the rest. An address claimed by two sandboxes
// protects neither (the records are inconsistent: no guess). A routed
// sandbox is protected only if routes (the node's /32 routes: address ->
// interfaces) send its IPv4 address through its own interface alone.
func guardable(sbs []Sandbox, routes map[netip.Addr][]string) (ok []Sandbox, refused []error) {
	claims := map[netip.Addr]int{}
	for _, sb := range sbs {
		for _, a := range sb.IPs {
			claims[a]++
		}
	}
	for _, sb := range sbs {
		var why string
		switch {
		case sb.HostIf == "":
			why = "no host interface"
		case sb.Bridge != "" && len(sb.MAC) != 6:
			why = "no MAC"
		}
		var v4 []netip.Addr
		for _, a := range sb.IPs {
			if claims[a] > 1 {
				why = fmt.Sprintf("address %s is claimed by more than one sandbox", a)
			}
			if a.Is4() {
				v4 = append(v4, a)
			}
		}
		if why == "" && len(v4) != 1 {
			why = fmt.Sprintf("%d IPv4 addresses (exactly one is guarded)", len(v4))
		}
		if why == "" && sb.Bridge == "" {
			if via := routes[v4[0]]; len(via) != 1 || via[0] != sb.HostIf {
				why = fmt.Sprintf("routed interface, but the node routes %s/32 through %v, not through %s alone: its answers could leave elsewhere", v4[0], via, sb.HostIf)
			}
		}
		if why != "" {
			refused = append(refused, fmt.Errorf("pod %s/%s (sandbox %.12s) not guarded: %s", sb.PodNamespace, sb.PodName, sb.ContainerID, why))
			continue
		}
		ok = append(ok, sb)
	}
	return ok, refused
}

// restoreInput declares (and so empties) podid's ebtables chains and
// fills them for the bridged sandboxes.
func (g *Guard) restoreInput(sbs []Sandbox) []byte {
	var in, out strings.Builder
	for _, sb := range sbs {
		if sb.Bridge == "" {
			continue
		}
		m, v := sb.MAC.String(), sb.HostIf
		var a4 string
		var a6 []string
		for _, a := range sb.IPs {
			if a.Is4() {
				a4 = a.String()
			} else {
				a6 = append(a6, a.String())
			}
		}
		for _, r := range []string{
			"-s " + m + " ! -i " + v + " -j DROP",
			"-p IPv4 --ip-src " + a4 + " ! -i " + v + " -j DROP",
			"-p ARP --arp-ip-src " + a4 + " ! -i " + v + " -j DROP",
			"-i " + v + " ! -s " + m + " -j DROP",
			"-i " + v + " -p IPv4 ! --ip-src " + a4 + " -j DROP",
			"-i " + v + " -p ARP ! --arp-ip-src " + a4 + " -j DROP",
			"-i " + v + " -p ARP --arp-mac-src ! " + m + " -j DROP",
			"-i " + v + " -p 802_1Q -j DROP",
		} {
			fmt.Fprintf(&in, "-A %s %s\n", g.inChain(), r)
		}
		fmt.Fprintf(&out, "-A %s -p IPv4 --ip-dst %s ! -o %s -j DROP\n", g.outChain(), a4, v)
		for _, a := range a6 {
			fmt.Fprintf(&in, "-A %s -p IPv6 --ip6-src %s ! -i %s -j DROP\n", g.inChain(), a, v)
			fmt.Fprintf(&out, "-A %s -p IPv6 --ip6-dst %s ! -o %s -j DROP\n", g.outChain(), a, v)
		}
	}
	return []byte("*nat\n:" + g.inChain() + " RETURN\n" + in.String() +
		"*filter\n:" + g.outChain() + " RETURN\n" + out.String())
}

// rawRestoreInput declares (and so empties) podid's iptables chain and
// fills it for the routed sandboxes.
func (g *Guard) rawRestoreInput(sbs []Sandbox) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*raw\n:%s - [0:0]\n", g.rawChainName())
	for _, sb := range sbs {
		if sb.Bridge != "" {
			continue
		}
		for _, a := range sb.IPs {
			if a.Is4() {
				fmt.Fprintf(&b, "-A %s -s %s/32 ! -i %s -j DROP\n", g.rawChainName(), a, sb.HostIf)
			}
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

func (g *Guard) rawJump() []string {
	return []string{"-t", "raw", "PREROUTING", "-j", g.rawChainName()}
}

func (g *Guard) ipt(ctx context.Context, args ...string) ([]byte, error) {
	return g.cfg.Exec(ctx, nil, g.cfg.IPTables, append([]string{"-w", "5"}, args...)...)
}

// readRoutes returns the node's host routes (/32) and the interfaces each
// goes through, from the kernel's listing of the main table.
func readRoutes(path string) (map[netip.Addr][]string, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("read the node's routes: %w", err)
	}
	routes := map[netip.Addr][]string{}
	for _, l := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 8 || f[7] != "FFFFFFFF" {
			continue
		}
		d, err := strconv.ParseUint(f[1], 16, 32)
		if err != nil {
			continue
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(d)) // the kernel prints it in host order
		a := netip.AddrFrom4(b)
		routes[a] = append(routes[a], f[0])
	}
	return routes, nil
}

// jumps are the rules in built-in chains: table, chain, target.
func (g *Guard) jumps() [][3]string {
	return [][3]string{
		{"nat", "PREROUTING", g.inChain()},
		{"filter", "OUTPUT", g.outChain()},
		{"filter", "FORWARD", g.outChain()},
	}
}

func (g *Guard) ebt(ctx context.Context, args ...string) ([]byte, error) {
	return g.cfg.Exec(ctx, nil, g.cfg.EBTables, args...)
}

// Sync makes the rules exactly those of sbs (one ebtables-restore
// transaction) and then publishes the new owners. On failure the previous
// owners stay published minus every sandbox not in sbs: an address whose
// sandbox is gone is never reported as guarded. It returns the reasons
// sandboxes were left unguarded joined with any failure. Unless force is
// set, rules identical to the last applied are not applied again.
func (g *Guard) Sync(ctx context.Context, sbs []Sandbox, force bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	links, lerr := g.cfg.Links()
	sbs, stale := live(sbs, links)
	g.stale.Store(int64(stale))
	var routes map[netip.Addr][]string
	var rerr error
	for _, sb := range sbs {
		if sb.Bridge == "" {
			routes, rerr = readRoutes(g.cfg.RoutesFile)
			break
		}
	}
	ok, refused := guardable(sbs, routes)
	if rerr != nil {
		refused = append(refused, rerr)
	}
	if lerr != nil {
		refused = append(refused, lerr)
	}
	err := g.apply(ctx, ok, force)
	next := map[netip.Addr]Sandbox{}
	if err == nil {
		for _, sb := range ok {
			for _, a := range sb.IPs {
				if a.Is4() { // only IPv4 is guarded
					next[a] = sb
				}
			}
		}
	} else {
		want := map[string]bool{}
		for _, sb := range ok {
			want[sb.ContainerID+"|"+sb.HostIf+"|"+sb.MAC.String()] = true
		}
		for a, sb := range *g.owners.Load() {
			if want[sb.ContainerID+"|"+sb.HostIf+"|"+sb.MAC.String()] {
				next[a] = sb
			}
		}
	}
	g.owners.Store(&next)
	g.ready.Store(err == nil)
	return errors.Join(append(refused, err)...)
}

func (g *Guard) apply(ctx context.Context, sbs []Sandbox, force bool) error {
	sort.Slice(sbs, func(i, j int) bool { return sbs[i].ContainerID < sbs[j].ContainerID })
	if err := g.applyRaw(ctx, sbs, force); err != nil {
		return err
	}
	input := g.restoreInput(sbs)
	if !force && string(input) == g.applied {
		return nil
	}
	g.applied = ""
	if _, err := g.cfg.Exec(ctx, input, g.cfg.EBTablesRestore, "--noflush"); err != nil {
		return fmt.Errorf("install pod guard rules: %w", err)
	}
	for _, j := range g.jumps() {
		out, err := g.ebt(ctx, "-t", j[0], "-L", j[1])
		if err != nil {
			return fmt.Errorf("list ebtables %s %s: %w", j[0], j[1], err)
		}
		if hasJump(out, j[2]) {
			continue
		}
		if _, err := g.ebt(ctx, "-t", j[0], "-I", j[1], "1", "-j", j[2]); err != nil {
			return fmt.Errorf("install jump to %s: %w", j[2], err)
		}
	}
	g.applied = string(input)
	return nil
}

// applyRaw keeps the iptables chain of routed sandboxes. A node without
// any has no such chain: it is created with the first routed sandbox, and
// one left by an earlier run is emptied (stale addresses must not stay
// tied to interfaces that may now be someone else's).
func (g *Guard) applyRaw(ctx context.Context, sbs []Sandbox, force bool) error {
	routed := slices.ContainsFunc(sbs, func(sb Sandbox) bool { return sb.Bridge == "" })
	if !routed && !g.rawChain {
		if !force {
			return nil
		}
		if _, err := g.ipt(ctx, "-t", "raw", "-S", g.rawChainName()); err != nil {
			return nil // no chain (or no iptables: then no routed pod is guarded either)
		}
	}
	input := g.rawRestoreInput(sbs)
	if !force && string(input) == g.appliedRaw {
		return nil
	}
	g.appliedRaw, g.rawChain = "", true
	if _, err := g.cfg.Exec(ctx, input, g.cfg.IPTablesRestore, "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("install routed pod guard rules: %w", err)
	}
	j := g.rawJump()
	if _, err := g.ipt(ctx, append([]string{j[0], j[1], "-C"}, j[2:]...)...); err != nil {
		if _, err := g.ipt(ctx, append([]string{j[0], j[1], "-I", j[2], "1"}, j[3:]...)...); err != nil {
			return fmt.Errorf("install jump to %s: %w", g.rawChainName(), err)
		}
	}
	g.appliedRaw = string(input)
	return nil
}

// Ready reports whether the last sync applied every rule it had to.
func (g *Guard) Ready() bool { return g.ready.Load() }

// Refresh asks Run for a sync soon (a pod came or went).
func (g *Guard) Refresh() {
	g.requested.Add(1)
	select {
	case g.kick <- struct{}{}:
	default: // one is pending already; it will read the latest records
	}
}

// Ensure returns the sandbox guarded at ip. If there is none, or fresh is
// set, it asks for a sync that reads the CNI records afresh and waits for
// it (or ctx): a pod that has just started is guarded before its first
// request is served.
func (g *Guard) Ensure(ctx context.Context, ip netip.Addr, fresh bool) (Sandbox, bool) {
	if sb, ok := g.Owner(ip); ok && !fresh {
		return sb, true
	}
	want := g.requested.Add(1)
	select {
	case g.kick <- struct{}{}:
	default:
	}
	for {
		g.wmu.Lock()
		done, ch := g.completed >= want, g.synced
		g.wmu.Unlock()
		if done {
			return g.Owner(ip)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Sandbox{}, false
		}
	}
}

// Run syncs the rules with the node's CNI records at once, whenever asked
// (Refresh, Ensure), whenever a record is written or removed, and every
// Interval (then re-applying them whatever the last state, to repair
// removed rules), until ctx ends. It never removes
// the rules on return: they keep protecting the pods while the agent is away.
func (g *Guard) Run(ctx context.Context) error {
	stopWatch := g.watchResults(ctx)
	defer stopWatch()
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	force, lastErr, lastStale := true, "", 0
	for {
		covers := g.requested.Load()
		sbs, errs := ReadCNIResults(g.cfg.ResultsDir)
		if err := g.Sync(ctx, sbs, force); err != nil {
			errs = append(errs, err)
		}
		if msg := errors.Join(errs...); msg != nil && msg.Error() != lastErr && ctx.Err() == nil {
			lastErr = msg.Error()
			g.cfg.Logger.Warn("pods not guarded against address spoofing (they get no token)", "error", lastErr)
		} else if msg == nil && lastErr != "" {
			lastErr = ""
			g.cfg.Logger.Info("every pod of the node is guarded against address spoofing", "addresses", g.Guarded())
		}
		if n := g.Stale(); n != lastStale {
			lastStale = n
			g.cfg.Logger.Info("ignoring CNI records whose host interface is gone (sandboxes removed without a CNI DEL)", "records", n, "dir", g.cfg.ResultsDir)
		}
		g.wmu.Lock()
		g.completed = covers
		close(g.synced)
		g.synced = make(chan struct{})
		g.wmu.Unlock()
		force = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			force = true
		case <-g.kick:
		}
	}
}

// watchResults asks for a sync whenever a CNI record is written or
// removed: the runtime writes a pod's record when its network is set up,
// before its containers start, so the pod is guarded by the time its first
// request comes (which otherwise waits for that sync: Ensure). Records
// being created are not acted on until written (a sync would read them
// empty). Without inotify, syncs happen on request and every Interval, as
// before. The returned func stops the watch and waits for its goroutine.
func (g *Guard) watchResults(ctx context.Context) func() {
	w, err := fsnotify.NewWatcher()
	if err == nil {
		err = w.Add(g.cfg.ResultsDir)
		if err != nil {
			_ = w.Close()
		}
	}
	if err != nil {
		g.cfg.Logger.Info("not watching the CNI records; new pods are guarded on their first request", "dir", g.cfg.ResultsDir, "error", err)
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Write) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
					g.Refresh()
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return func() { _ = w.Close(); <-done }
}

func hasJump(listing []byte, chain string) bool {
	for _, l := range strings.Split(string(listing), "\n") {
		if strings.TrimSpace(l) == "-j "+chain {
			return true
		}
	}
	return false
}

// Uninstall removes podid's guard chains and the jumps to them.
func (g *Guard) Uninstall(ctx context.Context) error {
	var errs []error
	for _, j := range g.jumps() {
		for range 100 {
			if _, err := g.ebt(ctx, "-t", j[0], "-D", j[1], "-j", j[2]); err != nil {
				break
			}
		}
	}
	for _, tc := range [][2]string{{"nat", g.inChain()}, {"filter", g.outChain()}} {
		if _, err := g.ebt(ctx, "-t", tc[0], "-L", tc[1]); err != nil {
			continue // no such chain
		}
		if _, err := g.ebt(ctx, "-t", tc[0], "-F", tc[1]); err != nil {
			errs = append(errs, err)
		}
		if _, err := g.ebt(ctx, "-t", tc[0], "-X", tc[1]); err != nil {
			errs = append(errs, err)
		}
	}
	j := g.rawJump()
	for range 100 {
		if _, err := g.ipt(ctx, append([]string{j[0], j[1], "-D"}, j[2:]...)...); err != nil {
			break
		}
	}
	if _, err := g.ipt(ctx, "-t", "raw", "-S", g.rawChainName()); err == nil {
		if _, err := g.ipt(ctx, "-t", "raw", "-F", g.rawChainName()); err != nil {
			errs = append(errs, err)
		}
		if _, err := g.ipt(ctx, "-t", "raw", "-X", g.rawChainName()); err != nil {
			errs = append(errs, err)
		}
	}
	g.mu.Lock()
	g.applied, g.appliedRaw, g.rawChain = "", "", false
	g.mu.Unlock()
	g.owners.Store(&map[netip.Addr]Sandbox{})
	g.ready.Store(false)
	return errors.Join(errs...)
}
