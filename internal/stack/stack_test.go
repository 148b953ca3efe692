package stack

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/podid/podid/internal/demoresult"
)

func TestPreflight(t *testing.T) {
	ok := host{euid: 0, cgroupV2: true, freeBytes: 50 << 30}
	for _, tc := range []struct {
		name string
		edit func(*host)
		want []string // "" = no error
	}{
		{"fine", func(*host) {}, nil},
		{"not root", func(h *host) { h.euid = 1000 }, []string{"must run as root", "sudo"}},
		{"no cgroups", func(h *host) { h.cgroupV2 = false }, []string{`no cgroup support for "cpu"`, "mount cgroup2"}},
		{"cgroup v1 complete", func(h *host) {
			h.cgroupV2 = false
			h.cgroupsV1 = map[string]bool{"cpu": true, "memory": true, "pids": true}
		}, nil},
		{"cgroup v1 without pids", func(h *host) {
			h.cgroupV2 = false
			h.cgroupsV1 = map[string]bool{"cpu": true, "memory": true}
		}, []string{`"pids"`}},
		{"warm, 3 GiB", func(h *host) { h.freeBytes = 3 << 30 }, []string{"only 3072 MiB free", "needs 4 GiB", "PODID_CACHE"}},
		{"cold, 8 GiB", func(h *host) { h.freeBytes, h.cold = 8<<30, true }, []string{"needs 12 GiB", "Kubernetes and helm builds"}},
		{"everything", func(h *host) { h.euid, h.cgroupV2, h.freeBytes = 1, false, 0 }, []string{"root", "cgroup", "MiB free"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := ok
			tc.edit(&h)
			err := preflight(h, "/cache")
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			var pe *PreflightError
			if !errors.As(err, &pe) {
				t.Fatalf("%T is not a PreflightError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDiagnose(t *testing.T) {
	for _, tc := range []struct{ out, reason, fix string }{
		{"starting\nERROR: port 6443 is already in use by kube-apiserver (pid 42); another Kubernetes\n", "port 6443 is already in use by kube-apiserver (pid 42)", ""},
		{"apt: installing etcd-server\nErr:1 http://deb.debian.org bookworm InRelease\n  Temporary failure resolving 'deb.debian.org'\nERROR: apt-get install etcd-server failed\n",
			"apt repositories are unreachable", "apt proxy"},
		{"go: k8s.io/kubernetes@v1.33.4: Get \"https://proxy.golang.org/k8s.io/kubernetes/@v/v1.33.4.zip\": dial tcp: lookup proxy.golang.org: no such host\n",
			"Go module proxy is unreachable", "GOPROXY"},
		{"write /cache/x: no space left on device\n", "disk is full", "free space"},
		{"just the last line\n", "just the last line", ""},
		{"LEFTOVER iptables: -A KUBE-X\nLEFTOVER mount: /run/podid/x\nERROR: cluster down, but the host still has the state listed above\n",
			"listed above: iptables: -A KUBE-X; mount: /run/podid/x", ""},
	} {
		reason, fix := diagnose(tc.out)
		if !strings.Contains(reason, tc.reason) || (tc.fix == "") != (fix == "") || !strings.Contains(fix, tc.fix) {
			t.Errorf("diagnose(%q) = %q, %q; want %q, %q", tc.out, reason, fix, tc.reason, tc.fix)
		}
	}
}

func TestExpand(t *testing.T) {
	got, err := expand("f", []byte("a: ${X_ID}\nb: $HOME ${lower} ${X_ID}\n"), map[string]string{"X_ID": "1"})
	if err != nil || string(got) != "a: 1\nb: $HOME ${lower} 1\n" {
		t.Fatalf("expand = %q, %v", got, err)
	}
	if _, err := expand("f.yaml", []byte("${A} ${B}"), map[string]string{"A": ""}); err == nil || !strings.Contains(err.Error(), "f.yaml: no value for B") {
		t.Fatalf("err = %v", err)
	}
}

// The demo table and its manifests agree: every file exists, every ${…}
// it uses is a value podid up fills in, every identity is one it creates,
// and every object decodes.
func TestDemosAndManifestsAgree(t *testing.T) {
	s := &session{tenant: "t", created: map[string]identity{}}
	ids := map[string]bool{}
	for _, id := range Identities {
		s.created[id.Name] = identity{ID: "/subscriptions/s/x/" + id.Name, ClientID: "c-" + id.Name}
		ids[id.Name] = true
	}
	vars := s.vars()
	dir := filepath.Join("..", "..", "deploy", "examples", "up")
	files := []Manifest{{namespacesFile, ""}}
	for _, d := range Demos {
		if !ids[d.Identity] {
			t.Errorf("demo %q: identity %q is not in Identities", d.Name, d.Identity)
		}
		if d.Namespace == "" || d.Selector == "" || d.Container == "" || (d.Audience == "") != d.NoToken || len(d.Manifests) == 0 {
			t.Errorf("demo %q: namespace, selector, container, manifests, and an audience unless NoToken are required", d.Name)
		}
		if d.NoToken && d.Want == "" {
			t.Errorf("demo %q: NoToken needs Want (what the pod must report)", d.Name)
		}
		files = append(files, d.Manifests...)
	}
	for _, b := range Backends {
		if b.Name == "" || b.Namespace == "" || len(b.Manifests) == 0 {
			t.Errorf("backend %+v: name, namespace and manifests are required", b)
		}
		files = append(files, b.Manifests...)
	}
	for _, m := range files {
		raw, err := os.ReadFile(filepath.Join(dir, m.File))
		if err != nil {
			t.Fatal(err)
		}
		b, err := expand(m.File, raw, vars)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		n := 0
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", m.File, err)
			}
			if obj != nil {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s holds no object", m.File)
		}
	}
}

func TestCheck(t *testing.T) {
	s := &session{tenant: "tenant", created: map[string]identity{"id": {PrincipalID: "principal"}}}
	d := Demo{Identity: "id", Audience: "https://storage.azure.com"}
	good := demoresult.Result{Program: "p", Aud: "https://storage.azure.com/", Tid: "tenant", Oid: "principal", Exp: time.Now().Add(time.Hour)}
	if p := s.check(d, good); p != "" {
		t.Fatalf("good result refused: %s", p)
	}
	mount := Demo{Identity: "id", NoToken: true, Resource: true, Want: "demovalue"}
	if p := s.check(mount, demoresult.Result{Program: "p", Resource: `demosecret and $demosecret = "demovalue" (demo data)`}); p != "" {
		t.Fatalf("good mount refused: %s", p)
	}
	for _, tc := range []struct {
		name string
		edit func(*demoresult.Result, *Demo)
		want string
	}{
		{"another identity", func(r *demoresult.Result, _ *Demo) { r.Oid = "other" }, "is not id's principal"},
		{"another tenant", func(r *demoresult.Result, _ *Demo) { r.Tid = "other" }, "is not the tenant"},
		{"another audience", func(r *demoresult.Result, _ *Demo) { r.Aud = "https://vault.azure.net" }, "aud"},
		{"expired", func(r *demoresult.Result, _ *Demo) { r.Exp = time.Now().Add(-time.Minute) }, "expired"},
		{"resource failed", func(r *demoresult.Result, _ *Demo) { r.Error = "403" }, "resource call failed: 403"},
		{"resource missing", func(_ *demoresult.Result, d *Demo) { d.Resource = true }, "no resource call result"},
		{"another secret value", func(r *demoresult.Result, d *Demo) {
			d.Resource, d.Want, r.Resource = true, "demovalue", `demosecret 1a2b3c4d… = "other" (demo data)`
		}, `not "demovalue"`},
		{"a value only inside another", func(r *demoresult.Result, d *Demo) {
			d.Resource, d.Want, r.Resource = true, "demovalue", `demosecret = "demovalue-2"`
		}, `not "demovalue"`},
		{"mounted: another value", func(r *demoresult.Result, d *Demo) {
			d.NoToken, d.Want, r.Resource = true, "demovalue", `demosecret and $demosecret = "x"`
		}, "not the secret's value"},
		{"mounted: nothing", func(r *demoresult.Result, d *Demo) {
			d.NoToken, d.Want, r.Resource, r.Error = true, "demovalue", "", "open /mnt/secret-store/demosecret: no such file"
		}, "mounted secret: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dd := good, d
			tc.edit(&r, &dd)
			if p := s.check(dd, r); !strings.Contains(p, tc.want) {
				t.Fatalf("check = %q, want %q", p, tc.want)
			}
		})
	}
}

func TestFindRoot(t *testing.T) {
	root, err := FindRoot(".")
	if err != nil || !isRoot(root) {
		t.Fatalf("FindRoot(.) = %q, %v", root, err)
	}
	if _, err := FindRoot(t.TempDir()); err == nil || !strings.Contains(err.Error(), "--source-dir") {
		t.Fatalf("FindRoot(tmp) err = %v", err)
	}
}

// The summary names every demo with its identity and key claims, marks a
// failed one with the reason, and carries no token.
func TestSummary(t *testing.T) {
	dir := t.TempDir()
	p, err := newProgress(io.Discard, false, dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	p.steps = []stepTime{{"cluster", 9 * time.Second}, {"demos", 2 * time.Second}}
	exp := time.Date(2026, 12, 8, 18, 31, 0, 0, time.UTC)
	s := &session{o: Options{Root: filepath.Join("..", ".."), Cache: "/cache"}, p: p, tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
		stsURL: "https://10.96.0.100", podAuthority: "https://login.microsoftonline.com/", upgraded: true,
		env: map[string]string{"KUBECONFIG": "/cache/cluster/admin.kubeconfig", "PODID_NODE_NAME": "podid-node", "PODID_NODE_IP": "192.0.2.2"},
		results: []demoRow{
			{d: Demos[0], pod: "myapp-1", ok: true, after: 1200 * time.Millisecond,
				r: demoresult.Result{Program: "miclient", Aud: "https://storage.azure.com", Tid: "72f988bf-86f1-41af-91ab-2d7cd011db47", Oid: "e3bae663-b9dd-476e-b8b2-d5e17fdbfb93", Exp: exp, Resource: "sent and received 1 message"}},
			{d: Demos[3], pod: "azcli-1", problem: `no token in 3m0s (last log line: "wiclient: GetToken failed after 3ms: AADSTS700213")`},
		}}
	var b bytes.Buffer
	s.printSummary(&b, []string{"agent 1/1 ready", "sts 1/1 ready"})
	out := b.String()
	t.Log("\n" + out)
	for _, w := range []string{
		"podid is up, but 1 demo(s) FAILED", "one node podid-node (192.0.2.2)", "agent 1/1 ready", "tenant 72f988bf-86f1-41af-91ab-2d7cd011db47",
		"podid sts https://10.96.0.100", "pods see it as https://login.microsoftonline.com/",
		"✓", Demos[0].Name, "demo-pod-identity", "https://storage.azure.com", "72f988bf…", "e3bae663…", "Dec 8 18:31Z", "1.2s", "sent and received 1 message",
		"✗", Demos[3].Name, "demo/azcli-1", "AADSTS700213",
		"steps: cluster 9s · demos 2s", "export KUBECONFIG=/cache/cluster/admin.kubeconfig", "podid doctor pod/myapp-1 -n demo", "podid down",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("summary lacks %q", w)
		}
	}
	if strings.Contains(out, "eyJ") {
		t.Error("summary holds something that looks like a JWT")
	}
}

// values-local.yaml enables the local cloud without naming its authority:
// the summary's is the chart's default.
func TestPodAuthority(t *testing.T) {
	root := filepath.Join("..", "..")
	local, err := readLocalValues(filepath.Join(root, "deploy/chart/podid/values-local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := podAuthority(root, local); err != nil || got != "https://login.microsoftonline.com/" {
		t.Errorf("podAuthority = %q, %v; want https://login.microsoftonline.com/", got, err)
	}
	local.LocalCloud.Enabled = false
	if got, err := podAuthority(root, local); err != nil || got != "" {
		t.Errorf("without the local cloud: %q, %v; want none", got, err)
	}
}

func TestHasRole(t *testing.T) {
	have := []map[string]any{
		{"role": "Storage Queue Data Contributor", "resource": "https://storage.azure.com"},
		{"roleDefinitionName": "Key Vault Secrets User", "scope": "/subscriptions/s/resourceGroups/demo/"},
	}
	for _, tc := range []struct {
		r    RoleSpec
		want bool
	}{
		{RoleSpec{"Storage Queue Data Contributor", "https://storage.azure.com/"}, true},
		{RoleSpec{"Storage Queue Data Contributor", ""}, true},
		{RoleSpec{"Storage Queue Data Contributor", "https://vault.azure.net"}, false},
		{RoleSpec{"Key Vault Secrets User", "/subscriptions/s/resourceGroups/demo"}, true},
		{RoleSpec{"Owner", ""}, false},
	} {
		if got := hasRole(have, tc.r); got != tc.want {
			t.Errorf("hasRole(%+v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}

// A tool's output that echoes the admin secret reaches neither the
// terminal (--verbose) nor the log.
func TestSecretRedacted(t *testing.T) {
	var term bytes.Buffer
	p, err := newProgress(&term, true, t.TempDir(), "up")
	if err != nil {
		t.Fatal(err)
	}
	p.redact("s3cr3t-value")
	w := p.writer()
	_, _ = w.Write([]byte(`{"config":{"sts":{"bootstrap":{"secrets":[{"value":"s3cr3t-value"}]}}}}` + "\nsecond s3cr3t-value line"))
	_ = w.Close()
	p.close()
	log, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"terminal": term.String(), "log": string(log)} {
		if strings.Contains(out, "s3cr3t-value") || strings.Count(out, "[redacted]") != 2 {
			t.Errorf("%s not redacted:\n%s", name, out)
		}
	}
}
