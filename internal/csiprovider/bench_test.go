package csiprovider

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/podid/podid/internal/sts/keyvault"
)

// BenchmarkMount measures the provider's Mount as the driver calls it (gRPC
// over the unix socket) against a real sts vault in process: the exchange of
// the pod's ServiceAccount token for the identity, then one GET per object.
// Per-mount latency p50/p99 for 1 and 10 objects, next to the baseline of the
// same run: one azsecrets GetSecret with a token already held (the vault
// round trip each object costs at least), and a mount of a certificate,
// its key and its secret. Run:
//
//	go test ./internal/csiprovider -run '^$' -bench BenchmarkMount -benchtime 200x
func BenchmarkMount(b *testing.B) {
	e := newEnv(b)
	id := e.identity(b, "bench", "default/default", keyvault.RoleSecretsUser)
	var names []string
	for i := range 10 {
		n := fmt.Sprintf("bench%d", i)
		e.set(b, n, "value-of-"+n)
		names = append(names, n)
	}
	quantiles := func(d []time.Duration) (p50, p99 time.Duration) {
		slices.Sort(d)
		return d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]
	}
	var base time.Duration
	b.Run("baseline-azsecrets-get", func(b *testing.B) {
		ctx := b.Context()
		if _, err := e.writer.GetSecret(ctx, "bench0", "", nil); err != nil { // token acquired here
			b.Fatal(err)
		}
		var d []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := e.writer.GetSecret(ctx, "bench0", "", (*azsecrets.GetSecretOptions)(nil)); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
		}
		p50, p99 := quantiles(d)
		base = p50
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	})
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("mount-%d-objects", n), func(b *testing.B) {
			attrs := e.attrs(b, "default", "default", map[string]string{"useVMManagedIdentity": "true", "userAssignedIdentityID": id, "objects": objects(names[:n]...)})
			var d []time.Duration
			for b.Loop() {
				t0 := time.Now()
				resp, err := e.mount(b, attrs)
				if err != nil || len(resp.Files) != n {
					b.Fatalf("mount: %v", err)
				}
				d = append(d, time.Since(t0))
			}
			p50, p99 := quantiles(d)
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			if base > 0 {
				b.ReportMetric(float64(p50)/float64(base), "p50/baseline")
			}
		})
	}
	// A certificate, its public key and its secret: three Key Vault
	// clients (one per object type) sharing the mount's one token exchange.
	b.Run("mount-cert-key-secret", func(b *testing.B) {
		imp := e.importer(b)
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		c := selfSigned(b, k, "bench.podid.test")
		kder, _ := x509.MarshalPKCS8PrivateKey(k)
		value := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		if _, err := imp.ImportCertificate(b.Context(), "benchcert", azcertificates.ImportCertificateParameters{Base64EncodedCertificate: &value}, nil); err != nil {
			b.Fatal(err)
		}
		certID := e.identity(b, "bench-certs", "default/default", keyvault.RoleCertUser)
		objs := "array:\n" + obj("benchcert", "cert", "objectAlias", "c") + obj("benchcert", "key", "objectAlias", "k") + obj("benchcert", "secret", "objectAlias", "s")
		attrs := e.attrs(b, "default", "default", map[string]string{"useVMManagedIdentity": "true", "userAssignedIdentityID": certID, "objects": objs})
		var d []time.Duration
		for b.Loop() {
			t0 := time.Now()
			resp, err := e.mount(b, attrs)
			if err != nil || len(resp.Files) != 3 {
				b.Fatalf("mount: %v", err)
			}
			d = append(d, time.Since(t0))
		}
		p50, p99 := quantiles(d)
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		if base > 0 {
			b.ReportMetric(float64(p50)/float64(base), "p50/baseline")
		}
	})
}

// BenchmarkProviderProcess runs the real `podid csi-provider` binary (built
// here) against the same in-process sts vault, as the node runs it, and
// reports its resident memory after the mounts (10 objects each) next to its
// memory before the first mount (the baseline). Run:
//
//	go test ./internal/csiprovider -run '^$' -bench BenchmarkProviderProcess -benchtime 200x
func BenchmarkProviderProcess(b *testing.B) {
	e := newEnv(b)
	id := e.identity(b, "bench", "default/default", keyvault.RoleSecretsUser)
	var names []string
	for i := range 10 {
		n := fmt.Sprintf("bench%d", i)
		e.set(b, n, "value-of-"+n)
		names = append(names, n)
	}
	bin := filepath.Join(b.TempDir(), "podid")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/podid").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	dir := b.TempDir()
	cmd := exec.Command(bin, "csi-provider", "--provider-dir", dir, "--health-addr", "",
		"--local-cloud", localCloud, "--default-cloud", localCloud, "--authority", e.srv.URL, "--authority-ca-file", e.srv.CAFile,
		"--vault-dns-suffix", e.srv.VaultDNSSuffix(), "--vault-address", strings.TrimPrefix(e.srv.URL, "https://"), "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
	sock := filepath.Join(dir, SocketName)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the provider did not create its socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	client := v1alpha1.NewCSIDriverProviderClient(cc)
	rss := func() float64 {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
		b.Fatal("no VmRSS")
		return 0
	}
	idle := rss()
	attrs := e.attrs(b, "default", "default", map[string]string{"useVMManagedIdentity": "true", "userAssignedIdentityID": id, "objects": objects(names...)})
	for b.Loop() {
		resp, err := client.Mount(b.Context(), &v1alpha1.MountRequest{Attributes: attrs, Secrets: "{}", Permission: "420", TargetPath: "/x"})
		if err != nil || len(resp.Files) != 10 || string(resp.Files[3].Contents) != "value-of-bench3" {
			b.Fatalf("mount through the binary: %v", err)
		}
	}
	b.ReportMetric(idle, "idle-RSS-MiB")
	b.ReportMetric(rss(), "RSS-MiB")
}
