package sts_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

const benchConcurrency = 16

// BenchmarkIssuance compares federated-assertion token issuance over HTTPS
// (JWKS cached, keep-alive connections, c=16) with the raw RS256 signing rate
// of the same machine in the same run. Run:
//
//	go test ./internal/sts -run '^$' -bench BenchmarkIssuance -benchtime 5s
func BenchmarkIssuance(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	var rawRate, rawCPU float64
	b.Run("raw-rs256-sign", func(b *testing.B) {
		digest := sha256.Sum256([]byte(strings.Repeat("x", 600))) // a token's signing input
		cpu0 := cpuTime()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		rawRate = float64(b.N) / time.Since(start).Seconds()
		rawCPU = float64((cpuTime() - cpu0).Microseconds()) / float64(b.N)
		b.ReportMetric(rawRate, "signs/s")
		b.ReportMetric(rawCPU, "cpu-µs/op")
	})
	// Server-side cost only: the handler called in-process (no TLS, no
	// client), c=16.
	b.Run("federated-token-handler-c16", func(b *testing.B) {
		srv, body, _ := benchServer(b)
		h := srv.Handler()
		path := "/" + srv.TenantID + "/oauth2/v2.0/token"
		var mu sync.Mutex // protects lat
		var lat []time.Duration
		b.SetParallelism((benchConcurrency + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ResetTimer()
		cpu0 := cpuTime()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				t0 := time.Now()
				req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Errorf("status %d: %s", rec.Code, rec.Body)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
		report(b, start, cpu0, lat, rawRate, rawCPU)
	})
	b.Run("federated-token-https-c16", func(b *testing.B) {
		srv, body, _ := benchServer(b)
		// One HTTP/1.1 keep-alive connection per concurrent caller, as 16
		// pods (or agents) would each hold their own.
		tr := srv.Transport()
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tr.MaxIdleConnsPerHost = benchConcurrency
		client := &http.Client{Transport: tr}
		defer tr.CloseIdleConnections()
		endpoint := srv.URL + "/" + srv.TenantID + "/oauth2/v2.0/token"
		post := func() time.Duration {
			t0 := time.Now()
			resp, err := client.Post(endpoint, "application/x-www-form-urlencoded", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return 0
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
			}
			return time.Since(t0)
		}
		// Warm up: connections, JWKS cache.
		var wg sync.WaitGroup
		for range benchConcurrency {
			wg.Add(1)
			go func() { defer wg.Done(); post() }()
		}
		wg.Wait()

		var mu sync.Mutex // protects lat
		var lat []time.Duration
		b.SetParallelism((benchConcurrency + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ResetTimer()
		cpu0 := cpuTime()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				mine = append(mine, post())
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
		report(b, start, cpu0, lat, rawRate, rawCPU)
	})
}

// report adds throughput, latency percentiles and the ratio to raw signing,
// both in wall-clock rate and in process CPU time per operation (the latter
// stays meaningful when other processes compete for the cores).
func report(b *testing.B, start time.Time, cpu0 time.Duration, lat []time.Duration, rawRate, rawCPU float64) {
	rate := float64(b.N) / time.Since(start).Seconds()
	cpu := float64((cpuTime() - cpu0).Microseconds()) / float64(b.N)
	b.StopTimer()
	b.ReportMetric(cpu, "cpu-µs/op")
	if rawCPU > 0 {
		b.ReportMetric(100*rawCPU/cpu, "%-of-raw-sign-cpu")
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	}
	b.ReportMetric(rate, "tokens/s")
	if rawRate > 0 {
		b.ReportMetric(100*rate/rawRate, "%-of-raw-sign")
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchServer starts an sts with one identity trusting a test issuer and
// returns a ready token request body (the assertion is reused, as a pod
// reuses its projected token; its JWKS is cached after the first request).
func benchServer(b *testing.B) (*ststest.Server, string, *ststest.Issuer) {
	is := ststest.NewIssuer(b)
	srv := ststest.Start(b, ststest.Options{Configure: func(c *sts.Config) {
		c.ExternalTransport = is.Transport()
	}})
	const subject = "system:serviceaccount:bench:sa"
	clientID := srv.AddIdentity(b, "bench", is.URL, subject)
	body := url.Values{
		"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {"https://storage.azure.com/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {is.Token(b, subject, sts.DefaultFICAudience, time.Now(), 24*time.Hour, nil)},
	}.Encode()
	// Warm the issuer's JWKS cache.
	req := httptest.NewRequest(http.MethodPost, "/"+srv.TenantID+"/oauth2/v2.0/token", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		b.Fatalf("warm-up: %d %s", rec.Code, rec.Body)
	}
	return srv, body, is
}

// BenchmarkRouting measures the router alone: a public metadata request
// (no signing, no store) through the whole handler, in-process.
//
//	go test ./internal/sts -run '^$' -bench BenchmarkRouting -benchtime 1s -count 3
func BenchmarkRouting(b *testing.B) {
	srv := ststest.Start(b, ststest.Options{})
	h := srv.Handler()
	for _, path := range []string{"/" + srv.TenantID + "/discovery/v2.0/keys", "/" + srv.TenantID + "/Discovery/V2.0/Keys", "/nope/x"} {
		b.Run(strings.ReplaceAll(strings.TrimPrefix(path, "/"+srv.TenantID), "/", "_"), func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
