package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/token"
)

// TestLoadColdTokens measures the upstream path of a cold token, without
// the cache: a TokenRequest bound to the pod (as the agent, through the
// shipped admission policy) and the federated exchange at an in-process
// podid sts. n fetches at concurrency c stand for n new pods' first tokens.
//
//	PODID_BENCH=1 go test -run TestLoadColdTokens -v ./internal/agent/
func TestLoadColdTokens(t *testing.T) {
	if os.Getenv("PODID_BENCH") != "1" {
		t.Skip("set PODID_BENCH=1 to run the load benchmark")
	}
	e := env.Need(t)
	ctx := t.Context()
	ns := e.Namespace(t)
	if err := e.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: "node-bench", ServiceAccountName: "app", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if err := e.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	admin, _ := kubernetes.NewForConfig(e.Config)
	iss := issuerOfClusterTokens(t, admin, ns)
	ext := apiServerIssuerTransport(t, e)
	s := ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) { c.ExternalTransport = ext }})
	cid := s.AddIdentity(t, "bench", iss, "system:serviceaccount:"+ns+":app")
	agentCS, err := kubernetes.NewForConfig(agentConfig(t, e, "node-bench"))
	if err != nil {
		t.Fatal(err)
	}
	p := token.NewProvider(token.ProviderConfig{Authority: s.URL, HTTPClient: s.Client(), TokenRequester: token.KubeTokenRequester{Client: agentCS}})
	req := token.Request{Identity: token.Identity{Kind: token.Federated, ClientID: cid, TenantID: s.TenantID, Origin: "bench"},
		Resource: "https://vault.azure.net", Pod: token.Pod{Namespace: ns, Name: "p", UID: pod.UID, ServiceAccount: "app"}}
	if _, err := p.Token(ctx, req); err != nil { // warm: MSAL authority metadata, JWKS
		t.Fatal(err)
	}
	for _, tc := range []struct{ n, c int }{{200, 1}, {1000, 64}} {
		lat := make([]time.Duration, tc.n)
		var (
			wg   sync.WaitGroup
			next = make(chan int)
			errs = make(chan error, tc.n)
		)
		start := time.Now()
		for range tc.c {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					t0 := time.Now()
					if _, err := p.Token(ctx, req); err != nil {
						errs <- err
					}
					lat[i] = time.Since(t0)
				}
			}()
		}
		for i := range tc.n {
			next <- i
		}
		close(next)
		wg.Wait()
		total := time.Since(start)
		close(errs)
		for err := range errs {
			t.Fatalf("cold fetch: %v", err)
		}
		slices.Sort(lat)
		t.Logf("cold token (TokenRequest + exchange at podid sts, no cache), n=%d c=%d: total %s, p50 %s, p99 %s",
			tc.n, tc.c, total.Round(time.Millisecond), lat[tc.n/2].Round(time.Microsecond), lat[tc.n*99/100].Round(time.Microsecond))
	}
}

// TestLoadAgentRSS runs the real podid binary as the agent against the API
// server with 10,000 pods on its node and 1,000 identities and bindings,
// and reports its resident memory once its caches have synced.
//
//	PODID_BENCH=1 go test -run TestLoadAgentRSS -v -timeout 30m ./internal/agent/
func TestLoadAgentRSS(t *testing.T) {
	if os.Getenv("PODID_BENCH") != "1" {
		t.Skip("set PODID_BENCH=1 to run the load benchmark")
	}
	e := env.Need(t)
	ctx := t.Context()
	const node = "node-rss"
	pods, ids := 10000, 1000
	if v, err := strconv.Atoi(os.Getenv("PODID_BENCH_PODS")); err == nil {
		pods, ids = v, v/10
	}
	ns := e.Namespace(t)
	// Built as hack/image.sh builds the image's binary.
	bin := filepath.Join(t.TempDir(), "podid")
	if out, err := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, filepath.Join(testenv.RepoRoot(), "cmd", "podid")).CombinedOutput(); err != nil {
		t.Fatalf("build podid: %v\n%s", err, out)
	}
	start := time.Now()
	parallel(t, 32, pods, func(i int) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%05d", i), Namespace: ns,
			Labels: map[string]string{"aadpodidbinding": fmt.Sprintf("sel-%d", i%max(ids, 1)), "app": "bench"}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "localhost/app:dev",
				Env: []corev1.EnvVar{{Name: "A", Value: strings.Repeat("x", 64)}}}}}}
		if err := e.Client.Create(ctx, p); err != nil {
			return err
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256)}
		return e.Client.Status().Update(ctx, p)
	})
	parallel(t, 32, ids, func(i int) error {
		if ids == 0 {
			return nil
		}
		id := &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("id-%d", i), Namespace: ns},
			Spec: podidv1.AzureIdentitySpec{ClientID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47"}}
		if err := e.Client.Create(ctx, id); err != nil {
			return err
		}
		return e.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b-%d", i), Namespace: ns},
			Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: id.Name, Selector: fmt.Sprintf("sel-%d", i)}})
	})
	t.Logf("created %d pods and %d identities+bindings in %s", pods, ids, time.Since(start).Round(time.Second))

	rc := agentConfig(t, e, node)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	kc.AuthInfos["a"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	kc.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "a"}
	kc.CurrentContext = "x"
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kcPath); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, localhost)
	health := freePort(t, localhost)
	debug := freePort(t, localhost)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(actx, bin, "agent", "--kubeconfig", kcPath, "--node-name", node, "--intercept=false",
		"--listen-addr", "127.0.0.1:"+strconv.Itoa(port), "--health-addr", "127.0.0.1:"+strconv.Itoa(health), "--debug-addr", "127.0.0.1:"+strconv.Itoa(debug), "--log-level", "warn")
	cmd.Stderr = testWriter{t}
	if v := os.Getenv("PODID_BENCH_GOMEMLIMIT"); v != "" {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+v)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	t0 := time.Now()
	waitUntil(t, 5*time.Minute, func() bool {
		res, err := httpGet("http://127.0.0.1:" + strconv.Itoa(health) + "/readyz")
		return err == nil && res == 200
	})
	t.Logf("agent ready (caches synced) after %s", time.Since(t0).Round(time.Millisecond))
	sleepCtx(ctx, 5*time.Second)
	if res, err := http.Get("http://127.0.0.1:" + strconv.Itoa(health) + "/metrics"); err == nil {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			for _, m := range []string{"go_memstats_heap_inuse_bytes ", "go_memstats_sys_bytes ", "podid_agent_pods "} {
				if strings.HasPrefix(l, m) {
					t.Logf("agent metric %s", l)
				}
			}
		}
	}
	// PODID_BENCH_HEAP_PROFILE=<file> keeps the agent's heap profile (go tool pprof <file>).
	if out := os.Getenv("PODID_BENCH_HEAP_PROFILE"); out != "" {
		if res, err := http.Get("http://127.0.0.1:" + strconv.Itoa(debug) + "/debug/pprof/heap"); err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if err := os.WriteFile(out, b, 0o644); err != nil {
				t.Errorf("write heap profile: %v", err)
			}
		}
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmRSS") || strings.HasPrefix(l, "VmHWM") || strings.HasPrefix(l, "RssAnon") || strings.HasPrefix(l, "RssFile") {
			t.Logf("agent with %d pods on its node and %d identities: %s", pods, ids, strings.Join(strings.Fields(l), " "))
		}
	}
}

func parallel(t *testing.T, c, n int, f func(i int) error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		next  = make(chan int)
		mu    sync.Mutex // protects first
		first error
	)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
