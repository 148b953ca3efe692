package sts_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/sts/tokenverify"
)

const storage = "https://storage.azure.com"

// startWithIssuer starts an sts that trusts the given external issuer's CA.
func startWithIssuer(t *testing.T, is *ststest.Issuer, opts ststest.Options) *ststest.Server {
	t.Helper()
	prev := opts.Configure
	opts.Configure = func(c *sts.Config) {
		if is != nil {
			c.ExternalTrust = jwks.Trust{PerIssuer: map[string]*x509.CertPool{is.URL: is.CAPool()}}
		}
		if prev != nil {
			prev(c)
		}
	}
	return ststest.Start(t, opts)
}

// clientOptions point the SDK at the in-process sts by its loopback address.
// MSAL would validate such an authority with login.microsoftonline.com, which
// nothing answers here, so credentials also set DisableInstanceDiscovery;
// localcloud_test.go runs the SDK with default options by the public names.
func clientOptions(srv *ststest.Server) azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: srv.URL + "/"},
		Transport: srv.Client(),
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
}

// verify checks tok as a resource server for aud would, against the sts's
// JWKS over HTTPS.
func verify(t *testing.T, srv *ststest.Server, tok, aud string, now func() time.Time) *tokenverify.Claims {
	t.Helper()
	v, err := tokenverify.New(tokenverify.Config{
		JWKSURL:   srv.JWKSURL(),
		Keys:      jwks.New(jwks.Config{Trust: jwks.Trust{Global: srv.CAPool, NoSystemRoots: true}, Now: now}),
		Issuers:   []string{srv.V1Issuer(), srv.URL + "/" + srv.TenantID + "/v2.0"},
		Audiences: []string{aud},
		Now:       now,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return c
}

func getToken(t *testing.T, cred azcore.TokenCredential, scope string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tk, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if time.Until(tk.ExpiresOn) < 50*time.Minute {
		t.Errorf("ExpiresOn %v too soon", tk.ExpiresOn)
	}
	return tk.Token
}

func TestClientSecretCredential(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	cred, err := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	c := verify(t, srv, getToken(t, cred, storage+"/.default"), storage, nil)
	if c.Version != "1.0" || c.AppID != ststest.AdminClientID || c.TenantID != srv.TenantID || c.IDType != "app" {
		t.Errorf("claims = %+v", c)
	}
	if !c.IssuedAt.Equal(c.NotBefore) {
		t.Errorf("iat %v != nbf %v, want iat = nbf as in Entra", c.IssuedAt, c.NotBefore)
	}
	// Tenant by domain works too. ARM tokens carry no roles: ARM access is
	// Azure RBAC, decided by the sts at each call, not a claim.
	cred2, _ := azidentity.NewClientSecretCredential("podid.test", ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	c = verify(t, srv, getToken(t, cred2, sts.ARMResource+"/.default"), sts.ARMResource, nil)
	if len(c.Roles) != 0 {
		t.Errorf("roles = %v, want none", c.Roles)
	}
}

func selfSignedCert(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "app"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func TestClientCertificateCredential(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	ctx := context.Background()
	app, _, err := srv.PutApplication(ctx, srv.TenantID, sts.Application{DisplayName: "cert-app"})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := selfSignedCert(t)
	if _, err := srv.AddCertificate(ctx, app.ClientID, cert.Raw); err != nil {
		t.Fatal(err)
	}
	for _, sendX5C := range []bool{false, true} {
		cred, err := azidentity.NewClientCertificateCredential(srv.TenantID, app.ClientID, []*x509.Certificate{cert}, key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true, SendCertificateChain: sendX5C})
		if err != nil {
			t.Fatal(err)
		}
		c := verify(t, srv, getToken(t, cred, "https://vault.azure.net/.default"), "https://vault.azure.net", nil)
		if c.AppID != app.ClientID || c.ObjectID != app.ObjectID {
			t.Errorf("claims = %+v", c)
		}
	}
	// A certificate that is not registered is refused.
	other, otherKey := selfSignedCert(t)
	cred, _ := azidentity.NewClientCertificateCredential(srv.TenantID, app.ClientID, []*x509.Certificate{other}, otherKey,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	if _, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{storage + "/.default"}}); err == nil || !strings.Contains(err.Error(), "AADSTS700027") {
		t.Errorf("unregistered certificate: err = %v", err)
	}
}

func TestWorkloadIdentityCredential(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	const subject = "system:serviceaccount:default:workload"
	clientID := srv.AddIdentity(t, "workload", is.URL, subject)
	tokenFile := ststest.WriteFile(t, "token", []byte(is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)))
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: clientOptions(srv), ClientID: clientID, TenantID: srv.TenantID, TokenFilePath: tokenFile, DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := verify(t, srv, getToken(t, cred, storage+"/.default"), storage, nil)
	p, _ := srv.Principal(clientID)
	if c.AppID != clientID || c.ObjectID != p.ObjectID || c.Subject != p.ObjectID {
		t.Errorf("claims = %+v", c)
	}
	// Second identity, same issuer: JWKS comes from the cache.
	hits := is.Hits()
	clientID2 := srv.AddIdentity(t, "workload2", is.URL, subject+"2")
	tokenFile2 := ststest.WriteFile(t, "token2", []byte(is.Token(t, subject+"2", sts.DefaultFICAudience, time.Now(), time.Hour, nil)))
	cred2, _ := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: clientOptions(srv), ClientID: clientID2, TenantID: srv.TenantID, TokenFilePath: tokenFile2, DisableInstanceDiscovery: true,
	})
	verify(t, srv, getToken(t, cred2, storage+"/.default"), storage, nil)
	if is.Hits() != hits {
		t.Errorf("issuer metadata refetched (%d → %d) although cached", hits, is.Hits())
	}
}

// setWorkloadEnv sets what the workload-identity webhook injects.
func setWorkloadEnv(t *testing.T, srv *ststest.Server, clientID, tokenFile string) {
	t.Setenv("AZURE_CLIENT_ID", clientID)
	t.Setenv("AZURE_TENANT_ID", srv.TenantID)
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", tokenFile)
	t.Setenv("AZURE_AUTHORITY_HOST", srv.URL+"/")
	for _, k := range []string{"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func TestDefaultAzureCredential(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	const subject = "system:serviceaccount:apps:dac"
	clientID := srv.AddIdentity(t, "dac", is.URL, subject)
	tokenFile := ststest.WriteFile(t, "token", []byte(is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)))
	setWorkloadEnv(t, srv, clientID, tokenFile)
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions:            azcore.ClientOptions{Transport: srv.Client()},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := verify(t, srv, getToken(t, cred, storage+"/.default"), storage, nil)
	if c.AppID != clientID {
		t.Errorf("appid = %s, want %s", c.AppID, clientID)
	}
}

// TestSSLCertFile runs DefaultAzureCredential in a child process that trusts
// the sts only through SSL_CERT_FILE, as a pod would: no custom transport.
func TestSSLCertFile(t *testing.T) {
	if os.Getenv("PODID_STS_HELPER") == "1" {
		t.Skip("helper mode")
	}
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	const subject = "system:serviceaccount:apps:sslcert"
	clientID := srv.AddIdentity(t, "sslcert", is.URL, subject)
	tokenFile := ststest.WriteFile(t, "token", []byte(is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)))
	out := filepath.Join(t.TempDir(), "access-token")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSSLCertFileHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"PODID_STS_HELPER=1", "PODID_STS_HELPER_OUT="+out,
		"SSL_CERT_FILE="+srv.CAFile, "SSL_CERT_DIR=/nonexistent",
		"AZURE_CLIENT_ID="+clientID, "AZURE_TENANT_ID="+srv.TenantID,
		"AZURE_FEDERATED_TOKEN_FILE="+tokenFile, "AZURE_AUTHORITY_HOST="+srv.URL,
	)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, b)
	}
	tok, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, srv, string(tok), storage, nil)
}

func TestSSLCertFileHelper(t *testing.T) {
	if os.Getenv("PODID_STS_HELPER") != "1" {
		t.Skip("runs only as TestSSLCertFile's child")
	}
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	tok := getToken(t, cred, storage+"/.default")
	if err := os.WriteFile(os.Getenv("PODID_STS_HELPER_OUT"), []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

type tokenResp struct {
	status int
	body   map[string]any
}

func postForm(t *testing.T, srv *ststest.Server, path, contentType, body string) tokenResp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %s", resp.StatusCode, raw)
	}
	return tokenResp{resp.StatusCode, m}
}

// assertAADSTS checks Entra's error shape.
func assertAADSTS(t *testing.T, r tokenResp, status, code int, oauthErr string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d, want %d (%v)", r.status, status, r.body["error_description"])
	}
	desc, _ := r.body["error_description"].(string)
	if sts.CodeOf(desc) != code {
		t.Errorf("error_description = %q, want AADSTS%d", desc, code)
	}
	if codes, _ := r.body["error_codes"].([]any); len(codes) != 1 || codes[0] != float64(code) {
		t.Errorf("error_codes = %v, want [%d]", r.body["error_codes"], code)
	}
	if oauthErr != "" && r.body["error"] != oauthErr {
		t.Errorf("error = %v, want %s", r.body["error"], oauthErr)
	}
	for _, k := range []string{"timestamp", "trace_id", "correlation_id", "error_uri"} {
		if s, _ := r.body[k].(string); s == "" {
			t.Errorf("missing %s", k)
		}
	}
}

func TestTokenEndpointNegative(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	const subject = "system:serviceaccount:ns:sa"
	clientID := srv.AddIdentity(t, "neg", is.URL, subject)
	noFIC := srv.AddIdentity(t, "nofic", "", "")
	now := time.Now()
	good := is.Token(t, subject, sts.DefaultFICAudience, now, time.Hour, nil)
	parts := strings.Split(good, ".")
	pub, _ := x509.MarshalPKIXPublicKey(&is.Key.PublicKey)

	// Tampered: payload changed (longer expiry), signature kept.
	tamperedPayload := strings.Split(is.Token(t, subject, sts.DefaultFICAudience, now, 48*time.Hour, nil), ".")[1]
	tampered := parts[0] + "." + tamperedPayload + "." + parts[2]
	hs256 := signHS256(t, pub, map[string]any{"iss": is.URL, "sub": subject, "aud": sts.DefaultFICAudience, "exp": now.Add(time.Hour).Unix(), "kid": is.KID}, is.KID)
	none := b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "."
	noneSig := b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".c2ln"

	form := func(assertion string) string {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {storage + "/.default"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}.Encode()
	}
	const ct = "application/x-www-form-urlencoded"
	v2 := "/" + srv.TenantID + "/oauth2/v2.0/token"
	for _, tt := range []struct {
		name   string
		path   string
		body   string
		status int
		code   int
		err    string
	}{
		{"wrong issuer", v2, form(is.Token(t, subject, sts.DefaultFICAudience, now, time.Hour, map[string]any{"iss": is.URL + "/other"})), 400, sts.CodeFICIssuerMismatch, "invalid_client"},
		{"issuer case differs", v2, form(is.Token(t, subject, sts.DefaultFICAudience, now, time.Hour, map[string]any{"iss": strings.ToUpper(is.URL)})), 400, sts.CodeFICIssuerMismatch, "invalid_client"},
		{"wrong subject", v2, form(is.Token(t, subject+"x", sts.DefaultFICAudience, now, time.Hour, nil)), 400, sts.CodeFICSubjectMismatch, "invalid_client"},
		{"subject trailing space", v2, form(is.Token(t, subject+" ", sts.DefaultFICAudience, now, time.Hour, nil)), 400, sts.CodeFICSubjectMismatch, "invalid_client"},
		{"subject case differs", v2, form(is.Token(t, strings.ToUpper(subject), sts.DefaultFICAudience, now, time.Hour, nil)), 400, sts.CodeFICSubjectCase, "invalid_client"},
		{"wrong audience", v2, form(is.Token(t, subject, "api://other", now, time.Hour, nil)), 400, sts.CodeFICAudienceMismatch, "invalid_client"},
		{"client without federated credentials", v2, strings.Replace(form(good), clientID, noFIC, 1), 400, sts.CodeNoMatchingFIC, "invalid_request"},
		{"expired", v2, form(is.Token(t, subject, sts.DefaultFICAudience, now.Add(-2*time.Hour), time.Hour, nil)), 401, sts.CodeAssertionTime, "invalid_client"},
		{"not yet valid", v2, form(is.Token(t, subject, sts.DefaultFICAudience, now, time.Hour, map[string]any{"nbf": now.Add(10 * time.Minute).Unix()})), 401, sts.CodeAssertionTime, "invalid_client"},
		{"alg none", v2, form(none), 400, sts.CodeMalformedJWT, "invalid_request"},
		{"alg none with signature", v2, form(noneSig), 401, sts.CodeAssertionSignature, "invalid_client"},
		{"HS256 with RSA public key", v2, form(hs256), 401, sts.CodeAssertionSignature, "invalid_client"},
		{"unknown kid", v2, form(is.Sign(t, map[string]any{"iss": is.URL, "sub": subject, "aud": sts.DefaultFICAudience, "exp": now.Add(time.Hour).Unix()}, "nope")), 401, sts.CodeAssertionSignature, "invalid_client"},
		{"tampered signature", v2, form(tampered), 401, sts.CodeAssertionSignature, "invalid_client"},
		{"garbage assertion", v2, form("not-a-jwt"), 400, sts.CodeMalformedJWT, "invalid_request"},
		{"oversized body", v2, form(good) + "&pad=" + strings.Repeat("a", sts.MaxFormBytes), 400, sts.CodeMalformedRequest, "invalid_request"},
		{"duplicate client_id", v2, form(good) + "&client_id=" + clientID, 400, sts.CodeDuplicateParameter, "invalid_request"},
		{"duplicate scope", v2, form(good) + "&scope=x%2F.default", 400, sts.CodeDuplicateParameter, "invalid_request"},
		{"token path in other case", "/" + srv.TenantID + "/OAuth2/V2.0/Token", form(good), 200, 0, ""},
		{"unknown tenant", "/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token", form(good), 400, sts.CodeTenantNotFound, "invalid_request"},
		{"unknown client", v2, strings.Replace(form(good), clientID, "11111111-2222-3333-4444-555555555555", 1), 400, sts.CodeAppNotFound, "unauthorized_client"},
		{"wrong secret", v2, url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "scope": {storage + "/.default"}, "client_secret": {"wrong-secret-wrong-secret"}}.Encode(), 401, sts.CodeInvalidSecret, "invalid_client"},
		{"no credential", v2, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {storage + "/.default"}}.Encode(), 401, sts.CodeNoCredential, "invalid_client"},
		{"missing scope", v2, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}}.Encode(), 400, sts.CodeMissingParameter, "invalid_request"},
		{"scope without /.default", v2, strings.Replace(form(good), "%2F.default", "", 1), 400, sts.CodeScopeNotDefault, "invalid_scope"},
		{"scope with a permission", v2, strings.Replace(form(good), "%2F.default", "%2Fuser_impersonation", 1), 400, sts.CodeScopeNotDefault, "invalid_scope"},
		{"two resources", v2, strings.Replace(form(good), "%2F.default", "%2F.default+api%3A%2F%2Fx%2F.default", 1), 400, sts.CodeInvalidScope, "invalid_scope"},
		{"wrong grant", v2, strings.Replace(form(good), "client_credentials", "password", 1), 400, sts.CodeUnsupportedGrant, "unsupported_grant_type"},
		{"semicolon form", v2, form(good) + ";x=1", 400, sts.CodeMalformedRequest, "invalid_request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := postForm(t, srv, tt.path, ct, tt.body)
			if tt.status == 200 {
				if r.status != 200 {
					t.Fatalf("status %d: %v", r.status, r.body)
				}
				return
			}
			assertAADSTS(t, r, tt.status, tt.code, tt.err)
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		assertAADSTS(t, postForm(t, srv, v2, "application/json", form(good)), 400, sts.CodeMalformedRequest, "invalid_request")
	})
	t.Run("good assertion still works", func(t *testing.T) {
		r := postForm(t, srv, v2, ct, form(good))
		if r.status != 200 {
			t.Fatalf("status %d: %v", r.status, r.body)
		}
		if _, ok := r.body["expires_in"].(float64); !ok {
			t.Errorf("expires_in is not a number: %#v", r.body["expires_in"])
		}
		verify(t, srv, r.body["access_token"].(string), storage, nil)
	})
}

func TestClientSecretBasic(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/"+srv.TenantID+"/oauth2/v2.0/token",
		strings.NewReader("grant_type=client_credentials&scope=https%3A%2F%2Fstorage.azure.com%2F.default"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(ststest.AdminClientID, ststest.AdminSecret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, m)
	}
	verify(t, srv, m["access_token"].(string), storage, nil)
}

func TestV1TokenEndpoint(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	const vault = "https://vault.azure.net"
	r := postForm(t, srv, "/"+srv.TenantID+"/oauth2/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "resource": {vault}}.Encode())
	if r.status != 200 {
		t.Fatalf("status %d: %v", r.status, r.body)
	}
	for _, k := range []string{"expires_in", "expires_on", "not_before"} {
		if _, ok := r.body[k].(string); !ok {
			t.Errorf("%s = %#v, want a string", k, r.body[k])
		}
	}
	if r.body["resource"] != vault {
		t.Errorf("resource = %v", r.body["resource"])
	}
	c := verify(t, srv, r.body["access_token"].(string), vault, nil)
	if c.Issuer != srv.V1Issuer() || len(c.Audience) != 1 || c.Audience[0] != vault {
		t.Errorf("claims = %+v", c)
	}
}

func TestV2TokenForRegisteredAPI(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	ctx := context.Background()
	api, _, err := srv.PutApplication(ctx, srv.TenantID, sts.Application{DisplayName: "api", IdentifierURIs: []string{"api://orders"}, AccessTokenVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.PutRoleAssignment(ctx, storeRA(ststest.AdminClientID, "api://orders", "Orders.Read")); err != nil {
		t.Fatal(err)
	}
	cred, _ := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	c := verify(t, srv, getToken(t, cred, "api://orders/.default"), api.ClientID, nil)
	if c.Version != "2.0" || c.Issuer != srv.URL+"/"+srv.TenantID+"/v2.0" || c.AppID != ststest.AdminClientID {
		t.Errorf("claims = %+v", c)
	}
	if len(c.Roles) != 1 || c.Roles[0] != "Orders.Read" {
		t.Errorf("roles = %v", c.Roles)
	}
}

func TestDiscovery(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	get := func(path string) map[string]any {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	v2 := get("/" + srv.TenantID + "/v2.0/.well-known/openid-configuration")
	if v2["issuer"] != srv.URL+"/"+srv.TenantID+"/v2.0" || v2["token_endpoint"] != srv.URL+"/"+srv.TenantID+"/oauth2/v2.0/token" {
		t.Errorf("v2 discovery = %v", v2)
	}
	v1 := get("/podid.test/.well-known/openid-configuration")
	if v1["issuer"] != srv.V1Issuer() {
		t.Errorf("v1 issuer = %v", v1["issuer"])
	}
	if keys := get("/common/discovery/v2.0/keys")["keys"].([]any); len(keys) != 1 {
		t.Errorf("keys = %v", keys)
	}
	inst := get("/common/discovery/instance?api-version=1.1&authorization_endpoint=" + url.QueryEscape(srv.URL+"/"+srv.TenantID+"/oauth2/v2.0/authorize"))
	if inst["tenant_discovery_endpoint"] != srv.URL+"/"+srv.TenantID+"/v2.0/.well-known/openid-configuration" {
		t.Errorf("instance discovery = %v", inst)
	}
	// A Host that is not one of our names does not leak into the documents.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/common/v2.0/.well-known/openid-configuration", nil)
	req.Host = "evil.example"
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "evil.example") {
		t.Errorf("Host header echoed: %s", b)
	}
}

// TestHostedClusterIssuer: the sts publishes discovery+JWKS for a cluster
// whose API server does not, and accepts its service-account tokens.
func TestHostedClusterIssuer(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	set, err := sts.ClusterIssuerKeys(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	srv := ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) {
		c.ClusterIssuers = map[string]jose.JSONWebKeySet{"dev": set}
	}})
	iss := srv.ClusterIssuerURL("dev")
	if iss != srv.URL+"/clusters/dev" {
		t.Fatalf("issuer = %s", iss)
	}
	const subject = "system:serviceaccount:default:hosted"
	clientID := srv.AddIdentity(t, "hosted", iss, subject)
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", set.Keys[0].KeyID))
	now := time.Now()
	sat, err := jwt.Signed(sig).Claims(map[string]any{"iss": iss, "sub": subject, "aud": []string{sts.DefaultFICAudience},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: clientOptions(srv), ClientID: clientID, TenantID: srv.TenantID,
		TokenFilePath: ststest.WriteFile(t, "token", []byte(sat)), DisableInstanceDiscovery: true})
	verify(t, srv, getToken(t, cred, storage+"/.default"), storage, nil)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) { c.Metrics = reg }})
	v2 := "/" + srv.TenantID + "/oauth2/v2.0/token"
	ok := url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "scope": {storage + "/.default"}}
	postForm(t, srv, v2, "application/x-www-form-urlencoded", ok.Encode())
	ok.Set("client_secret", "wrong-wrong-wrong-wrong")
	postForm(t, srv, v2, "application/x-www-form-urlencoded", ok.Encode())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "podid_sts_token_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var result string
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					result = l.GetValue()
				}
			}
			got[result] = m.GetCounter().GetValue()
		}
	}
	if got["ok"] != 1 || got["AADSTS7000215"] != 1 {
		t.Errorf("token_requests_total = %v", got)
	}
}
