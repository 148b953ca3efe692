package demoresult

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLineRoundTrip(t *testing.T) {
	r := Result{Program: "miclient", Aud: "https://storage.azure.com", Tid: "t", Oid: "o",
		Exp: time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC), TokenAt: time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC), Resource: "sent and received 1 message"}
	log := "miclient: GetToken failed after 3ms: connection refused\n" + r.Line() + "\nmiclient: later\n"
	got, err := Find([]byte(log))
	if err != nil {
		t.Fatal(err)
	}
	if got.Program != r.Program || got.Aud != r.Aud || !got.Exp.Equal(r.Exp) || got.Resource != r.Resource {
		t.Fatalf("got %+v, want %+v", got, r)
	}
}

// A pod whose secret is mounted gets no token itself: its line has none.
func TestFindMounted(t *testing.T) {
	r := Result{Program: "wiclient", Resource: `demosecret and $demosecret = "demovalue" (demo data)`}
	got, err := Find([]byte(r.Line() + "\n"))
	if err != nil || got.Resource != r.Resource || !got.TokenAt.IsZero() {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestFindRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, log string
		want      string
	}{
		{"none", "miclient: GetToken failed\n", "no result line"},
		{"not json", Prefix + "{nope\n", "result line"},
		{"unknown field", Prefix + `{"program":"x","tokenAt":"2026-12-07T18:00:00Z","token":"eyJ"}` + "\n", "unknown field"},
		{"no program", Prefix + `{"tokenAt":"2026-12-07T18:00:00Z"}` + "\n", "without program"},
		{"no token, no resource", Prefix + `{"program":"x"}` + "\n", "without tokenAt and resource"},
		{"too long", Prefix + `{"program":"` + strings.Repeat("x", 5000) + `"}` + "\n", "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Find([]byte(tc.log))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
			if tc.name == "none" && !errors.Is(err, ErrNoResult) {
				t.Fatalf("err = %v, want ErrNoResult", err)
			}
		})
	}
}
