// Command webhook benchmarks podid's admission webhook: AdmissionReview
// round trips over HTTPS against the real server, handler, informer-backed
// ServiceAccount cache (warm, fed by a fake clientset) and certificate
// manager, at several client concurrencies; plus the handler alone
// (decode, mutate, encode; no network). Client and server share the machine.
//
//	go run ./bench/webhook -duration 5s -c 1,16
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podid/podid/internal/servingcert"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/workloadidentity"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measuring time per run")
	warmup := flag.Duration("warmup", time.Second, "warm-up time per run")
	conc := flag.String("c", "1,16", "client concurrencies, comma-separated")
	h2 := flag.Bool("h2", false, "HTTP/2 (one multiplexed connection) instead of HTTP/1.1 keep-alive connections")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*duration, *warmup, *conc, *h2); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// review is an AdmissionReview as the API server sends it for a typical
// Deployment pod (~2.5 KiB).
func review(uid, sa string) []byte {
	pod := `{"kind":"Pod","apiVersion":"v1","metadata":{"generateName":"web-5d8f9c7b6-","namespace":"bench","creationTimestamp":null,` +
		`"labels":{"app":"web","pod-template-hash":"5d8f9c7b6","azure.workload.identity/use":"true"},` +
		`"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d8f9c7b6","uid":"0b8e6f76-5a0e-4f54-9d39-2f8a9a3c1e11","controller":true,"blockOwnerDeletion":true}]},` +
		`"spec":{"volumes":[{"name":"kube-api-access-x7k2p","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},` +
		`{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}},{"downwardAPI":{"items":[{"path":"namespace","fieldRef":{"apiVersion":"v1","fieldPath":"metadata.namespace"}}]}}],"defaultMode":420}}],` +
		`"initContainers":[{"name":"migrate","image":"registry.local/web:1.2.3","command":["/migrate"],"resources":{},"volumeMounts":[{"name":"kube-api-access-x7k2p","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],` +
		`"containers":[{"name":"web","image":"registry.local/web:1.2.3","ports":[{"containerPort":8080,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}},` +
		`"volumeMounts":[{"name":"kube-api-access-x7k2p","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"readinessProbe":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3},` +
		`"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],` +
		`"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"` + sa + `","serviceAccount":"` + sa + `","securityContext":{},"schedulerName":"default-scheduler",` +
		`"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},"status":{}}`
	return []byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"` + uid + `",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":{"group":"","version":"v1","resource":"pods"},` +
		`"namespace":"bench","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller","uid":"u","groups":["system:serviceaccounts","system:authenticated"]},` +
		`"object":` + pod + `,"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}`)
}

func run(duration, warmup time.Duration, conc string, h2 bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// 1000 ServiceAccounts in the cache, one of them ours.
	cs := fake.NewClientset()
	for i := range 1000 {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Name: "sa-" + strconv.Itoa(i), Namespace: "bench",
			Annotations: map[string]string{workloadidentity.ClientIDAnnotation: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)},
		}}
		if _, err := cs.CoreV1().ServiceAccounts("bench").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	sas := webhook.NewServiceAccountCache(cs)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = sas.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	if err := sas.WaitForSync(ctx); err != nil {
		return err
	}

	certs := servingcert.New(servingcert.Config{Client: cs, Namespace: "podid-system", SecretName: "cert", Hosts: []string{"127.0.0.1"}})
	if _, err := certs.Sync(ctx); err != nil {
		return err
	}
	metrics, err := webhook.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return err
	}
	handler := webhook.NewHandler(webhook.HandlerConfig{
		Mutator:         webhook.Mutator{DefaultTenantID: "tenant"},
		ServiceAccounts: sas,
		Metrics:         metrics,
	})
	server := webhook.NewServer(webhook.ServerConfig{Handler: handler, GetCertificate: certs.GetCertificate})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = server.Serve(ctx, ln) }()

	normal, missing := review("uid-1", "sa-500"), review("uid-2", "no-such-sa")
	fmt.Printf("GOMAXPROCS=%d NumCPU=%d request=%d bytes duration=%v h2=%v\n\n", runtime.GOMAXPROCS(0), runtime.NumCPU(), len(normal), duration, h2)

	// Handler only: ServeHTTP on an in-memory request.
	for _, c := range []struct {
		name string
		body []byte
	}{{"handler-only normal", normal}, {"handler-only missing-SA", missing}} {
		if err := check(handler, c.body); err != nil {
			return err
		}
		per := handlerOnly(handler, c.body, duration/2)
		fmt.Printf("%-28s %8.1f µs/op  (%.0f op/s on one goroutine)\n", c.name, float64(per.Nanoseconds())/1e3, 1/per.Seconds())
	}
	fmt.Println()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certs.CABundle())
	url := "https://" + ln.Addr().String() + webhook.Path
	fmt.Printf("%-28s %4s %10s %9s %9s %9s %9s\n", "HTTPS round trip", "c", "req/s", "p50", "p99", "max", "cpu/req")
	for _, cs := range strings.Split(conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(cs))
		if err != nil || c < 1 {
			return fmt.Errorf("bad concurrency %q", cs)
		}
		var normalRate float64
		for _, k := range []struct {
			name string
			body []byte
		}{{"normal (warm cache)", normal}, {"missing SA (deny)", missing}} {
			tr := &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
				MaxIdleConnsPerHost: c,
				ForceAttemptHTTP2:   h2,
			}
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			cpu0 := cpuTime()
			res, err := load(client, url, k.body, c, warmup, duration)
			cpuPerReq := (cpuTime() - cpu0) / time.Duration(max(res.total, 1))
			tr.CloseIdleConnections()
			if err != nil {
				return err
			}
			ratio := ""
			if normalRate == 0 {
				normalRate = res.rate
			} else {
				ratio = fmt.Sprintf("  (%.2fx the normal path's throughput)", res.rate/normalRate)
			}
			fmt.Printf("%-28s %4d %10.0f %9s %9s %9s %9s%s\n", k.name, c, res.rate, res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), res.max.Round(time.Microsecond), cpuPerReq.Round(time.Microsecond), ratio)
		}
	}
	return nil
}

func check(h http.Handler, body []byte) error {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		return fmt.Errorf("handler: %d %s", rec.Code, rec.Body)
	}
	return nil
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

func handlerOnly(h http.Handler, body []byte, d time.Duration) time.Duration {
	w := &discardWriter{h: http.Header{}}
	rd := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, webhook.Path, rd)
	req.Header.Set("Content-Type", "application/json")
	n, start := 0, time.Now()
	for time.Since(start) < d {
		for range 100 {
			rd.Reset(body)
			req.Body = io.NopCloser(rd)
			h.ServeHTTP(w, req)
		}
		n += 100
	}
	return time.Since(start) / time.Duration(n)
}

// cpuTime is the process's user+system CPU time (client and server both).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type result struct {
	total         int // requests including warm-up
	rate          float64
	p50, p99, max time.Duration
}

func load(client *http.Client, url string, body []byte, c int, warmup, d time.Duration) (result, error) {
	var (
		mu       sync.Mutex // protects lat, total and firstErr
		total    int
		lat      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+d)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<16)
			n := 0
			for {
				n++
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				if t0.After(measureFrom) {
					local = append(local, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	if len(lat) == 0 {
		return result{}, errors.New("no requests measured")
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return result{total: total, rate: float64(len(lat)) / d.Seconds(), p50: q(0.50), p99: q(0.99), max: lat[len(lat)-1]}, nil
}
