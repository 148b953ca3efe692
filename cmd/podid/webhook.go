package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/internal/tokenguard"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/workloadidentity"
)

type webhookOptions struct {
	serverOptions
	kubeconfig        string
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

	cfg webhook.Config // built by validate, but for Kube and Logger
}

func (o *webhookOptions) validate(cmd *cobra.Command) error {
	if err := o.serverOptions.validate(cmd); err != nil {
		return err // the config below needs these
	}
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
	hosts := o.certHosts
	if o.serviceName != "" {
		hosts = append([]string{o.serviceName + "." + o.namespace + ".svc", o.serviceName + "." + o.namespace + ".svc.cluster.local"}, hosts...)
	}
	o.cfg = webhook.Config{
		ListenAddr:                  o.listenAddr,
		HealthAddr:                  o.healthAddr,
		MetricsAddr:                 o.metricsAddr,
		DebugAddr:                   o.debugAddr,
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
	}
	// Everything but the API server connection, loaded by RunE: a
	// kubeconfig that cannot be read is a runtime error, as in every subcommand.
	check := o.cfg
	check.Kube = &rest.Config{}
	return check.Validate()
}

func newWebhookCommand() *cobra.Command {
	o := &webhookOptions{serverOptions: serverOptions{component: "webhook"}}
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Workload-identity mutating admission webhook (drop-in for azure.workload.identity/*) and the agent token guard",
		Args:  noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.cfg.Logger = o.logger()
			kube, err := restConfig(o.kubeconfig, 0, 0)
			if err != nil {
				return err
			}
			o.cfg.Kube = kube
			return webhook.Run(cmd.Context(), o.cfg)
		},
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "podid-system"
	}
	f := cmd.Flags()
	addKubeconfigFlag(f, &o.kubeconfig)
	o.serverOptions.addFlags(f, serverDefaults{
		listen: ":9443", listenHelp: "HTTPS listen address for AdmissionReviews (paths " + webhook.Path + " and " + tokenguard.Path + ")",
		health: ":8081", metricsFollowsHealth: true,
	})
	f.StringVar(&o.tlsMinVersion, "tls-min-version", "1.2", "minimum TLS version: 1.2 or 1.3")
	f.StringVar(&o.authorityHost, flagAuthority, webhook.DefaultAuthorityHost, "AZURE_AUTHORITY_HOST injected into pods (the local podid sts URL when running locally)")
	f.StringVar(&o.tenantID, flagTenantID, "", "AZURE_TENANT_ID for ServiceAccounts without the "+workloadidentity.TenantIDAnnotation+" annotation")
	f.StringVar(&o.missingSA, "missing-service-account", string(webhook.MissingServiceAccountDeny), "selected pod whose ServiceAccount is not found: deny or allow (admit unchanged)")
	f.StringVar(&o.namespace, "namespace", ns, "namespace of the certificate Secret and Service (default $POD_NAMESPACE)")
	f.StringVar(&o.secretName, "cert-secret", "podid-webhook-cert", "Secret holding the webhook's CA and serving certificate")
	f.StringVar(&o.serviceName, "service-name", "podid-webhook", "Service name; the certificate is issued for <service>.<namespace>.svc (empty: only --cert-host)")
	f.StringVar(&o.webhookConfigName, "webhook-config", "podid-webhook", "MutatingWebhookConfiguration whose caBundle is kept in sync (empty: not managed)")
	f.StringVar(&o.tokenGuardConfig, "token-guard-config", "podid-webhook", "ValidatingWebhookConfiguration of the agent token guard (path "+tokenguard.Path+") whose caBundle is kept in sync (empty: not managed)")
	f.StringSliceVar(&o.certHosts, "cert-host", nil, "extra DNS names or IPs for the serving certificate")
	f.DurationVar(&o.certValidity, "cert-validity", 90*24*time.Hour, "serving certificate lifetime (the CA lives 10 times as long)")
	f.DurationVar(&o.certRotateBefore, "cert-rotate-before", 30*24*time.Hour, "renew the certificate this long before it expires")
	alias(f, "addr", flagListenAddr)
	alias(f, "probe-addr", flagHealthAddr)
	alias(f, "authority-host", flagAuthority)
	return cmd
}
