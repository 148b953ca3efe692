package claimsexpr

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		expr    string
		version int
		err     string // "" for valid
	}{
		{"claims['sub'] matches 'system:serviceaccount:shop:*'", 1, ""},
		{"claims['sub'] eq 'system:serviceaccount:shop:web'", 1, ""},
		{"claims['sub'] matches 'system:serviceaccount:shop:*' and claims['sub'] matches '*:web'", 1, ""},
		{"claims['sub'] matches 'a'", 2, "languageVersion 2"},
		{"", 1, "empty"},
		{strings.Repeat("x", MaxLen+1), 1, "longer than"},
		{"claims['sub']  matches 'a'", 1, "want an operator"},
		{"claims['sub'] matches  'a'", 1, "single-quoted"},
		{"claims[\"sub\"] matches 'a'", 1, "single-quoted"},
		{"claims['sub'] contains 'a'", 1, "want an operator"},
		{"claims['sub'] ne 'a'", 1, "want an operator"},
		{"claims['sub'] matches 'a' or claims['sub'] eq 'b'", 1, `" and "`},
		{"claims['sub'] matches 'a' AND claims['sub'] eq 'b'", 1, `" and "`},
		{"(claims['sub'] matches 'a')", 1, "claim lookup"},
		{"claims['sub'] matches 'a' ", 1, `" and "`},
		{" claims['sub'] matches 'a'", 1, "claim lookup"},
		{"claims['sub'] matches 'a", 1, "unterminated"},
		{"claims['sub'] matches ''", 1, "empty comparand"},
		{"claims['sub'] matches 'a\nb'", 1, "control character"},
		{"claims['job_workflow_ref'] matches 'a'", 1, "not supported"},
		{"claims['sub' ] matches 'a'", 1, "want ]"},
		{"claims['sub'] matches 'a' and", 1, `" and "`},
		{"claims['sub'] matches 'it''s'", 1, `" and "`},
	} {
		_, err := Parse(tt.expr, tt.version)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.expr, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want one with %q", tt.expr, err, tt.err)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tt := range []struct {
		expr, sub string
		want      bool
	}{
		{"claims['sub'] matches 'system:serviceaccount:shop:*'", "system:serviceaccount:shop:web", true},
		{"claims['sub'] matches 'system:serviceaccount:shop:*'", "system:serviceaccount:shop:", true},
		// A namespace pattern does not reach a namespace sharing its prefix.
		{"claims['sub'] matches 'system:serviceaccount:shop:*'", "system:serviceaccount:shop-evil:web", false},
		{"claims['sub'] matches 'system:serviceaccount:shop:*'", "system:serviceaccount:sho:web", false},
		{"claims['sub'] matches 'system:serviceaccount:shop:*'", "System:serviceaccount:shop:web", false},
		{"claims['sub'] matches 'system:serviceaccount:shop:web-?'", "system:serviceaccount:shop:web-1", true},
		{"claims['sub'] matches 'system:serviceaccount:shop:web-?'", "system:serviceaccount:shop:web-12", false},
		{"claims['sub'] matches 'system:serviceaccount:*:web'", "system:serviceaccount:a:b:web", true},
		{"claims['sub'] matches '*a*b*c'", "xxaxxbxxcxxc", true},
		{"claims['sub'] matches '*a*b*c'", "xxaxxcxxb", false},
		{"claims['sub'] eq 'system:serviceaccount:shop:*'", "system:serviceaccount:shop:web", false},
		{"claims['sub'] eq 'system:serviceaccount:shop:*'", "system:serviceaccount:shop:*", true},
		{"claims['sub'] matches 'system:serviceaccount:shop:*' and claims['sub'] matches '*:web'", "system:serviceaccount:shop:web", true},
		{"claims['sub'] matches 'system:serviceaccount:shop:*' and claims['sub'] matches '*:web'", "system:serviceaccount:shop:api", false},
	} {
		e, err := Parse(tt.expr, LanguageVersion)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Match(map[string]string{"sub": tt.sub}); got != tt.want {
			t.Errorf("%s on %q = %v, want %v", tt.expr, tt.sub, got, tt.want)
		}
		if e.Match(map[string]string{}) {
			t.Errorf("%s matched without a sub claim", tt.expr)
		}
		if e.String() != tt.expr {
			t.Errorf("String() = %q, want %q", e.String(), tt.expr)
		}
	}
}

// A pathological pattern is linear, not exponential.
func TestMatchLinear(t *testing.T) {
	e, err := Parse("claims['sub'] matches '"+strings.Repeat("*a", 100)+"b'", LanguageVersion)
	if err != nil {
		t.Fatal(err)
	}
	if e.Match(map[string]string{"sub": strings.Repeat("a", 10000)}) {
		t.Error("matched")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("claims['sub'] matches 'system:serviceaccount:shop:*'", "system:serviceaccount:shop:web")
	f.Add("claims['sub'] eq 'x' and claims['sub'] matches '?'", "x")
	f.Fuzz(func(t *testing.T, expr, sub string) {
		e, err := Parse(expr, LanguageVersion)
		if err != nil {
			return
		}
		// Canonical form round-trips.
		e2, err := Parse(e.String(), LanguageVersion)
		if err != nil || e2.String() != e.String() {
			t.Fatalf("%q: canonical form %q does not round-trip: %v", expr, e.String(), err)
		}
		_ = e.Match(map[string]string{"sub": sub})
	})
}
