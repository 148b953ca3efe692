package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podid/podid/internal/webhook"
)

type webhookOptions struct {
	kubeconfig        string
	addr              string
	probeAddr         string
	tlsMinVersion     string
	authorityHost     string
	tenantID          string
	missingSA         string
	namespace         string
	secretName        string
	serviceName       string
	webhookConfigName string
	tokenGuardConfig  string
	certHosts         []string
	certValidity      time.Duration
	certRotateBefore  time.Duration
	logLevel          string

	cfg webhook.Config // built by validate
}

func (o *webhookOptions) validate() error {
	var minTLS uint16
	switch o.tlsMinVersion {
	case "1.2":
		minTLS = tls.VersionTLS12
	case "1.3":
		minTLS = tls.VersionTLS13
	default:
		return fmt.Errorf("--tls-min-version %q: want 1.2 or 1.3", o.tlsMinVersion)
	}
	policy, err := webhook.ParseMissingServiceAccountPolicy(o.missingSA)
	if err != nil {
		return fmt.Errorf("--missing-service-account: %w", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hosts := o.certHosts
	if o.serviceName != "" {
		hosts = append([]string{o.serviceName + "." + o.namespace + ".svc", o.serviceName + "." + o.namespace + ".svc.cluster.local"}, hosts...)
	}
	kube, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
		&clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kube config: %w", err)
	}
	o.cfg = webhook.Config{
		Kube:                        kube,
		Addr:                        o.addr,
		ProbeAddr:                   o.probeAddr,
		MinTLSVersion:               minTLS,
		AuthorityHost:               o.authorityHost,
		DefaultTenantID:             o.tenantID,
		MissingServiceAccount:       policy,
		Namespace:                   o.namespace,
		SecretName:                  o.secretName,
		WebhookConfigName:           o.webhookConfigName,
		ValidatingWebhookConfigName: o.tokenGuardConfig,
		CertHosts:                   hosts,
		CertValidity:                o.certValidity,
		CertRotateBefore:            o.certRotateBefore,
		Logger:                      slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	return o.cfg.Validate()
}

func newWebhookCommand() *cobra.Command {
	o := &webhookOptions{}
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Workload-identity mutating admission webhook (drop-in for azure.workload.identity/*) and the agent token guard",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.validate(); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return webhook.Run(cmd.Context(), o.cfg)
		},
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "podid-system"
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig path (default: in-cluster, then $KUBECONFIG / ~/.kube/config)")
	f.StringVar(&o.addr, "addr", ":9443", "HTTPS listen address for AdmissionReviews (path "+webhook.Path+")")
	f.StringVar(&o.probeAddr, "probe-addr", ":8081", "plain HTTP listen address for /healthz, /readyz and /metrics")
	f.StringVar(&o.tlsMinVersion, "tls-min-version", "1.2", "minimum TLS version: 1.2 or 1.3")
	f.StringVar(&o.authorityHost, "authority-host", webhook.DefaultAuthorityHost, "AZURE_AUTHORITY_HOST injected into pods (the local podid sts URL when running locally)")
	f.StringVar(&o.tenantID, "tenant-id", "", "AZURE_TENANT_ID for ServiceAccounts without the "+webhook.TenantIDAnnotation+" annotation")
	f.StringVar(&o.missingSA, "missing-service-account", string(webhook.MissingServiceAccountDeny), "selected pod whose ServiceAccount is not found: deny or allow (admit unchanged)")
	f.StringVar(&o.namespace, "namespace", ns, "namespace of the certificate Secret and Service (default $POD_NAMESPACE)")
	f.StringVar(&o.secretName, "cert-secret", "podid-webhook-cert", "Secret holding the webhook's CA and serving certificate")
	f.StringVar(&o.serviceName, "service-name", "podid-webhook", "Service name; the certificate is issued for <service>.<namespace>.svc (empty: only --cert-host)")
	f.StringVar(&o.webhookConfigName, "webhook-config", "podid-webhook", "MutatingWebhookConfiguration whose caBundle is kept in sync (empty: not managed)")
	f.StringVar(&o.tokenGuardConfig, "token-guard-config", "podid-webhook", "ValidatingWebhookConfiguration of the agent token guard (path "+webhook.TokenGuardPath+") whose caBundle is kept in sync (empty: not managed)")
	f.StringSliceVar(&o.certHosts, "cert-host", nil, "extra DNS names or IPs for the serving certificate")
	f.DurationVar(&o.certValidity, "cert-validity", 90*24*time.Hour, "serving certificate lifetime (the CA lives 10 times as long)")
	f.DurationVar(&o.certRotateBefore, "cert-rotate-before", 30*24*time.Hour, "renew the certificate this long before it expires")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
