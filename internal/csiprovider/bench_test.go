package csiprovider

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/podid/podid/internal/sts/keyvault"
)

// BenchmarkMount measures the provider's Mount as the driver calls it (gRPC
// over the unix socket) against a real sts vault in process: the exchange of
// the pod's ServiceAccount token for the identity, then one GET per object.
// Per-mount latency p50/p99 for 1 and 10 objects, next to the baseline of the
// same run: one azsecrets GetSecret with a token already held (the vault
// round trip each object costs at least). Run:
//
//	go test ./internal/csiprovider -run '^$' -bench BenchmarkMount -benchtime 200x
func BenchmarkMount(b *testing.B) {
	e := newEnv(b)
	id := e.identity(b, "bench", "default/default", keyvault.RoleSecretsUser)
	var names []string
	for i := range 10 {
		n := fmt.Sprintf("bench%d", i)
		e.set(b, n, "value-of-"+n)
		names = append(names, n)
	}
	quantiles := func(d []time.Duration) (p50, p99 time.Duration) {
		slices.Sort(d)
		return d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]
	}
	var base time.Duration
	b.Run("baseline-azsecrets-get", func(b *testing.B) {
		ctx := b.Context()
		if _, err := e.writer.GetSecret(ctx, "bench0", "", nil); err != nil { // token acquired here
			b.Fatal(err)
		}
		var d []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := e.writer.GetSecret(ctx, "bench0", "", (*azsecrets.GetSecretOptions)(nil)); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
		}
		p50, p99 := quantiles(d)
		base = p50
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	})
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("mount-%d-objects", n), func(b *testing.B) {
			attrs := e.attrs(b, "default", "default", map[string]string{"useVMManagedIdentity": "true", "userAssignedIdentityID": id, "objects": objects(names[:n]...)})
			var d []time.Duration
			for b.Loop() {
				t0 := time.Now()
				resp, err := e.mount(b, attrs)
				if err != nil || len(resp.Files) != n {
					b.Fatalf("mount: %v", err)
				}
				d = append(d, time.Since(t0))
			}
			p50, p99 := quantiles(d)
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			if base > 0 {
				b.ReportMetric(float64(p50)/float64(base), "p50/baseline")
			}
		})
	}
}
