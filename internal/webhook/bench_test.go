package webhook

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkServeHTTP is the handler alone (decode, cache lookup, mutate,
// encode); bench/webhook measures HTTPS round trips.
func BenchmarkServeHTTP(b *testing.B) {
	for _, bc := range []struct{ name, ns string }{{"mutated", "ns"}, {"missing-sa", "other"}} {
		b.Run(bc.name, func(b *testing.B) {
			h, _ := newTestHandler(b, MissingServiceAccountDeny)
			body := []byte(reviewJSON("1", "Pod", "pods", "CREATE", bc.ns, selectedPod))
			w := &discardWriter{h: http.Header{}}
			rd := bytes.NewReader(body)
			req := httptest.NewRequest(http.MethodPost, Path, rd)
			req.Header.Set("Content-Type", "application/json")
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				rd.Reset(body)
				req.Body = io.NopCloser(rd)
				h.ServeHTTP(w, req)
			}
		})
	}
}
