package sts

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"sync"
	"testing"
)

func FuzzParseForm(f *testing.F) {
	for _, seed := range []string{
		"grant_type=client_credentials&client_id=abc&scope=https%3A%2F%2Fstorage.azure.com%2F.default&client_secret=s",
		"a=1&a=2",
		"a=1;b=2",
		"%zz=1",
		"",
		"client_assertion=eyJ.eyJ.sig&client_assertion_type=urn%3Aietf",
		strings.Repeat("k=v&", 100),
	} {
		f.Add("application/x-www-form-urlencoded", []byte(seed))
	}
	f.Add("application/x-www-form-urlencoded; charset=utf-8", []byte("a=b"))
	f.Add("text/plain", []byte("a=b"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		form, err := parseForm(ct, body)
		if err != nil {
			return
		}
		if len(form) > maxFormFields {
			t.Fatalf("%d fields accepted", len(form))
		}
	})
}

var testKey = sync.OnceValue(func() *rsa.PublicKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return &k.PublicKey
})

func FuzzParseAssertion(f *testing.F) {
	for _, seed := range []string{
		"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2kiLCJzdWIiOiJzIiwiYXVkIjpbImEiXSwiZXhwIjoxfQ.c2ln",
		"eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
		"eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJhIn0.c2ln",
		"a.b.c", "..", "", "x", "eyJ9.eyJ9.eyJ9",
		"eyJhbGciOiJSUzI1NiJ9.eyJleHAiOiIxIn0.c2ln",
		"eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjEuNWUzMDB9.c2ln",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		a, err := parseAssertion(raw)
		if err != nil {
			if a != nil {
				t.Fatal("assertion returned with error")
			}
			return
		}
		if len(raw) > MaxAssertionBytes || a.header.Alg == "" {
			t.Fatalf("accepted invalid assertion %q", raw)
		}
		// Verification must never panic on anything the parser accepts.
		_ = a.verify(a.header.Alg, nil)
		_ = a.verify("RS256", testKey())
	})
}
