package controller

import (
	"testing"
	"time"
)

func TestExpectations(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name     string
		steps    func(e *expectations)
		at       time.Duration
		wantWait bool
		wantLeft time.Duration
	}{
		{"unknown key", func(*expectations) {}, 0, false, 0},
		{"just created", func(e *expectations) { e.add("ns/a", t0) }, time.Second, true, expectationTTL - time.Second},
		{"observed", func(e *expectations) { e.add("ns/a", t0); e.observed("ns/a") }, time.Second, false, 0},
		{"expired", func(e *expectations) { e.add("ns/a", t0) }, expectationTTL, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e expectations // zero value usable
			tt.steps(&e)
			wait, left := e.pending("ns/a", t0.Add(tt.at))
			if wait != tt.wantWait || left != tt.wantLeft {
				t.Fatalf("pending = %v, %v; want %v, %v", wait, left, tt.wantWait, tt.wantLeft)
			}
			if tt.name == "expired" && len(e.m) != 0 {
				t.Fatal("expired entry not dropped")
			}
		})
	}
}
