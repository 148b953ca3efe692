package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/servingcert"
	"github.com/podid/podid/internal/tokenguard"
)

// Config is everything Run needs. Zero values get the defaults noted.
type Config struct {
	// Kube is the API server connection (ServiceAccount watch, pod reads
	// of the token guard, Secret, webhook configurations).
	Kube *rest.Config

	// ListenAddr is the HTTPS listen address (default ":9443").
	ListenAddr string
	// HealthAddr serves /healthz and /readyz, MetricsAddr /metrics, and
	// DebugAddr net/http/pprof, over plain HTTP; empty disables, equal
	// addresses share a listener.
	HealthAddr, MetricsAddr, DebugAddr string
	// MinTLSVersion defaults to TLS 1.2.
	MinTLSVersion uint16

	// AuthorityHost is AZURE_AUTHORITY_HOST (default DefaultAuthorityHost).
	AuthorityHost string
	// DefaultTenantID is AZURE_TENANT_ID for ServiceAccounts without a
	// tenant-id annotation.
	DefaultTenantID string
	// MissingServiceAccount defaults to MissingServiceAccountDeny.
	MissingServiceAccount MissingServiceAccountPolicy

	// Namespace and SecretName name the certificate Secret.
	Namespace  string
	SecretName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose caBundle
	// is kept in sync (empty: not managed).
	WebhookConfigName string
	// ValidatingWebhookConfigName is the ValidatingWebhookConfiguration of
	// the agent token guard whose caBundle is kept in sync (empty: not
	// managed). The guard is served at tokenguard.Path either way.
	ValidatingWebhookConfigName string
	// CertHosts are the certificate's DNS names / IPs, typically
	// <service>.<namespace>.svc.
	CertHosts []string
	// CertValidity and CertRotateBefore tune rotation (servingcert.Config).
	CertValidity, CertRotateBefore time.Duration

	// Registry receives the metrics and is served at /metrics (default:
	// daemon.NewRegistry()).
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	var errs []error
	if c.Kube == nil {
		errs = append(errs, errors.New("kube config is required"))
	}
	if c.Namespace == "" || c.SecretName == "" {
		errs = append(errs, errors.New("namespace and secret name are required"))
	}
	if len(c.CertHosts) == 0 {
		errs = append(errs, errors.New("at least one certificate host is required"))
	}
	if c.AuthorityHost != "" {
		u, err := url.Parse(c.AuthorityHost)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("authority host %q: must be an https URL", c.AuthorityHost))
		}
	}
	if c.MissingServiceAccount != "" {
		if _, err := ParseMissingServiceAccountPolicy(string(c.MissingServiceAccount)); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MinTLSVersion != 0 && c.MinTLSVersion != tls.VersionTLS12 && c.MinTLSVersion != tls.VersionTLS13 {
		errs = append(errs, fmt.Errorf("minimum TLS version %#x: want TLS 1.2 or 1.3", c.MinTLSVersion))
	}
	return errors.Join(errs...)
}

// Run serves the webhook until ctx ends: the ServiceAccount cache, the
// certificate manager, the HTTPS server (started once the cache has synced
// and a certificate exists) and the probe/metrics server. The first
// failure stops everything.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("webhook config: %w", err)
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":9443"
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := c.Registry
	if reg == nil {
		reg = daemon.NewRegistry()
	}
	metrics, err := NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	cs, err := kubernetes.NewForConfig(c.Kube)
	if err != nil {
		return fmt.Errorf("kube client: %w", err)
	}
	sas := NewServiceAccountCache(cs)
	certs := servingcert.New(servingcert.Config{
		Client:                      cs,
		Namespace:                   c.Namespace,
		SecretName:                  c.SecretName,
		WebhookConfigName:           c.WebhookConfigName,
		ValidatingWebhookConfigName: c.ValidatingWebhookConfigName,
		Hosts:                       c.CertHosts,
		Validity:                    c.CertValidity,
		RotateBefore:                c.CertRotateBefore,
		Logger:                      log.With("component", "servingcert"),
	})
	handler := NewHandler(HandlerConfig{
		Mutator:               Mutator{AuthorityHost: c.AuthorityHost, DefaultTenantID: c.DefaultTenantID},
		ServiceAccounts:       sas,
		MissingServiceAccount: c.MissingServiceAccount,
		Metrics:               metrics,
		Logger:                log,
	})
	guard := tokenguard.New(tokenguard.Config{Pods: tokenguard.LivePods{Client: cs}, Observer: metrics, Logger: log})
	server := NewServer(ServerConfig{
		Addr:           c.ListenAddr,
		Handler:        handler,
		TokenGuard:     guard,
		GetCertificate: certs.GetCertificate,
		MinTLSVersion:  c.MinTLSVersion,
		Logger:         log,
	})

	serveWhenReady := func(ctx context.Context) error {
		if err := sas.WaitForSync(ctx); err != nil {
			return ignoreCanceled(ctx, err)
		}
		if err := certs.WaitReady(ctx); err != nil {
			return ignoreCanceled(ctx, err)
		}
		return server.ListenAndServe(ctx)
	}
	return daemon.Run(ctx, daemon.Config{
		HealthAddr: c.HealthAddr, MetricsAddr: c.MetricsAddr, DebugAddr: c.DebugAddr, Registry: reg, Logger: log,
		Ready: func() error {
			if !sas.HasSynced() || !certs.Ready() {
				return errors.New("ServiceAccount cache or serving certificate pending")
			}
			return nil
		},
	}, sas.Run, certs.Run, serveWhenReady)
}

func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
