package token

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/workloadidentity"
)

// issuerRequester mints service-account-like tokens from a test OIDC issuer,
// as the API server would for a pod.
type issuerRequester struct {
	t     *testing.T
	is    *ststest.Issuer
	calls int
}

func (r *issuerRequester) RequestToken(_ context.Context, p Pod, aud string, exp int64) (string, error) {
	r.calls++
	return r.is.Token(r.t, p.Subject(), aud, time.Now(), time.Duration(exp)*time.Second, map[string]any{
		"kubernetes.io": map[string]any{"namespace": p.Namespace, "pod": map[string]any{"name": p.Name, "uid": string(p.UID)}},
	}), nil
}

type mapSecrets map[types.NamespacedName]map[string][]byte

func (m mapSecrets) ReadSecret(_ context.Context, ref types.NamespacedName) (map[string][]byte, error) {
	if d, ok := m[ref]; ok {
		return d, nil
	}
	return nil, errors.New("not found")
}

func certAndKey(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "podid-test-sp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func TestProviderAgainstPodidSTS(t *testing.T) {
	is := ststest.NewIssuer(t)
	certPEM, keyPEM := certAndKey(t)
	const (
		secretApp = "11111111-1111-1111-1111-111111111111"
		certApp   = "22222222-2222-2222-2222-222222222222"
		secret    = "s3cr3t-value-never-logged-0123456789"
	)
	s := ststest.Start(t, ststest.Options{
		Bootstrap: &sts.Bootstrap{Tenants: []sts.BootstrapTenant{{ID: ststest.TenantID, Applications: []sts.BootstrapApplication{
			{ClientID: secretApp, DisplayName: "sp-secret", Secrets: []sts.BootstrapSecret{{Value: secret}}},
			{ClientID: certApp, DisplayName: "sp-cert", Certificates: []sts.BootstrapCertificate{{PEM: string(certPEM)}}},
		}}}},
		Configure: func(c *sts.Config) { c.ExternalTransport = is.Transport() },
	})
	pod := Pod{Namespace: "ns", Name: "p", UID: "uid-p", ServiceAccount: "app"}
	fed := s.AddIdentity(t, "fed", is.URL, pod.Subject())
	nofic := s.AddIdentity(t, "nofic", "", "")
	tr := &issuerRequester{t: t, is: is}
	ref := types.NamespacedName{Namespace: "ns", Name: "creds"}
	secrets := mapSecrets{ref: {SecretKeyClientSecret: []byte(secret), SecretKeyCertificate: append(certPEM, keyPEM...)}}
	p := NewProvider(ProviderConfig{Authority: s.URL, HTTPClient: s.Client(), TokenRequester: tr, Secrets: secrets})
	ctx := t.Context()
	resource := "https://vault.azure.net"

	for _, tt := range []struct {
		name string
		id   Identity
	}{
		{"federated", Identity{Kind: Federated, ClientID: fed, TenantID: s.TenantID, Origin: "test"}},
		{"secret", Identity{Kind: Secret, ClientID: secretApp, TenantID: s.TenantID, SecretRef: ref, Origin: "test"}},
		{"certificate", Identity{Kind: Certificate, ClientID: certApp, TenantID: s.TenantID, SecretRef: ref, Origin: "test"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := p.Token(ctx, Request{Identity: tt.id, Resource: resource, Pod: pod})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(tok.AccessToken, ".") != 2 || time.Until(tok.ExpiresOn) < 5*time.Minute || tok.ClientID != tt.id.ClientID {
				t.Fatalf("token %v", tok)
			}
		})
	}
	if tr.calls != 1 {
		t.Fatalf("TokenRequests = %d, want 1 (federated only)", tr.calls)
	}

	// No credential for this pod (none at all: AADSTS70021; one for another
	// subject: AADSTS700213) names the credential to add.
	otherfic := s.AddIdentity(t, "otherfic", is.URL, "system:serviceaccount:ns:someone-else")
	for _, cid := range []string{nofic, otherfic} {
		_, err := p.Token(ctx, Request{Identity: Identity{Kind: Federated, ClientID: cid, TenantID: s.TenantID, Origin: "AzureIdentity ns/x"}, Resource: resource, Pod: pod})
		var te *Error
		if !errors.As(err, &te) || te.Reason != ReasonMissingFederatedCredential {
			t.Fatalf("missing FIC for %s: %v", cid, err)
		}
		for _, want := range []string{is.URL, "system:serviceaccount:ns:app", workloadidentity.TokenAudience, cid} {
			if !strings.Contains(te.Msg, want) {
				t.Fatalf("message %q lacks %q", te.Msg, want)
			}
		}
	}

	// A wrong secret is refused; neither secret appears in the error.
	bad := mapSecrets{ref: {SecretKeyClientSecret: []byte("wrong-secret-value-0123456789")}}
	p2 := NewProvider(ProviderConfig{Authority: s.URL, HTTPClient: s.Client(), Secrets: bad})
	_, err := p2.Token(ctx, Request{Identity: Identity{Kind: Secret, ClientID: secretApp, TenantID: s.TenantID, SecretRef: ref}, Resource: resource})
	if ReasonOf(err) != ReasonProviderRejected || strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), secret) {
		t.Fatalf("bad secret: %v", err)
	}
	// Secrets are not served unless enabled.
	p3 := NewProvider(ProviderConfig{Authority: s.URL, HTTPClient: s.Client()})
	if _, err := p3.Token(ctx, Request{Identity: Identity{Kind: Secret, ClientID: secretApp, TenantID: s.TenantID, SecretRef: ref}, Resource: resource}); ReasonOf(err) != ReasonSecretInvalid {
		t.Fatalf("secrets disabled: %v", err)
	}
	// A malformed certificate is reported without quoting it.
	junk := mapSecrets{ref: {SecretKeyCertificate: []byte("-----BEGIN CERTIFICATE-----\nnot-base64-key-material\n-----END CERTIFICATE-----\n")}}
	p4 := NewProvider(ProviderConfig{Authority: s.URL, HTTPClient: s.Client(), Secrets: junk})
	_, err = p4.Token(ctx, Request{Identity: Identity{Kind: Certificate, ClientID: certApp, TenantID: s.TenantID, SecretRef: ref}, Resource: resource})
	if ReasonOf(err) != ReasonSecretInvalid || strings.Contains(err.Error(), "not-base64-key-material") {
		t.Fatalf("junk certificate: %v", err)
	}
	// Provider unreachable.
	p5 := NewProvider(ProviderConfig{Authority: "https://127.0.0.1:1", HTTPClient: s.Client(), TokenRequester: tr})
	if _, err := p5.Token(ctx, Request{Identity: Identity{Kind: Federated, ClientID: fed, TenantID: s.TenantID}, Resource: resource, Pod: pod}); ReasonOf(err) != ReasonProviderUnavailable {
		t.Fatalf("unreachable: %v", err)
	}
}
