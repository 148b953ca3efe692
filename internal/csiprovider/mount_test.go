package csiprovider

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/keyvault/armkeyvault"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/pkg/util/fileutil"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/workloadidentity"
)

// env is a real podid sts with one RBAC vault made through ARM, a
// Kubernetes-like service-account issuer it trusts, a writer that sets
// secrets with the unmodified azsecrets client, and the provider serving
// the driver's gRPC API on a unix socket.
type env struct {
	srv    *ststest.Server
	is     *ststest.Issuer
	vault  string // name
	scope  string // ARM id
	writer *azsecrets.Client
	client v1alpha1.CSIDriverProviderClient
}

const localCloud = "PodidLocalCloud"

func newEnv(t testing.TB) *env {
	t.Helper()
	is := ststest.NewIssuer(t)
	srv := ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) { c.ExternalTransport = is.Transport() }})
	e := &env{srv: srv, is: is, vault: "kv-csi"}
	ctx := t.Context()

	opts := azcore.ClientOptions{
		Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: srv.URL + "/", Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
			cloud.ResourceManager: {Endpoint: srv.URL, Audience: sts.ARMResource}}},
		Transport: srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1},
	}
	admin, err := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	vaults, err := armkeyvault.NewVaultsClient(ststest.SubscriptionID, admin, &arm.ClientOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	poller, err := vaults.BeginCreateOrUpdate(ctx, "rg-kv", e.vault, armkeyvault.VaultCreateOrUpdateParameters{
		Location: to.Ptr("westeurope"),
		Properties: &armkeyvault.VaultProperties{TenantID: to.Ptr(srv.TenantID), EnableRbacAuthorization: to.Ptr(true),
			SKU: &armkeyvault.SKU{Family: to.Ptr(armkeyvault.SKUFamilyA), Name: to.Ptr(armkeyvault.SKUNameStandard)}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := poller.PollUntilDone(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.scope = *res.ID

	app, _, err := srv.PutApplication(ctx, srv.TenantID, sts.Application{DisplayName: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := srv.GenerateSecret(ctx, app.ClientID, "test", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	e.assign(t, app.ObjectID, keyvault.RoleSecretsOfficer)
	wcred, err := azidentity.NewClientSecretCredential(srv.TenantID, app.ClientID, secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: azcore.ClientOptions{Cloud: opts.Cloud, Transport: srv.Client()}, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	e.writer, err = azsecrets.NewClient(*res.Properties.VaultURI, wcred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: srv.VaultClient()}})
	if err != nil {
		t.Fatal(err)
	}

	p, err := New(Config{
		Clouds:       append([]Cloud{{Name: localCloud, VaultDNSSuffix: srv.VaultDNSSuffix(), Authority: srv.URL}}, PublicClouds...),
		DefaultCloud: localCloud,
		Credentials:  &PodCredentials{Transport: srv.Client()},
		Transport:    srv.VaultClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), SocketName)
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(sctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// The driver's own client: gRPC over the unix socket.
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	e.client = v1alpha1.NewCSIDriverProviderClient(cc)
	return e
}

func (e *env) assign(t testing.TB, objectID, role string) {
	t.Helper()
	if _, _, err := e.srv.PutAzureRoleAssignment(t.Context(), sts.AzureRoleAssignment{TenantID: e.srv.TenantID, Scope: e.scope, Role: role, PrincipalID: objectID}); err != nil {
		t.Fatal(err)
	}
}

// identity makes a user-assigned identity; grantSA ("ns/name", or "")
// gets a federated credential (the grant); role ("" for none) on the vault.
func (e *env) identity(t testing.TB, name, grantSA, role string) string {
	t.Helper()
	p, _, err := e.srv.PutIdentity(t.Context(), sts.Identity{TenantID: e.srv.TenantID, Subscription: ststest.SubscriptionID, ResourceGroup: "rg", Name: name, Location: "westeurope"})
	if err != nil {
		t.Fatal(err)
	}
	if grantSA != "" {
		ns, sa, _ := strings.Cut(grantSA, "/")
		if _, err := e.srv.PutFederatedCredential(t.Context(), p.ClientID, store.FederatedCredential{Name: "grant-" + ns + "-" + sa, Issuer: e.is.URL, Subject: "system:serviceaccount:" + ns + ":" + sa}); err != nil {
			t.Fatal(err)
		}
	}
	if role != "" {
		e.assign(t, p.ObjectID, role)
	}
	return p.ClientID
}

func (e *env) set(t testing.TB, name, value string) string {
	t.Helper()
	r, err := e.writer.SetSecret(t.Context(), name, azsecrets.SetSecretParameters{Value: to.Ptr(value)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID.Version()
}

// attrs is what the driver sends for a pod of ServiceAccount ns/sa: the
// class's parameters, the pod's attributes and its token bound to the pod.
func (e *env) attrs(t testing.TB, ns, sa string, params map[string]string) string {
	t.Helper()
	now := time.Now()
	tok := e.is.Token(t, "system:serviceaccount:"+ns+":"+sa, workloadidentity.TokenAudience, now, time.Hour, map[string]any{
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": sa, "uid": "sa-uid"}, "pod": map[string]any{"name": "p", "uid": "pod-uid"}},
	})
	toks, _ := json.Marshal(map[string]any{workloadidentity.TokenAudience: map[string]any{"token": tok, "expirationTimestamp": now.Add(time.Hour)}})
	a := map[string]string{
		"keyvaultName": e.vault, "tenantId": e.srv.TenantID, "secretProviderClass": "demo-secret",
		AttrPodName: "p", AttrPodNamespace: ns, AttrPodUID: "pod-uid", AttrServiceAccount: sa, AttrServiceAccounts: string(toks),
		"csi.storage.k8s.io/ephemeral": "true",
	}
	for k, v := range params {
		a[k] = v
	}
	b, _ := json.Marshal(a)
	return string(b)
}

func objects(names ...string) string {
	s := "array:\n"
	for _, n := range names {
		s += "  - |\n    objectName: \"" + n + "\"\n    objectType: secret\n"
	}
	return s
}

// seed003 is seed 003's SecretProviderClass parameters with the local ids.
func seed003(clientID string) map[string]string {
	return map[string]string{"usePodIdentity": "false", "useVMManagedIdentity": "true", "userAssignedIdentityID": clientID, "objects": objects("demosecret")}
}

func (e *env) mount(t testing.TB, attrs string) (*v1alpha1.MountResponse, error) {
	t.Helper()
	return e.client.Mount(t.Context(), &v1alpha1.MountRequest{Attributes: attrs, Secrets: "{}", Permission: "420", TargetPath: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/secret-store/mount"})
}

// write writes the response as the driver does (its own atomic writer).
func write(t *testing.T, resp *v1alpha1.MountResponse) string {
	t.Helper()
	dir := t.TempDir()
	if err := fileutil.WritePayloads(dir, resp.GetFiles()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMountSeed003(t *testing.T) {
	e := newEnv(t)
	id := e.identity(t, "azurekeyvaultsecretsprovider", "default/default", keyvault.RoleSecretsUser)
	v1 := e.set(t, "demosecret", "demovalue")

	resp, err := e.mount(t, e.attrs(t, "default", "default", seed003(id)))
	if err != nil {
		t.Fatal(err)
	}
	dir := write(t, resp)
	b, err := os.ReadFile(filepath.Join(dir, "demosecret"))
	if err != nil || string(b) != "demovalue" {
		t.Fatalf("demosecret = %q, %v", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "demosecret")); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
	if ov := resp.GetObjectVersion(); len(ov) != 1 || ov[0].Id != "secret/demosecret" || ov[0].Version != v1 {
		t.Errorf("object versions %v, want secret/demosecret@%s", ov, v1)
	}

	// Rotation: the driver mounts again; the new version is what it gets.
	v2 := e.set(t, "demosecret", "demovalue-2")
	resp, err = e.mount(t, e.attrs(t, "default", "default", seed003(id)))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Files[0].Contents) != "demovalue-2" || resp.ObjectVersion[0].Version != v2 {
		t.Errorf("after rotation: %q @%s, want demovalue-2 @%s", resp.Files[0].Contents, resp.ObjectVersion[0].Version, v2)
	}

	// Pinned version, history and the objects' own options.
	p := seed003(id)
	p["objects"] = "array:\n" +
		"  - |\n    objectName: demosecret\n    objectType: secret\n    objectVersion: " + v1 + "\n    objectAlias: pinned\n    filePermission: \"0400\"\n" +
		"  - |\n    objectName: demosecret\n    objectType: secret\n    objectAlias: hist\n    objectVersionHistory: 2\n"
	resp, err = e.mount(t, e.attrs(t, "default", "default", p))
	if err != nil {
		t.Fatal(err)
	}
	dir = write(t, resp)
	for f, want := range map[string]string{"pinned": "demovalue", "hist/0": "demovalue-2", "hist/1": "demovalue"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", f, b, err, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "pinned")); fi.Mode().Perm() != 0o400 {
		t.Errorf("pinned mode %v", fi.Mode())
	}
	ids := map[string]string{}
	for _, ov := range resp.ObjectVersion {
		ids[ov.Id] = ov.Version
	}
	if ids["secret/demosecret/0"] != v2 || ids["secret/demosecret/1"] != v1 {
		t.Errorf("history versions %v", ids)
	}
}

func TestMountTenObjectsAndClientID(t *testing.T) {
	e := newEnv(t)
	id := e.identity(t, "web", "shop/web", keyvault.RoleSecretsUser)
	var names []string
	for i := range 10 {
		n := fmt.Sprintf("s%d", i)
		e.set(t, n, "value-"+n)
		names = append(names, n)
	}
	resp, err := e.mount(t, e.attrs(t, "shop", "web", map[string]string{"clientID": id, "objects": objects(names...)}))
	if err != nil {
		t.Fatal(err)
	}
	dir := write(t, resp)
	for _, n := range names {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err != nil || string(b) != "value-"+n {
			t.Errorf("%s = %q, %v", n, b, err)
		}
	}
	if len(resp.ObjectVersion) != 10 {
		t.Errorf("versions %v", resp.ObjectVersion)
	}
}

// Every refused mount says which object or identity and why, and returns
// no file at all.
func TestMountRefused(t *testing.T) {
	e := newEnv(t)
	granted := e.identity(t, "granted", "default/default", keyvault.RoleSecretsUser)
	noGrant := e.identity(t, "nogrant", "", keyvault.RoleSecretsUser)
	noRole := e.identity(t, "norole", "default/default", "")
	e.set(t, "demosecret", "demovalue")
	e.set(t, "other", "x")

	with := func(id string, kv ...string) map[string]string {
		p := seed003(id)
		for i := 0; i+1 < len(kv); i += 2 {
			p[kv[i]] = kv[i+1]
		}
		return p
	}
	for _, tt := range []struct {
		name     string
		ns, sa   string
		params   map[string]string
		code     codes.Code
		contains []string
	}{
		{"no grant for the mounting pod's ServiceAccount", "default", "default", with(noGrant), codes.PermissionDenied,
			[]string{"NoSecretMountGrant", "ServiceAccount default/default", "system:serviceaccount:default:default on identity " + noGrant, "podid fic create --identity <its name> --service-account default/default", "AADSTS70021"}},
		{"a pod of another namespace uses the granted identity", "other", "default", with(granted), codes.PermissionDenied,
			[]string{"NoSecretMountGrant", "ServiceAccount other/default"}},
		{"another ServiceAccount of the namespace", "default", "builder", with(granted), codes.PermissionDenied,
			[]string{"NoSecretMountGrant", "ServiceAccount default/builder"}},
		{"clientID not federated with the ServiceAccount", "default", "builder", map[string]string{"clientID": granted, "objects": objects("demosecret")}, codes.PermissionDenied,
			[]string{"ServiceAccount default/builder is not allowed this identity", "AADSTS70021"}},
		{"identity without a role on the vault", "default", "default", with(noRole), codes.PermissionDenied,
			[]string{"objectName:demosecret", "403 Forbidden"}},
		{"unknown secret, after one that exists: nothing is returned", "default", "default", with(granted, "objects", objects("other", "missing")), codes.NotFound,
			[]string{"objectName:missing", "404 SecretNotFound"}},
		{"unknown version", "default", "default", with(granted, "objects", "array:\n  - |\n    objectName: demosecret\n    objectType: secret\n    objectVersion: 0123456789abcdef0123456789abcdef\n"), codes.NotFound,
			[]string{"objectName:demosecret", "objectVersion:0123456789abcdef0123456789abcdef", "404"}},
		{"unknown vault", "default", "default", with(granted, "keyvaultName", "kv-missing"), codes.NotFound,
			[]string{"objectName:demosecret", "VaultNotFound"}},
		{"malformed objects YAML", "default", "default", with(granted, "objects", "array:\n  - |\n    objectName: [demosecret\n"), codes.InvalidArgument,
			[]string{"parameter objects", "array[0]"}},
		{"unknown cloud", "default", "default", with(granted, "cloudName", "AzureMoonCloud"), codes.InvalidArgument,
			[]string{"cloudName", "AzureMoonCloud"}},
		{"no token from the driver", "default", "default", with(granted, AttrServiceAccounts, ""), codes.PermissionDenied,
			[]string{"NoServiceAccountToken", "tokenRequests"}},
		{"usePodIdentity without the agent", "default", "default", map[string]string{"usePodIdentity": "true", "objects": objects("demosecret")}, codes.PermissionDenied,
			[]string{"PodIdentityDisabled"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			attrs := e.attrs(t, tt.ns, tt.sa, tt.params)
			resp, err := e.mount(t, attrs)
			if err == nil {
				t.Fatalf("mounted %d files", len(resp.GetFiles()))
			}
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Errorf("code %v, want %v (%s)", st.Code(), tt.code, st.Message())
			}
			for _, c := range tt.contains {
				if !strings.Contains(st.Message(), c) {
					t.Errorf("message %q lacks %q", st.Message(), c)
				}
			}
			if resp.GetFiles() != nil {
				t.Error("files returned with an error")
			}
			// The pod's token is in the attributes; it must never come back in the event.
			var a map[string]string
			_ = json.Unmarshal([]byte(attrs), &a)
			if tok, _ := saToken(a[AttrServiceAccounts]); tok != "" && strings.Contains(st.Message(), tok) {
				t.Error("the ServiceAccount token is in the error")
			}
		})
	}
}

func TestVersion(t *testing.T) {
	s, err := New(Config{Clouds: PublicClouds, DefaultCloud: "AzurePublicCloud", Credentials: &PodCredentials{}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Version(t.Context(), &v1alpha1.VersionRequest{Version: "v1alpha1"})
	if err != nil || v.RuntimeName != RuntimeName || v.Version != "v1alpha1" {
		t.Fatalf("%v %v", v, err)
	}
	if _, err := New(Config{Clouds: PublicClouds, DefaultCloud: "Nowhere", Credentials: &PodCredentials{}}); err == nil {
		t.Error("an unknown default cloud was accepted")
	}
}
