// Command controller-bench measures podid controller on a real API server:
// N pods × M bindings (each pod selected by one binding), the controller run
// as its own process. It reports the time until every AzureAssignedIdentity
// exists, the time of a full no-op resync (a restart over unchanged state),
// the API writes during that resync (read from the controller's own
// client-go request metrics; must be 0) and the controller's RSS.
//
//	go run ./bench/controller -pods 10000 -bindings 1000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/testenv"
)

func main() {
	pods := flag.Int("pods", 10000, "pods to create")
	bindings := flag.Int("bindings", 1000, "identities and bindings to create")
	namespaces := flag.Int("namespaces", 10, "namespaces to spread them over")
	podid := flag.String("podid", "", "podid binary (default: build ./cmd/podid)")
	qps := flag.Int("qps", 1000, "controller --kube-api-qps")
	workers := flag.Int("workers", 32, "controller --workers")
	memLimit := flag.String("gomemlimit", "72MiB", "GOMEMLIMIT of the controller process, as deploy/controller sets it (\"\" for none)")
	flag.Parse()
	ctrl.SetLogger(logr.Discard())
	if err := run(*pods, *bindings, *namespaces, *podid, *qps, *workers, *memLimit); err != nil {
		fmt.Fprintln(os.Stderr, "controller-bench:", err)
		os.Exit(1)
	}
}

func run(nPods, nBindings, nNS int, podid string, qps, workers int, memLimit string) error {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "podid-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if podid == "" {
		podid = filepath.Join(tmp, "podid")
		b := exec.Command("go", "build", "-o", podid, "./cmd/podid")
		b.Dir, b.Stdout, b.Stderr = testenv.RepoRoot(), os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("build podid: %w", err)
		}
	}
	env, err := testenv.Start(testenv.Options{APIServerArgs: map[string][]string{
		// One machine, two cores: let the benchmark, not APF, be the limit.
		"max-requests-inflight": {"2000"}, "max-mutating-requests-inflight": {"1000"},
	}})
	if err != nil {
		return err
	}
	defer env.Stop()
	user, err := env.Env.AddUser(envtest.User{Name: "bench-controller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}

	c := env.Client
	t0 := time.Now()
	var nsNames []string
	for i := 0; i < nNS; i++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i)}}
		if err := c.Create(ctx, ns); err != nil {
			return err
		}
		nsNames = append(nsNames, ns.Name)
	}
	// Binding i lives in namespace i%nNS; pod j is selected by binding j%nBindings
	// and lives in that binding's namespace.
	if err := parallel(nBindings, 32, func(i int) error {
		ns := nsNames[i%nNS]
		id := &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("id-%d", i)},
			Spec: podidv1.AzureIdentitySpec{ClientID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)}}
		b := &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("b-%d", i)},
			Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: id.Name, Selector: fmt.Sprintf("sel-%d", i)}}
		if err := c.Create(ctx, id); err != nil {
			return err
		}
		return c.Create(ctx, b)
	}); err != nil {
		return fmt.Errorf("create bindings: %w", err)
	}
	if err := parallel(nPods, 64, func(j int) error {
		i := j % nBindings
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsNames[i%nNS], Name: fmt.Sprintf("pod-%d", j),
				Labels: map[string]string{podidv1.PodLabelKey: fmt.Sprintf("sel-%d", i), "app": "bench"}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", j%50), Containers: []corev1.Container{{Name: "c", Image: "localhost/none:dev"}}},
		}
		return c.Create(ctx, p)
	}); err != nil {
		return fmt.Errorf("create pods: %w", err)
	}
	fmt.Printf("controller: --workers %d --kube-api-qps %d, GOMEMLIMIT=%q\n", workers, qps, memLimit)
	fmt.Printf("setup: %d namespaces, %d identities + bindings, %d pods created in %v\n", nNS, nBindings, nPods, time.Since(t0).Round(time.Millisecond))

	// Baseline: how fast this API server takes AzureAssignedIdentity creates
	// from a plain client with as many writers as the controller has workers.
	// The controller cannot assign faster than this; the ratio says how much
	// of the time is the controller's own.
	baseN := min(nPods, 3000)
	baseRate, err := baseline(ctx, c, "bench-baseline", baseN, workers)
	if err != nil {
		return err
	}
	fmt.Printf("baseline before: %d AzureAssignedIdentity creates by a plain client with %d writers: %.0f creates/s\n", baseN, workers, baseRate)

	// Run 1: the controller assigns everything.
	ctl, err := startController(ctx, podid, kubeconfig, qps, workers, memLimit)
	if err != nil {
		return err
	}
	ready, err := ctl.waitReady(ctx)
	if err != nil {
		ctl.stop()
		return err
	}
	// Poll the controller's own counter, not the API server: listing 10k
	// objects ten times a second would slow the API server being measured.
	done, err := ctl.poll(ctx, "assignments", func() bool {
		m, err := ctl.metrics(ctx)
		return err == nil && m.sum("podid_controller_assignment_writes_total{", `verb="create"`) >= float64(nPods)
	})
	if err != nil {
		ctl.stop()
		return err
	}
	if err := checkCount(ctx, c, nPods); err != nil {
		ctl.stop()
		return err
	}
	// Run 1 is over when the first conditions are written too; otherwise
	// run 2 would finish run 1's work and not be a no-op.
	if err := waitConditions(ctx, c, nBindings); err != nil {
		ctl.stop()
		return err
	}
	settled := time.Since(ctl.start)
	m1, _ := ctl.metrics(ctx)
	rss1 := ctl.rssMB()
	ctl.stop()
	rate := float64(nPods) / (done - ready).Seconds()
	fmt.Printf("full assignment: %d AzureAssignedIdentities %v after controller start (caches synced after %v; %.0f assignments/s after sync = %.0f%% of the baseline create rate)\n",
		nPods, done.Round(time.Millisecond), ready.Round(time.Millisecond), rate, 100*rate/baseRate)
	fmt.Printf("  all identity/binding conditions written %v after start\n", settled.Round(time.Millisecond))
	fmt.Printf("  controller API requests during run 1: %s\n", m1.requests())
	fmt.Printf("  controller RSS at the end of run 1: %.1f MB\n", rss1)

	// Run 2: a restart over unchanged state is a full resync: every pod,
	// identity and binding is reconciled again. It must write nothing.
	ctl, err = startController(ctx, podid, kubeconfig, qps, workers, memLimit)
	if err != nil {
		return err
	}
	defer ctl.stop()
	ready2, err := ctl.waitReady(ctx)
	if err != nil {
		return err
	}
	resync, err := ctl.waitReconciled(ctx, "podidentity", nPods)
	if err != nil {
		return err
	}
	if _, err := ctl.waitReconciled(ctx, "bindingstatus", nBindings); err != nil {
		return err
	}
	m2, err := ctl.metrics(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("no-op resync: %d pods reconciled %v after start (caches synced after %v)\n", nPods, resync.Round(time.Millisecond), ready2.Round(time.Millisecond))
	fmt.Printf("  API writes during the no-op resync: %d  (requests: %s)\n", m2.writes(), m2.requests())
	fmt.Printf("  controller RSS after the resync: %.1f MB\n", ctl.rssMB())
	if m2.writes() != 0 {
		return errors.New("the no-op resync wrote to the API server")
	}
	// The machine is shared: bracket the controller's run with a second
	// baseline so the ratio is not an artefact of load that came and went.
	after, err := baseline(ctx, c, "bench-baseline-2", baseN, workers)
	if err != nil {
		return err
	}
	fmt.Printf("baseline after: %.0f creates/s; controller assignment rate = %.0f%% of the mean baseline\n", after, 200*rate/(baseRate+after))
	return nil
}

// baseline creates n AzureAssignedIdentities in a fresh namespace with a
// plain client and the given number of writers, deletes them, and returns the
// create rate.
func baseline(ctx context.Context, c client.Client, ns string, n, workers int) (float64, error) {
	scratch := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if err := c.Create(ctx, scratch); err != nil {
		return 0, err
	}
	tb := time.Now()
	if err := parallel(n, workers, func(j int) error {
		a := &podidv1.AzureAssignedIdentity{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("baseline-%d", j), Labels: map[string]string{"podid.dev/pod-uid": fmt.Sprintf("uid-%d", j)}},
			Spec: podidv1.AzureAssignedIdentitySpec{
				AzureIdentityRef: &podidv1.IdentityRef{Name: "id", Namespace: ns, Spec: podidv1.AzureIdentitySpec{ClientID: "00000000-0000-0000-0000-000000000000"}},
				AzureBindingRef:  &podidv1.BindingRef{Name: "b", Namespace: ns, Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "id", Selector: "sel"}},
				Pod:              fmt.Sprintf("pod-%d", j), PodNamespace: ns, NodeName: "node-0",
			},
			Status: podidv1.AzureAssignedIdentityStatus{Status: podidv1.AssignedIDAssigned},
		}
		return c.Create(ctx, a)
	}); err != nil {
		return 0, fmt.Errorf("baseline creates: %w", err)
	}
	rate := float64(n) / time.Since(tb).Seconds()
	if err := c.DeleteAllOf(ctx, &podidv1.AzureAssignedIdentity{}, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	return rate, nil
}

func parallel(n, workers int, f func(int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// checkCount confirms that n AzureAssignedIdentities exist.
func checkCount(ctx context.Context, c client.Client, n int) error {
	var l metav1.PartialObjectMetadataList
	l.SetGroupVersionKind(podidv1.GroupVersion.WithKind("AzureAssignedIdentityList"))
	if err := c.List(ctx, &l); err != nil {
		return err
	}
	if len(l.Items) < n {
		return fmt.Errorf("controller reported %d creates but only %d assignments exist", n, len(l.Items))
	}
	return nil
}

// waitConditions polls until every identity has Valid and every binding Ready.
func waitConditions(ctx context.Context, c client.Client, n int) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var ids podidv1.AzureIdentityList
		var bs podidv1.AzureIdentityBindingList
		if err := c.List(ctx, &ids); err != nil {
			return err
		}
		if err := c.List(ctx, &bs); err != nil {
			return err
		}
		done := 0
		for _, i := range ids.Items {
			if meta.FindStatusCondition(i.Status.Conditions, podidv1.ConditionValid) != nil {
				done++
			}
		}
		for _, b := range bs.Items {
			if meta.FindStatusCondition(b.Status.Conditions, podidv1.ConditionReady) != nil {
				done++
			}
		}
		if done >= 2*n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d conditions after 10 minutes", done, 2*n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

type controllerProc struct {
	cmd         *exec.Cmd
	start       time.Time
	metricsAddr string
	healthAddr  string
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startController(ctx context.Context, podid, kubeconfig string, qps, workers int, memLimit string) (*controllerProc, error) {
	m, err := freeAddr()
	if err != nil {
		return nil, err
	}
	h, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, podid, "controller", "--kubeconfig", kubeconfig, "--leader-elect=false",
		"--metrics-addr", m, "--health-addr", h, "--kube-api-qps", strconv.Itoa(qps), "--kube-api-burst", strconv.Itoa(2*qps),
		"--workers", strconv.Itoa(workers))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+memLimit)
	if d := os.Getenv("BENCH_DEBUG_ADDR"); d != "" {
		cmd.Args = append(cmd.Args, "--debug-addr", d)
	}
	p := &controllerProc{cmd: cmd, start: time.Now(), metricsAddr: m, healthAddr: h}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *controllerProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
}

func (p *controllerProc) poll(ctx context.Context, what string, ok func() bool) (time.Duration, error) {
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("timed out waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
	return time.Since(p.start), nil
}

func (p *controllerProc) waitReady(ctx context.Context) (time.Duration, error) {
	return p.poll(ctx, "controller readiness", func() bool {
		r, err := http.Get("http://" + p.healthAddr + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
}

func (p *controllerProc) waitReconciled(ctx context.Context, controller string, n int) (time.Duration, error) {
	return p.poll(ctx, controller+" reconciles", func() bool {
		m, err := p.metrics(ctx)
		return err == nil && m.reconciles(controller) >= float64(n)
	})
}

// rssMB reads the controller's resident set size from /proc.
func (p *controllerProc) rssMB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

// scrape is a parsed Prometheus text exposition: series → value.
type scrape map[string]float64

func (p *controllerProc) metrics(ctx context.Context) (scrape, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metricsAddr+"/metrics", nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer r.Body.Close()
	s := scrape{}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			s[l[:i]] = v
		}
	}
	return s, sc.Err()
}

func (s scrape) sum(prefix string, contains ...string) float64 {
	var t float64
next:
	for k, v := range s {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		for _, c := range contains {
			if !strings.Contains(k, c) {
				continue next
			}
		}
		t += v
	}
	return t
}

func (s scrape) reconciles(controller string) float64 {
	return s.sum("controller_runtime_reconcile_total{", `controller="`+controller+`"`)
}

func (s scrape) writes() int {
	var n float64
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		n += s.sum("rest_client_requests_total{", `method="`+m+`"`)
	}
	return int(n)
}

func (s scrape) requests() string {
	var parts []string
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		parts = append(parts, fmt.Sprintf("%s=%.0f", m, s.sum("rest_client_requests_total{", `method="`+m+`"`)))
	}
	return strings.Join(parts, " ")
}
