package agent

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podid/podid/internal/token"
)

// countingDecider answers from a mutable table and counts its calls.
type countingDecider struct {
	calls  int
	ids    []token.Identity
	denial error
}

func (d *countingDecider) Identities(context.Context, *corev1.Pod) ([]token.Identity, error) {
	d.calls++
	return d.ids, d.denial
}

func TestMemoDecider(t *testing.T) {
	pod := func(rv string) *corev1.Pod {
		p := testPod("a", "10.1.0.5", "uid-a")
		p.ResourceVersion = rv
		return p
	}
	type step struct {
		do        func(m *MemoDecider, d *countingDecider) *corev1.Pod
		wantCalls int // underlying calls so far
		wantID    string
	}
	same := func(*MemoDecider, *countingDecider) *corev1.Pod { return pod("1") }
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"remembered while nothing changes", []step{{same, 1, "x"}, {same, 1, "x"}, {same, 1, "x"}}},
		{"pod changed", []step{{same, 1, "x"}, {func(_ *MemoDecider, d *countingDecider) *corev1.Pod {
			d.ids = []token.Identity{{ClientID: "y"}}
			return pod("2")
		}, 2, "y"}}},
		{"binding, identity, exception or service account changed", []step{{same, 1, "x"}, {func(m *MemoDecider, d *countingDecider) *corev1.Pod {
			d.ids = []token.Identity{{ClientID: "y"}}
			m.Invalidate()
			return pod("1")
		}, 2, "y"}, {same, 2, "y"}}},
		{"pod gone", []step{{same, 1, "x"}, {func(m *MemoDecider, _ *countingDecider) *corev1.Pod { m.Forget("uid-a"); return pod("1") }, 2, "x"}}},
		{"pod not from the API server", []step{
			{func(*MemoDecider, *countingDecider) *corev1.Pod { return pod("") }, 1, "x"},
			{func(*MemoDecider, *countingDecider) *corev1.Pod { return pod("") }, 2, "x"}}},
		{"a failed read is not remembered", []step{
			{func(_ *MemoDecider, d *countingDecider) *corev1.Pod {
				d.ids, d.denial = nil, &Denial{Reason: DenyKubernetes}
				return pod("1")
			}, 1, ""},
			{func(_ *MemoDecider, d *countingDecider) *corev1.Pod {
				d.ids, d.denial = []token.Identity{{ClientID: "x"}}, nil
				return pod("1")
			}, 2, "x"},
			{same, 2, "x"}}},
		{"a denial is remembered", []step{
			{func(_ *MemoDecider, d *countingDecider) *corev1.Pod {
				d.ids, d.denial = nil, &Denial{Reason: DenyNoIdentity}
				return pod("1")
			}, 1, ""},
			{same, 1, ""}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &countingDecider{ids: []token.Identity{{ClientID: "x"}}}
			m := &MemoDecider{Decider: d}
			for i, s := range tt.steps {
				ids, _ := m.Identities(context.Background(), s.do(m, d))
				got := ""
				if len(ids) > 0 {
					got = ids[0].ClientID
				}
				if d.calls != s.wantCalls || got != s.wantID {
					t.Fatalf("step %d: %d calls, identity %q; want %d calls, identity %q", i, d.calls, got, s.wantCalls, s.wantID)
				}
			}
		})
	}
}
