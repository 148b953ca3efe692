package sts_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/ststest"
)

// testCert is a self-signed certificate and its key.
type testCert struct {
	key  crypto.Signer
	cert *x509.Certificate
}

func newTestCert(t testing.TB, key crypto.Signer, cn string) testCert {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{key: key, cert: c}
}

func rsaKey(t testing.TB, bits int) crypto.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (c testCert) pem(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (c testCert) pfx(t testing.TB, pwd string) string {
	t.Helper()
	b, err := pkcs12.Modern.Encode(c.key, c.cert, nil, pwd)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (e *vaultEnv) certs(t testing.TB, p principal) *azcertificates.Client {
	t.Helper()
	c, err := azcertificates.NewClient(e.uri, p.cred, &azcertificates.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *vaultEnv) keys(t testing.TB, p principal) *azkeys.Client {
	t.Helper()
	c, err := azkeys.NewClient(e.uri, p.cred, &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func importParams(value, pwd, contentType string) azcertificates.ImportCertificateParameters {
	p := azcertificates.ImportCertificateParameters{Base64EncodedCertificate: to.Ptr(value)}
	if pwd != "" {
		p.Password = to.Ptr(pwd)
	}
	if contentType != "" {
		p.CertificatePolicy = &azcertificates.CertificatePolicy{SecretProperties: &azcertificates.SecretProperties{ContentType: to.Ptr(contentType)}}
	}
	return p
}

// TestKeyVaultCertificates: the unmodified azcertificates, azkeys and
// azsecrets clients against the sts: import (PEM and PKCS#12), get latest
// and by version, list, versions, the certificate's key and secret, RBAC
// per built-in role, bad input, delete, recover and purge.
func TestKeyVaultCertificates(t *testing.T) {
	e := startVault(t, ststest.Options{})
	ctx := context.Background()
	officer := e.principal(t, "certs-officer")
	e.assign(t, officer, keyvault.RoleCertsOfficer, e.scope())
	e.assign(t, officer, keyvault.RoleSecretsOfficer, e.scope())
	certUser := e.principal(t, "cert-user")
	e.assign(t, certUser, keyvault.RoleCertUser, e.scope())
	secretsUser := e.principal(t, "secrets-user")
	e.assign(t, secretsUser, keyvault.RoleSecretsUser, e.scope())
	reader := e.principal(t, "reader")
	e.assign(t, reader, keyvault.RoleReader, e.scope())
	nobody := e.principal(t, "nobody")

	certs := e.certs(t, officer)
	rsaCert := newTestCert(t, rsaKey(t, 2048), "rsa.podid.test")
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCert := newTestCert(t, ecKey, "ec.podid.test")

	// Import: PEM (RSA) and PKCS#12 with a password (EC).
	pemRes, err := certs.ImportCertificate(ctx, "web", importParams(rsaCert.pem(t), "", keyvault.ContentTypePEM), nil)
	if err != nil {
		t.Fatalf("import PEM: %v", err)
	}
	if string(pemRes.CER) != string(rsaCert.cert.Raw) || pemRes.KID == nil || pemRes.SID == nil || pemRes.ID == nil {
		t.Fatalf("import PEM answered %+v", pemRes.Certificate)
	}
	if sum := sha1.Sum(rsaCert.cert.Raw); string(pemRes.X509Thumbprint) != string(sum[:]) {
		t.Errorf("x5t %x, want %x", pemRes.X509Thumbprint, sum)
	}
	if pemRes.Policy == nil || pemRes.Policy.SecretProperties == nil || *pemRes.Policy.SecretProperties.ContentType != keyvault.ContentTypePEM {
		t.Errorf("policy %+v", pemRes.Policy)
	}
	v1 := pemRes.ID.Version()
	if _, err := certs.ImportCertificate(ctx, "ec", importParams(ecCert.pfx(t, "pw"), "pw", ""), nil); err != nil {
		t.Fatalf("import PKCS#12: %v", err)
	}
	// A second version of web.
	rsaCert2 := newTestCert(t, rsaKey(t, 2048), "rsa2.podid.test")
	res2, err := certs.ImportCertificate(ctx, "web", importParams(rsaCert2.pem(t), "", ""), nil)
	if err != nil {
		t.Fatalf("import version 2: %v", err)
	}
	v2 := res2.ID.Version()

	// Get: latest and by version, by a Certificate User.
	cu := e.certs(t, certUser)
	for _, c := range []struct {
		version string
		want    *x509.Certificate
	}{{"", rsaCert2.cert}, {v1, rsaCert.cert}, {v2, rsaCert2.cert}} {
		got, err := cu.GetCertificate(ctx, "web", c.version, nil)
		if err != nil {
			t.Fatalf("get web/%s: %v", c.version, err)
		}
		if string(got.CER) != string(c.want.Raw) {
			t.Errorf("get web/%s: another certificate", c.version)
		}
	}
	// List and versions.
	var names []string
	for pager := cu.NewListCertificatePropertiesPager(nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			names = append(names, p.ID.Name())
		}
	}
	if strings.Join(names, ",") != "ec,web" {
		t.Errorf("certificates %v, want ec,web", names)
	}
	n := 0
	for pager := cu.NewListCertificatePropertiesVersionsPager("web", nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if n != 2 {
		t.Errorf("web has %d versions, want 2", n)
	}

	// The key: the certificate's public key, by version too.
	keys := e.keys(t, certUser)
	k, err := keys.GetKey(ctx, "web", v1, nil)
	if err != nil {
		t.Fatalf("get key: %v", err)
	}
	pub := rsaCert.cert.PublicKey.(*rsa.PublicKey)
	if *k.Key.Kty != azkeys.KeyTypeRSA || new(big.Int).SetBytes(k.Key.N).Cmp(pub.N) != 0 || k.Key.KID.Version() != v1 || k.Managed == nil || !*k.Managed {
		t.Errorf("key web/%s = %+v", v1, k.Key)
	}
	ek, err := keys.GetKey(ctx, "ec", "", nil)
	if err != nil {
		t.Fatalf("get EC key: %v", err)
	}
	if *ek.Key.Kty != azkeys.KeyTypeEC || *ek.Key.Crv != azkeys.CurveNameP256 || !ecPoint(t, ecKey, ek.Key.X, ek.Key.Y) {
		t.Errorf("EC key = %+v", ek.Key)
	}

	// The secret: PEM with the private key; PKCS#12 without a password.
	sec := e.secrets(t, secretsUser)
	s, err := sec.GetSecret(ctx, "web", v1, nil)
	if err != nil {
		t.Fatalf("get the certificate's secret: %v", err)
	}
	if s.KID == nil || s.Managed == nil || !*s.Managed || *s.ContentType != keyvault.ContentTypePEM ||
		!strings.Contains(*s.Value, "PRIVATE KEY") || !strings.Contains(*s.Value, "CERTIFICATE") {
		t.Errorf("secret web/%s: kid %v managed %v contentType %v", v1, s.KID, s.Managed, s.ContentType)
	}
	ps, err := sec.GetSecret(ctx, "ec", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(*ps.Value)
	if _, leaf, err := pkcs12.Decode(raw, ""); err != nil || string(leaf.Raw) != string(ecCert.cert.Raw) || *ps.ContentType != keyvault.ContentTypePFX {
		t.Errorf("the PKCS#12 secret does not open without a password to the certificate: %v", err)
	}

	// RBAC per role.
	forbidden := func(what string, err error) {
		t.Helper()
		if st, code, inner := kvCode(err); st != http.StatusForbidden || code != "Forbidden" || inner != "ForbiddenByRbac" {
			t.Errorf("%s: %d %s/%s (%v), want 403 Forbidden/ForbiddenByRbac", what, st, code, inner, err)
		}
	}
	_, err = e.certs(t, secretsUser).GetCertificate(ctx, "web", "", nil)
	forbidden("Secrets User gets a certificate", err)
	_, err = e.keys(t, secretsUser).GetKey(ctx, "web", "", nil)
	forbidden("Secrets User gets a key", err)
	_, err = cu.ImportCertificate(ctx, "other", importParams(rsaCert.pem(t), "", ""), nil)
	forbidden("Certificate User imports", err)
	_, err = e.certs(t, nobody).GetCertificate(ctx, "web", "", nil)
	forbidden("no role gets a certificate", err)
	if _, err := e.certs(t, reader).GetCertificate(ctx, "web", "", nil); err != nil {
		t.Errorf("Reader reads a certificate: %v", err)
	}
	_, err = e.secrets(t, reader).GetSecret(ctx, "web", "", nil)
	forbidden("Reader gets the certificate's secret", err)

	// A certificate's secret is changed only through the certificate.
	officerSecrets := e.secrets(t, officer)
	if _, err := officerSecrets.SetSecret(ctx, "web", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err == nil {
		t.Error("set over a certificate's secret succeeded")
	} else if st, _, _ := kvCode(err); st != http.StatusForbidden {
		t.Errorf("set over a certificate's secret: %v", err)
	}
	if _, err := officerSecrets.DeleteSecret(ctx, "web", nil); err == nil {
		t.Error("delete of a certificate's secret succeeded")
	}
	if _, err := officerSecrets.SetSecret(ctx, "plain", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.ImportCertificate(ctx, "plain", importParams(rsaCert.pem(t), "", ""), nil); err == nil {
		t.Error("import over a secret's name succeeded")
	} else if st, code, _ := kvCode(err); st != http.StatusConflict || code != "Conflict" {
		t.Errorf("import over a secret: %d %s", st, code)
	}

	// Bad input: each a 400 BadParameter naming the problem.
	weak := newTestCert(t, rsaKey(t, 1024), "weak")
	keyOnly := rsaCert.pem(t)[strings.Index(rsaCert.pem(t), "-----BEGIN PRIVATE KEY"):]
	other := newTestCert(t, rsaKey(t, 2048), "other")
	for _, c := range []struct {
		name                 string
		value, pwd, ct, want string
	}{
		{"garbage", "not a certificate", "", "", "neither PEM nor"},
		{"wrong password", ecCert.pfx(t, "pw"), "nope", "", "PKCS#12"},
		{"pem declared pfx", rsaCert.pem(t), "", keyvault.ContentTypePFX, "contentType"},
		{"pfx declared pem", ecCert.pfx(t, ""), "", keyvault.ContentTypePEM, "contentType"},
		{"unknown content type", rsaCert.pem(t), "", "text/plain", "contentType"},
		{"no private key", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rsaCert.cert.Raw})), "", "", "no private key"},
		{"no certificate", keyOnly, "", "", "no certificate matches"},
		{"key of another certificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw})) + keyOnly, "", "", "no certificate matches"},
		{"RSA 1024", weak.pem(t), "", "", "2048"},
		{"other block", rsaCert.pem(t) + "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "", "", "PUBLIC KEY"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := certs.ImportCertificate(ctx, "bad", importParams(c.value, c.pwd, c.ct), nil)
			st, code, _ := kvCode(err)
			if st != http.StatusBadRequest || code != "BadParameter" || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %d %s (%v), want 400 BadParameter with %q", st, code, err, c.want)
			}
		})
	}

	// Not found, with Key Vault's codes.
	if _, err := cu.GetCertificate(ctx, "missing", "", nil); err != nil {
		if st, code, _ := kvCode(err); st != http.StatusNotFound || code != "CertificateNotFound" {
			t.Errorf("missing certificate: %d %s", st, code)
		}
	} else {
		t.Error("missing certificate found")
	}
	if _, err := keys.GetKey(ctx, "web", "0123456789abcdef0123456789abcdef", nil); err != nil {
		if st, code, _ := kvCode(err); st != http.StatusNotFound || code != "KeyNotFound" {
			t.Errorf("missing key version: %d %s", st, code)
		}
	} else {
		t.Error("missing key version found")
	}

	// Delete: certificate, key and secret go; recover brings them back;
	// purge removes them.
	del, err := certs.DeleteCertificate(ctx, "web", nil)
	if err != nil || del.RecoveryID == nil || del.DeletedDate == nil {
		t.Fatalf("delete: %v %+v", err, del)
	}
	if _, err := cu.GetCertificate(ctx, "web", "", nil); err == nil {
		t.Error("deleted certificate still served")
	}
	if _, err := keys.GetKey(ctx, "web", "", nil); err == nil {
		t.Error("deleted certificate's key still served")
	}
	if _, err := sec.GetSecret(ctx, "web", "", nil); err == nil {
		t.Error("deleted certificate's secret still served")
	}
	if _, err := certs.RecoverDeletedCertificate(ctx, "web", nil); err != nil {
		t.Fatalf("recover: %v", err)
	}
	if got, err := sec.GetSecret(ctx, "web", "", nil); err != nil || got.ID.Version() != v2 {
		t.Errorf("recovered secret: %v", err)
	}
	if _, err := certs.DeleteCertificate(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.PurgeDeletedCertificate(ctx, "web", nil); err != nil {
		t.Fatalf("purge: %v", err)
	}
	if _, err := certs.GetDeletedCertificate(ctx, "web", nil); err == nil {
		t.Error("purged certificate still listed as deleted")
	}
	// The name is free again.
	if _, err := certs.ImportCertificate(ctx, "web", importParams(rsaCert.pem(t), "", ""), nil); err != nil {
		t.Errorf("import after purge: %v", err)
	}
}

// ecPoint reports whether x, y are the coordinates of k's public key.
func ecPoint(t *testing.T, k *ecdsa.PrivateKey, x, y []byte) bool {
	t.Helper()
	p, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return string(p) == string(append(append([]byte{4}, x...), y...))
}
