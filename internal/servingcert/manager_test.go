package servingcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podid/podid/internal/pki"
)

const (
	ns     = "podid-system"
	secret = "podid-webhook-cert"
	mwc    = "podid-webhook"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func webhookConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: mwc},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.podid.dev"}, {Name: "b.podid.dev"}},
	}
}

func validatingConfig() *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: mwc},
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "token.podid.dev"}},
	}
}

func newManager(cs *fake.Clientset, clk *testingclock.FakeClock, hosts ...string) *Manager {
	if len(hosts) == 0 {
		hosts = []string{"podid-webhook.podid-system.svc", "127.0.0.1"}
	}
	return New(Config{
		Client: cs, Namespace: ns, SecretName: secret, WebhookConfigName: mwc, ValidatingWebhookConfigName: mwc, Hosts: hosts,
		Validity: 30 * 24 * time.Hour, RotateBefore: 10 * 24 * time.Hour, Resync: time.Hour, Clock: clk,
	})
}

func servedLeaf(t *testing.T, m *Manager) *x509.Certificate {
	t.Helper()
	c, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

// verify checks the served certificate against the bundle in the webhook
// configuration, as the API server does.
func verify(t *testing.T, cs *fake.Clientset, m *Manager, host string, at time.Time) {
	t.Helper()
	got, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), mwc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vwc, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(t.Context(), mwc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	bundles := map[string][]byte{}
	for _, w := range got.Webhooks {
		bundles[w.Name] = w.ClientConfig.CABundle
	}
	for _, w := range vwc.Webhooks {
		bundles[w.Name] = w.ClientConfig.CABundle
	}
	for name, b := range bundles {
		if !bytes.Equal(b, got.Webhooks[0].ClientConfig.CABundle) || len(b) == 0 {
			t.Fatalf("webhook %s caBundle out of sync", name)
		}
	}
	pool.AppendCertsFromPEM(got.Webhooks[0].ClientConfig.CABundle)
	if _, err := servedLeaf(t, m).Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: at}); err != nil {
		t.Fatalf("served certificate does not verify against the caBundle: %v", err)
	}
}

func writes(cs *fake.Clientset) (n int) {
	for _, a := range cs.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch":
			n++
		}
	}
	return n
}

func TestSyncBootstrapAndIdempotent(t *testing.T) {
	cs := fake.NewClientset(webhookConfig(), validatingConfig())
	clk := testingclock.NewFakeClock(t0)
	m := newManager(cs, clk)
	if m.Ready() {
		t.Fatal("ready before sync")
	}
	if _, err := m.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	s, err := cs.CoreV1().Secrets(ns).Get(t.Context(), secret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{KeyCABundle, KeyCAKey, KeyCert, KeyKey} {
		if len(s.Data[k]) == 0 {
			t.Errorf("secret key %s empty", k)
		}
	}
	verify(t, cs, m, "podid-webhook.podid-system.svc", t0)
	if leaf := servedLeaf(t, m); len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) {
		t.Errorf("IP SANs = %v", leaf.IPAddresses)
	}

	before := writes(cs)
	next, err := m.Sync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if w := writes(cs); w != before {
		t.Errorf("second sync wrote %d times", w-before)
	}
	if next != time.Hour {
		t.Errorf("next sync in %v, want the resync period", next)
	}

	// A second replica adopts the same certificate.
	m2 := newManager(cs, clk)
	if _, err := m2.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !servedLeaf(t, m2).Equal(servedLeaf(t, m)) || writes(cs) != before {
		t.Error("second replica issued its own certificate")
	}
}

// deploy/webhook ships an empty Secret so RBAC can name it: the manager
// fills it with update, never create.
func TestSyncFillsShippedEmptySecret(t *testing.T) {
	cs := fake.NewClientset(webhookConfig(), validatingConfig(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns}})
	cs.PrependReactor("create", "secrets", func(clienttesting.Action) (bool, runtime.Object, error) {
		t.Error("secret created although it exists")
		return true, nil, nil
	})
	m := newManager(cs, testingclock.NewFakeClock(t0))
	if _, err := m.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	verify(t, cs, m, "podid-webhook.podid-system.svc", t0)
}

func TestSyncNewHostsReissue(t *testing.T) {
	cs := fake.NewClientset(webhookConfig(), validatingConfig())
	clk := testingclock.NewFakeClock(t0)
	m := newManager(cs, clk)
	if _, err := m.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := servedLeaf(t, m)
	m2 := newManager(cs, clk, "other.podid-system.svc")
	if _, err := m2.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if servedLeaf(t, m2).Equal(old) {
		t.Fatal("certificate not reissued for new hosts")
	}
	verify(t, cs, m2, "other.podid-system.svc", t0)
}

func TestRunRotates(t *testing.T) {
	cs := fake.NewClientset(webhookConfig(), validatingConfig())
	clk := testingclock.NewFakeClock(t0)
	m := newManager(cs, clk)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	first := servedLeaf(t, m)
	firstBundle := m.CABundle()

	// Step in resync periods until past the leaf's renewal time; each step
	// waits for Run to be parked on its timer.
	step := func(until time.Time) {
		t.Helper()
		for clk.Now().Before(until) {
			waitFor(t, clk.HasWaiters)
			clk.Step(time.Hour)
		}
	}
	renewAt := first.NotAfter.Add(-10 * 24 * time.Hour)
	step(renewAt.Add(time.Minute))
	waitFor(t, func() bool { return !servedLeaf(t, m).Equal(first) })
	verify(t, cs, m, "podid-webhook.podid-system.svc", clk.Now())
	if !bytes.Equal(m.CABundle(), firstBundle) {
		t.Error("leaf renewal changed the CA bundle")
	}
	if got := servedLeaf(t, m).NotAfter; !got.After(first.NotAfter) {
		t.Errorf("renewed NotAfter %v not after %v", got, first.NotAfter)
	}
}

func TestSyncRenewsCAKeepingOldTrusted(t *testing.T) {
	cs := fake.NewClientset(webhookConfig(), validatingConfig())
	clk := testingclock.NewFakeClock(t0)
	m := newManager(cs, clk)
	if _, err := m.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	oldCA := pki.ParseBundle(m.CABundle())
	if len(oldCA) != 1 {
		t.Fatalf("bundle has %d certs", len(oldCA))
	}
	// CA lives 300 days; it is renewed with less than 40 days left.
	clk.SetTime(oldCA[0].NotAfter.Add(-39 * 24 * time.Hour))
	if _, err := m.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	b := pki.ParseBundle(m.CABundle())
	if len(b) != 2 || b[0].Equal(oldCA[0]) || !b[1].Equal(oldCA[0]) {
		t.Fatalf("bundle after CA renewal: %d certs, want new CA then old", len(b))
	}
	verify(t, cs, m, "podid-webhook.podid-system.svc", clk.Now())
	// Once the old CA has expired it leaves the bundle.
	clk.SetTime(oldCA[0].NotAfter.Add(time.Hour))
	if _, err := m.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b := pki.ParseBundle(m.CABundle()); len(b) != 1 {
		t.Errorf("expired CA still in bundle (%d certs)", len(b))
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// The configuration may be applied after the webhook starts: Run serves
// the certificate at once and patches the caBundle on a quick retry.
func TestRunRetriesUntilWebhookConfigExists(t *testing.T) {
	cs := fake.NewClientset()
	clk := testingclock.NewFakeClock(t0)
	m := newManager(cs, clk)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, webhookConfig(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, validatingConfig(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, clk.HasWaiters)
	clk.Step(time.Second) // the first retry, well before Resync (1h)
	waitFor(t, func() bool {
		got, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mwc, metav1.GetOptions{})
		if err != nil || len(got.Webhooks[0].ClientConfig.CABundle) == 0 {
			return false
		}
		v, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, mwc, metav1.GetOptions{})
		return err == nil && len(v.Webhooks[0].ClientConfig.CABundle) > 0
	})
	verify(t, cs, m, "podid-webhook.podid-system.svc", clk.Now())
}
