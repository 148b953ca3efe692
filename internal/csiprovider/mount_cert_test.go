package csiprovider

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
)

func selfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
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
	return c
}

// importer imports certificates with the unmodified azcertificates client,
// as a Key Vault Certificates Officer.
func (e *env) importer(t testing.TB) *azcertificates.Client {
	t.Helper()
	app, _, err := e.srv.PutApplication(t.Context(), e.srv.TenantID, sts.Application{DisplayName: "cert-importer"})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := e.srv.GenerateSecret(t.Context(), app.ClientID, "test", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	e.assign(t, app.ObjectID, keyvault.RoleCertsOfficer)
	cred, err := azidentity.NewClientSecretCredential(e.srv.TenantID, app.ClientID, secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: e.srv.URL + "/"}, Transport: e.srv.Client()}, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azcertificates.NewClient("https://"+e.vault+"."+e.srv.VaultDNSSuffix()+"/", cred, &azcertificates.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func obj(name, typ string, kv ...string) string {
	s := "  - |\n    objectName: " + name + "\n    objectType: " + typ + "\n"
	for i := 0; i+1 < len(kv); i += 2 {
		s += "    " + kv[i] + ": " + kv[i+1] + "\n"
	}
	return s
}

// TestMountCertificatesAndKeys: objectType cert (the certificate, PEM),
// key (the public key, PEM) and secret of a certificate (its key and
// certificate as PEM, or the PKCS#12 file with objectFormat pfx), as the
// Azure provider writes them; a version history of a certificate; and the
// refusals by role and name.
func TestMountCertificatesAndKeys(t *testing.T) {
	e := newEnv(t)
	imp := e.importer(t)
	ctx := t.Context()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tlsOld := selfSigned(t, rsaKey, "old.podid.test")
	tlsCert := selfSigned(t, rsaKey, "web.podid.test")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pemOf := func(c *x509.Certificate) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	r1, err := imp.ImportCertificate(ctx, "tls", azcertificates.ImportCertificateParameters{Base64EncodedCertificate: to.Ptr(pemOf(tlsOld))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := imp.ImportCertificate(ctx, "tls", azcertificates.ImportCertificateParameters{Base64EncodedCertificate: to.Ptr(pemOf(tlsCert))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCert := selfSigned(t, ecKey, "ec.podid.test")
	pfx, err := pkcs12.Modern.Encode(ecKey, ecCert, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imp.ImportCertificate(ctx, "ec", azcertificates.ImportCertificateParameters{
		Base64EncodedCertificate: to.Ptr(base64.StdEncoding.EncodeToString(pfx)), Password: to.Ptr("s3cret")}, nil); err != nil {
		t.Fatal(err)
	}

	id := e.identity(t, "certs", "default/web", keyvault.RoleCertUser)
	objs := "array:\n" + obj("tls", "cert", "objectAlias", "tls.crt") + obj("tls", "key", "objectAlias", "tls.pub") +
		obj("tls", "secret", "objectAlias", "tls.pem") + obj("ec", "secret", "objectAlias", "ec.pem") +
		obj("ec", "secret", "objectAlias", "ec.pfx", "objectFormat", "pfx", "objectEncoding", "base64") +
		obj("ec", "key", "objectAlias", "ec.pub") + obj("tls", "cert", "objectAlias", "hist", "objectVersionHistory", "2")
	resp, err := e.mount(t, e.attrs(t, "default", "web", map[string]string{"clientID": id, "objects": objs}))
	if err != nil {
		t.Fatal(err)
	}
	dir := write(t, resp)
	read := func(f string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// cert: exactly the certificate, one PEM block.
	if b, rest := pem.Decode(read("tls.crt")); b == nil || b.Type != "CERTIFICATE" || string(b.Bytes) != string(tlsCert.Raw) || len(rest) != 0 {
		t.Errorf("tls.crt is not the certificate alone: %q", read("tls.crt"))
	}
	// key: the public key, PKIX.
	for f, want := range map[string]crypto.PublicKey{"tls.pub": rsaKey.Public(), "ec.pub": ecKey.Public()} {
		b, _ := pem.Decode(read(f))
		if b == nil || b.Type != "PUBLIC KEY" {
			t.Fatalf("%s: %q", f, read(f))
		}
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil || !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
			t.Errorf("%s is not the certificate's public key: %v", f, err)
		}
	}
	// secret of a certificate: key and certificate as PEM, usable as is.
	for f, c := range map[string]*x509.Certificate{"tls.pem": tlsCert, "ec.pem": ecCert} {
		b := read(f)
		if !strings.HasPrefix(string(b), "-----BEGIN PRIVATE KEY-----") {
			t.Errorf("%s does not start with the PKCS#8 private key", f)
		}
		pair, err := tls.X509KeyPair(b, b)
		if err != nil || string(pair.Certificate[0]) != string(c.Raw) {
			t.Errorf("%s is not a key pair of the certificate: %v", f, err)
		}
	}
	// objectFormat pfx, base64-decoded: the PKCS#12 file, no password.
	if k, c, err := pkcs12.Decode(read("ec.pfx"), ""); err != nil || string(c.Raw) != string(ecCert.Raw) || !k.(*ecdsa.PrivateKey).Equal(ecKey) {
		t.Errorf("ec.pfx: %v", err)
	}
	// History: newest first.
	for f, c := range map[string]*x509.Certificate{"hist/0": tlsCert, "hist/1": tlsOld} {
		if b, _ := pem.Decode(read(f)); b == nil || string(b.Bytes) != string(c.Raw) {
			t.Errorf("%s is not %s", f, c.Subject)
		}
	}
	ids := map[string]string{}
	for _, ov := range resp.ObjectVersion {
		ids[ov.Id] = ov.Version
	}
	if ids["cert/tls"] != r2.ID.Version() || ids["key/tls"] != r2.ID.Version() || ids["secret/tls"] != r2.ID.Version() ||
		ids["cert/tls/0"] != r2.ID.Version() || ids["cert/tls/1"] != r1.ID.Version() {
		t.Errorf("object versions %v", ids)
	}

	// Refusals: a Secrets User may read the certificate's secret but not
	// the certificate or key; unknown names carry Key Vault's codes.
	su := e.identity(t, "secrets-only", "default/web", keyvault.RoleSecretsUser)
	if _, err := e.mount(t, e.attrs(t, "default", "web", map[string]string{"clientID": su, "objects": "array:\n" + obj("tls", "secret")})); err != nil {
		t.Errorf("Secrets User reads the certificate's secret: %v", err)
	}
	for _, tt := range []struct {
		id, objs string
		code     codes.Code
		contains []string
	}{
		{su, obj("tls", "cert"), codes.PermissionDenied, []string{"objectType:cert, objectName:tls", "403 Forbidden"}},
		{su, obj("tls", "key"), codes.PermissionDenied, []string{"objectType:key, objectName:tls", "403 Forbidden"}},
		{id, obj("missing", "key"), codes.NotFound, []string{"objectType:key, objectName:missing", "KeyNotFound"}},
		{id, obj("missing", "cert"), codes.NotFound, []string{"objectType:cert, objectName:missing", "CertificateNotFound"}},
	} {
		_, err := e.mount(t, e.attrs(t, "default", "web", map[string]string{"clientID": tt.id, "objects": "array:\n" + tt.objs}))
		st := status.Convert(err)
		if err == nil || st.Code() != tt.code {
			t.Errorf("%q: %v, want %v", tt.objs, err, tt.code)
			continue
		}
		for _, c := range tt.contains {
			if !strings.Contains(st.Message(), c) {
				t.Errorf("%q: %q lacks %q", tt.objs, st.Message(), c)
			}
		}
	}
}

func TestPublicKeyPEMRefuses(t *testing.T) {
	kty := func(k azkeys.KeyType) *azkeys.KeyType { return &k }
	crv := func(c azkeys.CurveName) *azkeys.CurveName { return &c }
	for name, k := range map[string]*azkeys.JSONWebKey{
		"no type":           {},
		"oct":               {Kty: kty(azkeys.KeyTypeOct)},
		"RSA without N":     {Kty: kty(azkeys.KeyTypeRSA), E: []byte{1, 0, 1}},
		"RSA huge exponent": {Kty: kty(azkeys.KeyTypeRSA), N: []byte{1}, E: make([]byte, 9)},
		"EC without curve":  {Kty: kty(azkeys.KeyTypeEC), X: []byte{1}, Y: []byte{1}},
		"EC P-256K":         {Kty: kty(azkeys.KeyTypeEC), Crv: crv(azkeys.CurveNameP256K), X: []byte{1}, Y: []byte{1}},
		"EC off the curve":  {Kty: kty(azkeys.KeyTypeEC), Crv: crv(azkeys.CurveNameP256), X: []byte{1}, Y: []byte{2}},
	} {
		if _, err := publicKeyPEM(k); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A grant for a whole namespace: one flexible federated credential
// (claims['sub'] matches 'system:serviceaccount:shop:*') lets every
// ServiceAccount of shop mount with seed 003's useVMManagedIdentity, and
// no ServiceAccount of another namespace, even one sharing the prefix.
func TestMountNamespaceGrant(t *testing.T) {
	e := newEnv(t)
	id := e.identity(t, "shop-secrets", "", keyvault.RoleSecretsUser)
	if _, err := e.srv.PutFederatedCredential(t.Context(), id, store.FederatedCredential{Name: "ns-shop", Issuer: e.is.URL,
		ClaimsMatchingExpression: &store.ClaimsMatchingExpression{Value: "claims['sub'] matches 'system:serviceaccount:shop:*'", LanguageVersion: 1}}); err != nil {
		t.Fatal(err)
	}
	e.set(t, "demosecret", "demovalue")
	for _, sa := range []string{"web", "worker", "default"} {
		resp, err := e.mount(t, e.attrs(t, "shop", sa, seed003(id)))
		if err != nil || string(resp.Files[0].Contents) != "demovalue" {
			t.Errorf("shop/%s: %v", sa, err)
		}
	}
	for _, ns := range []string{"shop-evil", "default"} {
		_, err := e.mount(t, e.attrs(t, ns, "web", seed003(id)))
		if st := status.Convert(err); err == nil || st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "NoSecretMountGrant") ||
			!strings.Contains(st.Message(), "--namespace "+ns) {
			t.Errorf("%s/web: %v, want NoSecretMountGrant naming --namespace %s", ns, err, ns)
		}
	}
}
