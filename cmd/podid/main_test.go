package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podid is the binary under test, built once by TestMain.
var podid string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podid-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	podid = filepath.Join(dir, "podid")
	build := exec.Command("go", "build", "-o", podid, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build podid:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs podid with args and a clean environment (no $NODE_NAME,
// $KUBECONFIG or in-cluster service account to pick up).
func run(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(podid, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run podid %v: %v", args, err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// expectExit runs podid with args and checks its exit code and that
// stderr holds every want.
func expectExit(t *testing.T, code int, args []string, want ...string) {
	t.Helper()
	r := run(t, args...)
	if r.code != code {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

// Every server subcommand speaks the one vocabulary; the deprecated names
// are accepted but not advertised.
func TestHelpShowsOneVocabulary(t *testing.T) {
	tests := []struct {
		cmd  []string
		want []string
	}{
		{[]string{"agent"}, []string{flagKubeconfig, flagLogLevel, flagListenAddr, flagHealthAddr, flagMetricsAddr, flagDebugAddr, flagClusterWide, flagTenantID, flagAuthority}},
		{[]string{"webhook"}, []string{flagKubeconfig, flagLogLevel, flagListenAddr, flagHealthAddr, flagMetricsAddr, flagDebugAddr, flagTenantID, flagAuthority}},
		{[]string{"broker"}, []string{flagKubeconfig, flagLogLevel, flagListenAddr, flagHealthAddr, flagMetricsAddr, flagDebugAddr, flagClusterWide, flagTenantID, flagAuthority}},
		{[]string{"controller"}, []string{flagKubeconfig, flagLogLevel, flagHealthAddr, flagMetricsAddr, flagDebugAddr, flagClusterWide}},
		{[]string{"sts", "serve"}, []string{flagLogLevel, flagListenAddr, flagHealthAddr, flagMetricsAddr, flagDebugAddr}},
	}
	deprecated := []string{"listen", "addr", "probe-addr", "metrics-listen", "debug", "cluster-wide-bindings", "authority-host"}
	for _, tt := range tests {
		t.Run(strings.Join(tt.cmd, " "), func(t *testing.T) {
			r := run(t, append(tt.cmd, "--help")...)
			if r.code != 0 {
				t.Fatalf("--help exit %d: %s", r.code, r.stderr)
			}
			for _, f := range tt.want {
				if !strings.Contains(r.stdout, "--"+f+" ") {
					t.Errorf("help lacks --%s", f)
				}
			}
			for _, f := range deprecated {
				if strings.Contains(r.stdout, "--"+f+" ") {
					t.Errorf("help advertises deprecated --%s", f)
				}
			}
		})
	}
}

// How podid was invoked is wrong: exit 2 and a message naming the flag.
func TestUsageErrors(t *testing.T) {
	agent := []string{"agent", "--node-name", "n", "--intercept=false"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown subcommand", []string{"bogus"}, []string{`unknown command "bogus" for "podid"`}},
		{"unknown sts subcommand", []string{"sts", "bogus"}, []string{`unknown command "bogus" for "podid sts"`}},
		{"stray argument", []string{"controller", "extra"}, []string{`unknown command "extra"`}},
		{"unknown flag", []string{"agent", "--no-such-flag"}, []string{"unknown flag: --no-such-flag"}},
		{"agent needs its node and interception inputs", []string{"agent"}, []string{"--node-name (or $NODE_NAME) is required", "--host-ip (or $HOST_IP) is required with --intercept", "--pod-cidr is required with --intercept"}},
		{"log level", append(agent, "--log-level", "verbose"), []string{`--log-level: log level "verbose": want debug, info, warn or error`}},
		{"address without port", append(agent, "--health-addr", "localhost"), []string{`--health-addr "localhost": want host:port or empty to disable`}},
		{"port out of range", append(agent, "--debug-addr", "127.0.0.1:70000"), []string{`--debug-addr "127.0.0.1:70000"`, "not a number from 0 to 65535"}},
		{"agent port", append(agent, "--port", "0"), []string{"--port 0 out of range"}},
		{"webhook TLS version", []string{"webhook", "--tls-min-version", "1.1"}, []string{`--tls-min-version "1.1": want 1.2 or 1.3`}},
		{"webhook authority", []string{"webhook", "--authority", "http://login.example"}, []string{`authority host "http://login.example": must be an https URL`}},
		{"webhook missing-SA policy", []string{"webhook", "--missing-service-account", "maybe"}, []string{"--missing-service-account", `"maybe"`}},
		{"controller workers", []string{"controller", "--workers", "0"}, []string{"--workers must be between 1 and 256"}},
		{"controller leases", []string{"controller", "--leader-elect-lease-duration", "5s"}, []string{"--leader-elect-lease-duration must exceed --leader-elect-renew-deadline"}},
		{"sts state", []string{"sts", "serve"}, []string{"--state is required"}},
		{"sts vault suffix", []string{"sts", "serve", "--state", "s.db", "--vault-dns-suffix", "vault"}, []string{`--vault-dns-suffix: vault DNS suffix "vault" must be a DNS name of at least two labels`}},
		{"sts verify inputs", []string{"sts", "verify", "x.y.z"}, []string{"--jwks-url, --issuer and --audience are required"}},
		{"sts verify arguments", []string{"sts", "verify", "a", "b"}, []string{"accepts at most 1 arg"}},
		{"up stray argument", []string{"up", "now"}, []string{`unknown command "now" for "podid up"`}},
		{"up timeout", []string{"up", "--timeout", "0s"}, []string{"--timeout 0s: must be positive"}},
		{"up source dir", []string{"up", "--source-dir", "/"}, []string{"--source-dir /: not podid's source tree"}},
		{"down unknown flag", []string{"down", "--force"}, []string{"unknown flag: --force"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectExit(t, 2, tt.args, tt.want...) })
	}
}

// podid up and down explain themselves without touching the machine.
func TestUpDownHelp(t *testing.T) {
	for _, verb := range []string{"up", "down"} {
		r := run(t, verb, "--help")
		if r.code != 0 {
			t.Fatalf("podid %s --help: exit %d\n%s", verb, r.code, r.stderr)
		}
		for _, w := range []string{"--verbose", "--timeout", "--source-dir"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("podid %s --help lacks %s:\n%s", verb, w, r.stdout)
			}
		}
	}
}

// Not root: podid up refuses before it installs or starts anything, and
// names the fix (run as an unprivileged user with setpriv when the tests
// run as root).
func TestUpRefusesNonRoot(t *testing.T) {
	var cmd *exec.Cmd
	cache := t.TempDir()
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("root without setpriv: cannot run podid up as another user")
		}
		dir := t.TempDir()
		bin := filepath.Join(dir, "podid")
		b, err := os.ReadFile(podid)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd = exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "up")
	} else {
		cmd = exec.Command(podid, "up")
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "PODID_CACHE=" + cache}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("podid up as non-root: %v, want exit 1\n%s", err, errb.String())
	}
	for _, w := range []string{"must run as root", "fix: run it as root"} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, errb.String())
		}
	}
	if ents, _ := os.ReadDir(cache); len(ents) != 0 {
		t.Errorf("podid up wrote %d entries into the cache before refusing", len(ents))
	}
}

// Well invoked, but the environment fails it: exit 1.
func TestRuntimeErrors(t *testing.T) {
	dir := t.TempDir() // a directory is no state file
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"agent kubeconfig", []string{"agent", "--node-name", "n", "--intercept=false", "--kubeconfig", "/nonexistent"}, "no kubeconfig"},
		{"webhook kubeconfig", []string{"webhook", "--kubeconfig", "/nonexistent"}, "no kubeconfig"},
		{"controller kubeconfig", []string{"controller", "--kubeconfig", "/nonexistent"}, "no kubeconfig"},
		{"controller without any cluster", []string{"controller"}, "not in a cluster"},
		{"sts state", []string{"sts", "serve", "--state", dir, "--listen-addr", "127.0.0.1:0"}, dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectExit(t, 1, tt.args, tt.want) })
	}
}

// The old names still set the new flags, with a deprecation notice. A
// deliberately invalid value shows which flag received it.
func TestDeprecatedAliases(t *testing.T) {
	agent := []string{"agent", "--node-name", "n", "--intercept=false"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"agent --listen", append(agent, "--listen", "bad"), []string{"Flag --listen has been deprecated, use --listen-addr instead", `--listen-addr "bad"`}},
		{"agent --cluster-wide-bindings", append(agent, "--cluster-wide-bindings", "--port", "0"), []string{"Flag --cluster-wide-bindings has been deprecated, use --cluster-wide instead", "--port 0"}},
		{"webhook --addr", []string{"webhook", "--addr", "bad"}, []string{"Flag --addr has been deprecated, use --listen-addr instead", `--listen-addr "bad"`}},
		{"webhook --probe-addr", []string{"webhook", "--probe-addr", "bad"}, []string{"Flag --probe-addr has been deprecated, use --health-addr instead", `--health-addr "bad"`}},
		{"webhook --authority-host", []string{"webhook", "--authority-host", "http://x.example"}, []string{"Flag --authority-host has been deprecated, use --authority instead", `authority host "http://x.example"`}},
		{"sts --listen", []string{"sts", "serve", "--listen", "bad"}, []string{"Flag --listen has been deprecated, use --listen-addr instead", `--listen-addr "bad"`}},
		{"sts --metrics-listen", []string{"sts", "serve", "--metrics-listen", "bad"}, []string{"Flag --metrics-listen has been deprecated, use --metrics-addr instead", `--metrics-addr "bad"`}},
		{"sts --debug", []string{"sts", "serve", "--debug"}, []string{"Flag --debug has been deprecated, use --log-level=debug instead", "--state is required"}},
		{"controller 0 disables", []string{"controller", "--metrics-addr", "0", "--health-addr=0", "--workers", "0"}, []string{`Flag --metrics-addr=0 has been deprecated, use --metrics-addr="" to disable`, `Flag --health-addr=0 has been deprecated`, "--workers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectExit(t, 2, tt.args, tt.want...) })
	}
}

// A server started with the deprecated names serves where they say, logs
// at the level --debug meant, and exits 0 on SIGTERM.
func TestSTSServesAndStops(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(podid, "sts", "serve", "--state", filepath.Join(dir, "state.db"),
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--debug")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// The JSON log says where each server listens.
	addrs := map[string]string{}
	lines := bufio.NewScanner(stderr)
	for len(addrs) < 3 && lines.Scan() {
		var rec struct{ Level, Msg, Server, Addr string }
		if json.Unmarshal(lines.Bytes(), &rec) != nil {
			continue // a deprecation notice
		}
		if rec.Msg == "serving" {
			for _, name := range strings.Split(rec.Server, "+") {
				addrs[name] = rec.Addr
			}
		}
	}
	if len(addrs) < 3 {
		t.Fatalf("servers seen: %v (stderr ended: %v)", addrs, lines.Err())
	}
	debugLines := make(chan string, 16)
	go func() {
		for lines.Scan() {
			if bytes.Contains(lines.Bytes(), []byte(`"level":"DEBUG"`)) {
				select {
				case debugLines <- lines.Text():
				default:
				}
			}
		}
	}()
	for path, name := range map[string]string{"/metrics": "metrics", "/readyz": "health", "/healthz": "health"} {
		res, err := http.Get("http://" + addrs[name] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s = %d %s", path, res.StatusCode, body)
		}
		if path == "/metrics" && !bytes.Contains(body, []byte("go_goroutines")) {
			t.Errorf("/metrics lacks the runtime collectors")
		}
	}
	// Plain HTTP to the HTTPS port: the server's error log, at debug level,
	// reports it only because --debug meant --log-level=debug.
	conn, err := net.Dial("tcp", addrs["sts"])
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n")
	_, _ = io.Copy(io.Discard, conn)
	conn.Close()
	select {
	case l := <-debugLines:
		t.Logf("debug record: %s", l)
	case <-time.After(10 * time.Second):
		t.Error("no debug-level record: --debug did not set the level")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
}

// The binary serves Key Vault hosts under --vault-dns-suffix: the serving
// certificate names *.<suffix> (the TLS handshake below checks it against
// the CA file it wrote) and such a host is Key Vault, not the token
// endpoints (an unknown vault is Key Vault's 404).
func TestSTSServesVaultHosts(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	cmd := exec.Command(podid, "sts", "serve", "--state", filepath.Join(dir, "state.db"), "--ca-file", caFile,
		"--listen-addr", "127.0.0.1:0", "--health-addr", "", "--vault-dns-suffix", "vault.podid.test")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var addr string
	lines := bufio.NewScanner(stderr)
	for addr == "" && lines.Scan() {
		var rec struct{ Msg, Server, Addr string }
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec.Msg == "serving" && strings.Contains(rec.Server, "sts") {
			addr = rec.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no serving address (stderr ended: %v)", lines.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	res, err := hc.Get("https://kv-nope.vault.podid.test/secrets?api-version=7.6")
	if err != nil {
		t.Fatalf("TLS to a vault host: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 404 || !bytes.Contains(body, []byte(`"VaultNotFound"`)) {
		t.Fatalf("unknown vault: %d %s", res.StatusCode, body)
	}
	if _, err := hc.Get("https://kv-nope.vault.azure.net/secrets"); err == nil {
		t.Fatal("the certificate names the default suffix too")
	}
}
