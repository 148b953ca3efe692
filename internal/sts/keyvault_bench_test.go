package sts_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/ststest"
)

// BenchmarkKeyVaultGetSecret measures the vault's GET of a secret value in
// process (handler only: token verification, RBAC, one store read), next
// to the raw RS256 verification rate of the same machine in the same run,
// the floor of any request that checks a token. Run:
//
//	go test ./internal/sts -run '^$' -bench BenchmarkKeyVaultGetSecret -benchtime 3s
func BenchmarkKeyVaultGetSecret(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte(strings.Repeat("x", 600)))
	sig, _ := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	var rawRate float64
	b.Run("raw-rs256-verify", func(b *testing.B) {
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
					b.Error(err)
					return
				}
			}
		})
		rawRate = float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(rawRate, "verifies/s")
	})
	b.Run("get-secret-handler", func(b *testing.B) {
		e := startVault(b, ststest.Options{})
		p := e.principal(b, "bench")
		e.assign(b, p, keyvault.RoleSecretsOfficer, e.scope())
		if _, err := e.secrets(b, p).SetSecret(context.Background(), "s", azsecrets.SetSecretParameters{Value: to.Ptr("v")}, nil); err != nil {
			b.Fatal(err)
		}
		tk, err := p.cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
		if err != nil {
			b.Fatal(err)
		}
		h := e.srv.Handler()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req := httptest.NewRequest(http.MethodGet, "https://kv-test.vault.azure.net/secrets/s?api-version=7.6", nil)
				req.Header.Set("Authorization", "Bearer "+tk.Token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Errorf("status %d: %s", rec.Code, rec.Body)
					return
				}
			}
		})
		rate := float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(rate, "gets/s")
		if rawRate > 0 {
			b.ReportMetric(rate/rawRate, "x-raw-verify")
		}
	})
}
