package servingcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/podid/podid/internal/pki"
)

// Config assembles a Manager.
type Config struct {
	Client kubernetes.Interface
	// Namespace and SecretName name the Secret holding CA and certificate.
	Namespace, SecretName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks'
	// caBundle is kept equal to the CA bundle; empty means none.
	WebhookConfigName string
	// ValidatingWebhookConfigName is the same for a
	// ValidatingWebhookConfiguration; empty means none.
	ValidatingWebhookConfigName string
	// Hosts are the DNS names and IP addresses the certificate is for.
	Hosts []string
	// Validity of a serving certificate (default 90 days); the CA lives
	// CAValidityFactor times as long.
	Validity time.Duration
	// RotateBefore renews a certificate this long before it expires
	// (default Validity/3). A CA is renewed when it has less than
	// Validity + RotateBefore left.
	RotateBefore time.Duration
	// Resync re-reads the Secret and re-checks the caBundle this often
	// (default 1 minute); failures are retried with backoff from 1s up to
	// this period.
	Resync time.Duration
	Clock  clock.Clock  // default real time
	Logger *slog.Logger // optional
}

// CAValidityFactor is how many serving-certificate lifetimes a CA lasts.
const CAValidityFactor = 10

// Manager keeps the serving certificate. It is safe for concurrent use.
type Manager struct {
	cfg Config

	ready chan struct{} // closed when a certificate is first served

	mu     sync.RWMutex // protects cert and bundle
	cert   *tls.Certificate
	bundle []byte
}

// New assembles a Manager; it does no I/O.
func New(c Config) *Manager {
	if c.Validity <= 0 {
		c.Validity = 90 * 24 * time.Hour
	}
	if c.RotateBefore <= 0 || c.RotateBefore >= c.Validity {
		c.RotateBefore = c.Validity / 3
	}
	if c.Resync <= 0 {
		c.Resync = time.Minute
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: c, ready: make(chan struct{})}
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cert == nil {
		return nil, errors.New("serving certificate not ready")
	}
	return m.cert, nil
}

// Ready reports whether a certificate is being served.
func (m *Manager) Ready() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cert != nil
}

// CABundle returns the PEM CA bundle clients should trust.
func (m *Manager) CABundle() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.bundle)
}

// Run keeps the certificate until ctx ends. Errors talking to the API
// server are logged and retried; Run returns nil when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	failures := 0
	for {
		next, err := m.Sync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Back off from 1s up to Resync: a configuration applied just
			// after the Deployment is picked up quickly.
			next = min(m.cfg.Resync, time.Second<<min(failures, 10))
			failures++
			m.cfg.Logger.Error("serving certificate sync failed; retrying", "err", err, "retryIn", next)
		} else {
			failures = 0
		}
		t := m.cfg.Clock.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// Sync makes the Secret, the webhook configuration and the served
// certificate current, and returns when to sync next.
func (m *Manager) Sync(ctx context.Context) (time.Duration, error) {
	for attempt := 0; ; attempt++ {
		next, err := m.sync(ctx)
		if errors.Is(err, errConflict) && attempt < 5 {
			continue // another replica wrote the Secret: re-read it
		}
		return next, err
	}
}

var errConflict = errors.New("secret changed concurrently")

func (m *Manager) sync(ctx context.Context) (time.Duration, error) {
	now := m.cfg.Clock.Now()
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	secret, err := secrets.Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		secret = nil
	case err != nil:
		return 0, fmt.Errorf("get secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
	}
	var data map[string][]byte
	if secret != nil {
		data = secret.Data
	}

	st, changed, err := m.renew(data, now)
	if err != nil {
		return 0, err
	}
	if changed {
		if err := m.write(ctx, secret, st); err != nil {
			return 0, err
		}
		m.cfg.Logger.Info("serving certificate issued", "notAfter", st.leaf.Cert.NotAfter, "caNotAfter", st.ca.Cert.NotAfter)
	}
	pair, err := tls.X509KeyPair(st.leaf.CertPEM, st.leaf.KeyPEM)
	if err != nil {
		return 0, fmt.Errorf("load serving certificate: %w", err)
	}
	pair.Leaf = st.leaf.Cert

	if err := m.syncCABundle(ctx, st.bundle); err != nil {
		// Serve anyway on bootstrap (nothing else could be served); never
		// switch away from a trusted certificate to one that may not be.
		if !m.Ready() {
			m.set(&pair, st.bundle)
		}
		return 0, err
	}
	m.set(&pair, st.bundle)

	next := min(
		st.leaf.Cert.NotAfter.Add(-m.cfg.RotateBefore).Sub(now),
		st.ca.Cert.NotAfter.Add(-m.cfg.Validity-m.cfg.RotateBefore).Sub(now),
		m.cfg.Resync,
	)
	return max(next, 0), nil
}

func (m *Manager) set(c *tls.Certificate, bundle []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cert == nil {
		close(m.ready)
	}
	m.cert, m.bundle = c, bundle
}

// WaitReady blocks until a certificate is served or ctx ends.
func (m *Manager) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("serving certificate not ready: %w", context.Cause(ctx))
	}
}

type state struct {
	ca     *pki.KeyPair
	leaf   *pki.KeyPair
	bundle []byte
}

// renew loads the state from Secret data and renews what is missing,
// invalid or due; changed reports whether the Secret must be written.
func (m *Manager) renew(data map[string][]byte, now time.Time) (st state, changed bool, err error) {
	ca, caErr := pki.ParsePair(data[KeyCABundle], data[KeyCAKey]) // the first bundle entry is the current CA
	trusted := pki.ParseBundle(data[KeyCABundle])
	if caErr != nil || !ca.Cert.IsCA || now.Before(ca.Cert.NotBefore) ||
		!now.Before(ca.Cert.NotAfter.Add(-m.cfg.Validity-m.cfg.RotateBefore)) {
		if ca, err = newCA(now, CAValidityFactor*m.cfg.Validity); err != nil {
			return st, false, fmt.Errorf("new CA: %w", err)
		}
		trusted = append([]*x509.Certificate{ca.Cert}, trusted...)
		changed = true
	}
	// Keep only CAs still valid, the current one first.
	kept := []*x509.Certificate{ca.Cert}
	for _, c := range trusted {
		if !c.Equal(ca.Cert) && c.IsCA && now.Before(c.NotAfter) {
			kept = append(kept, c)
		}
	}
	st.ca = ca
	st.bundle = pki.EncodeBundle(kept)
	if !bytes.Equal(st.bundle, data[KeyCABundle]) {
		changed = true
	}

	leaf, leafErr := pki.ParsePair(data[KeyCert], data[KeyKey])
	if leafErr != nil || leaf.Cert.CheckSignatureFrom(ca.Cert) != nil || !pki.HostsMatch(leaf.Cert, m.cfg.Hosts) ||
		now.Before(leaf.Cert.NotBefore) || !now.Before(leaf.Cert.NotAfter.Add(-m.cfg.RotateBefore)) {
		if leaf, err = newLeaf(ca, m.cfg.Hosts, now, m.cfg.Validity); err != nil {
			return st, false, fmt.Errorf("new serving certificate: %w", err)
		}
		changed = true
	}
	st.leaf = leaf
	return st, changed, nil
}

func (m *Manager) write(ctx context.Context, secret *corev1.Secret, st state) error {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	data := map[string][]byte{
		KeyCABundle: st.bundle,
		KeyCAKey:    st.ca.KeyPEM,
		KeyCert:     st.leaf.CertPEM,
		KeyKey:      st.leaf.KeyPEM,
	}
	var err error
	if secret == nil {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: m.cfg.SecretName, Namespace: m.cfg.Namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "podid-webhook"}},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}, metav1.CreateOptions{FieldManager: "podid-webhook"})
	} else {
		s := secret.DeepCopy()
		s.Data = data
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{FieldManager: "podid-webhook"})
	}
	switch {
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		return errConflict
	case err != nil:
		return fmt.Errorf("write secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
	}
	return nil
}

// syncCABundle keeps the caBundle of every webhook in the configured
// mutating and validating configurations equal to bundle.
func (m *Manager) syncCABundle(ctx context.Context, bundle []byte) error {
	if name := m.cfg.WebhookConfigName; name != "" {
		api := m.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
		mwc, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get MutatingWebhookConfiguration %s: %w", name, err)
		}
		names, bundles := make([]string, len(mwc.Webhooks)), make([][]byte, len(mwc.Webhooks))
		for i, w := range mwc.Webhooks {
			names[i], bundles[i] = w.Name, w.ClientConfig.CABundle
		}
		if err := m.patchCABundle(ctx, "MutatingWebhookConfiguration", name, names, bundles, bundle, func(ctx context.Context, patch []byte) error {
			_, err := api.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "podid-webhook"})
			return err
		}); err != nil {
			return err
		}
	}
	if name := m.cfg.ValidatingWebhookConfigName; name != "" {
		api := m.cfg.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
		vwc, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get ValidatingWebhookConfiguration %s: %w", name, err)
		}
		names, bundles := make([]string, len(vwc.Webhooks)), make([][]byte, len(vwc.Webhooks))
		for i, w := range vwc.Webhooks {
			names[i], bundles[i] = w.Name, w.ClientConfig.CABundle
		}
		return m.patchCABundle(ctx, "ValidatingWebhookConfiguration", name, names, bundles, bundle, func(ctx context.Context, patch []byte) error {
			_, err := api.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "podid-webhook"})
			return err
		})
	}
	return nil
}

// patchCABundle sends one JSON patch setting the caBundle of every webhook
// (by index, names[i]) whose current bundle differs; the patch tests each
// webhook's name so a concurrent edit that reorders webhooks fails instead
// of patching the wrong one.
func (m *Manager) patchCABundle(ctx context.Context, kind, name string, names []string, current [][]byte, bundle []byte, send func(context.Context, []byte) error) error {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	for i := range names {
		if bytes.Equal(current[i], bundle) {
			continue
		}
		p := "/webhooks/" + strconv.Itoa(i)
		ops = append(ops, op{"test", p + "/name", names[i]}, op{"add", p + "/clientConfig/caBundle", bundle})
	}
	if len(ops) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("encode caBundle patch: %w", err)
	}
	if err := send(ctx, patch); err != nil {
		return fmt.Errorf("patch caBundle of %s %s: %w", kind, name, err)
	}
	m.cfg.Logger.Info("caBundle updated", "kind", kind, "name", name)
	return nil
}
