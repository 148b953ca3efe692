package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/podid/podid/internal/sts/ststest"
)

// TestKeyVaultCertificatesCLI: podid keyvault certificate import (PEM and
// PKCS#12 files) | show | list | delete, and key show | list, against a
// real sts with the unmodified azcertificates and azkeys clients.
func TestKeyVaultCertificatesCLI(t *testing.T) {
	c := newCLI(t, "", nil)
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(c.ok("keyvault", "create", "kv-certs", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	admin, err := c.sts.Principal(ststest.AdminClientID)
	if err != nil {
		t.Fatal(err)
	}
	c.ok("role-assignment", "create", "--assignee-object-id", admin.ObjectID, "--role", "Key Vault Certificates Officer", "--scope", v.ID)
	// Certificates Officer has no keys/read (as in Azure); Reader reads keys' metadata.
	c.ok("role-assignment", "create", "--assignee-object-id", admin.ObjectID, "--role", "Key Vault Reader", "--scope", v.ID)

	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "web.podid.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, rk.Public(), rk)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(rk)
	pemFile := ststest.WriteFile(t, "web.pem", append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...))
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl.Subject.CommonName = "ec.podid.test"
	eder, err := x509.CreateCertificate(rand.Reader, tpl, tpl, ek.Public(), ek)
	if err != nil {
		t.Fatal(err)
	}
	ecert, _ := x509.ParseCertificate(eder)
	pfx, err := pkcs12.Modern.Encode(ek, ecert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	pfxFile := ststest.WriteFile(t, "ec.pfx", pfx)

	var imported struct {
		Name, Subject, Kid, Sid, Version string
	}
	if err := json.Unmarshal([]byte(c.ok("keyvault", "certificate", "import", "--vault-name", "kv-certs", "--name", "web", "--file", pemFile, "-o", "json")), &imported); err != nil {
		t.Fatal(err)
	}
	if imported.Subject != "CN=web.podid.test" || !strings.HasSuffix(imported.Kid, "/keys/web/"+imported.Version) || !strings.HasSuffix(imported.Sid, "/secrets/web/"+imported.Version) {
		t.Errorf("import: %+v", imported)
	}
	c.ok("keyvault", "certificate", "import", "--vault-name", "kv-certs", "--name", "ec", "--file", pfxFile, "--password", "pw")
	if out := c.ok("keyvault", "certificate", "show", "--vault-name", "kv-certs", "--name", "ec"); !strings.Contains(out, "CN=ec.podid.test") {
		t.Errorf("show: %s", out)
	}
	var list []struct{ Name string }
	if err := json.Unmarshal([]byte(c.ok("keyvault", "certificate", "list", "--vault-name", "kv-certs", "-o", "json")), &list); err != nil || len(list) != 2 {
		t.Errorf("list: %+v %v", list, err)
	}
	var key struct {
		Kty, Crv string
		Managed  bool
	}
	if err := json.Unmarshal([]byte(c.ok("keyvault", "key", "show", "--vault-name", "kv-certs", "--name", "ec", "-o", "json")), &key); err != nil || key.Kty != "EC" || key.Crv != "P-256" || !key.Managed {
		t.Errorf("key show: %+v %v", key, err)
	}
	if out := c.ok("keyvault", "key", "list", "--vault-name", "kv-certs"); !strings.Contains(out, "web") || !strings.Contains(out, "ec") {
		t.Errorf("key list: %s", out)
	}
	if out := c.ok("keyvault", "certificate", "delete", "--vault-name", "kv-certs", "--name", "web"); !strings.Contains(out, "certificate web deleted (recoverable until") {
		t.Errorf("delete: %s", out)
	}

	// Refusals, each one line on stderr and a non-zero exit.
	garbage := ststest.WriteFile(t, "garbage", []byte("not a certificate"))
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"keyvault", "certificate", "show", "--vault-name", "kv-certs", "--name", "web"}, "certificate web in vault kv-certs not found"},
		{[]string{"keyvault", "certificate", "import", "--vault-name", "kv-certs", "--name", "x"}, "--file is required"},
		{[]string{"keyvault", "certificate", "import", "--vault-name", "kv-certs", "--name", "x", "--file", garbage}, "BadParameter"},
		{[]string{"keyvault", "certificate", "import", "--vault-name", "kv-certs", "--name", "x", "--file", pfxFile, "--password", "wrong"}, "PKCS#12"},
		{[]string{"keyvault", "certificate", "show", "--vault-name", "kv-certs", "--name", "bad_name"}, "name"},
	} {
		r := c.podid(tt.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want one line with %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}
