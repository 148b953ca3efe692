package sts

import (
	"encoding/base64"
	"errors"
	"testing"
)

func TestParseAssertionStrict(t *testing.T) {
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	claims := seg(`{"iss":"https://i","sub":"s","aud":"a","exp":1}`)
	sig := seg("signature")
	for _, tt := range []struct {
		name string
		raw  string
		want error // nil: accepted
	}{
		{"RS256", seg(`{"alg":"RS256","kid":"k"}`) + "." + claims + "." + sig, nil},
		{"PS256 with x5t#S256", seg(`{"alg":"PS256","x5t#S256":"abc"}`) + "." + claims + "." + sig, nil},
		{"empty signature", seg(`{"alg":"RS256"}`) + "." + claims + ".", errMalformedAssertion},
		{"alg none", seg(`{"alg":"none"}`) + "." + claims + "." + sig, errAssertionAlg},
		{"HS256", seg(`{"alg":"HS256"}`) + "." + claims + "." + sig, errAssertionAlg},
		{"ES256", seg(`{"alg":"ES256"}`) + "." + claims + "." + sig, errAssertionAlg},
		{"no alg", seg(`{"kid":"k"}`) + "." + claims + "." + sig, errMalformedAssertion},
		{"crit", seg(`{"alg":"RS256","crit":["exp"],"exp":1}`) + "." + claims + "." + sig, errMalformedAssertion},
		{"b64", seg(`{"alg":"RS256","b64":false,"crit":["b64"]}`) + "." + claims + "." + sig, errMalformedAssertion},
		{"x5t not a string", seg(`{"alg":"RS256","x5t":7}`) + "." + claims + "." + sig, errMalformedAssertion},
		{"kid not a string", seg(`{"alg":"RS256","kid":7}`) + "." + claims + "." + sig, errMalformedAssertion},
		{"claims not an object", seg(`{"alg":"RS256"}`) + "." + seg(`["a"]`) + "." + sig, errMalformedAssertion},
		{"aud a number", seg(`{"alg":"RS256"}`) + "." + seg(`{"aud":1}`) + "." + sig, errMalformedAssertion},
		{"four parts", seg(`{"alg":"RS256"}`) + "." + claims + "." + sig + ".x", errMalformedAssertion},
		{"JSON serialization", `{"payload":"` + claims + `","signatures":[]}`, errMalformedAssertion},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := parseAssertion(tt.raw)
			if tt.want == nil {
				if err != nil || a.claims.Iss != "https://i" {
					t.Fatalf("err = %v, claims = %+v", err, a)
				}
				return
			}
			if !errors.Is(err, tt.want) || a != nil {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
