package main

import (
	"errors"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/broker"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// brokerOptions are the flags of `podid broker`.
type brokerOptions struct {
	serverOptions
	kubeconfig         string
	tlsCertFile        string
	tlsKeyFile         string
	tokenFile          string
	agentSA            string
	authority          string
	authorityCAFile    string
	allowedAuthorities []string
	tenantID           string
	clusterWide        bool
	serveSecrets       bool
	maxCachedTokens    int
	reviewTTL          time.Duration
	accessTTL          time.Duration
}

func newBrokerCommand() *cobra.Command {
	o := &brokerOptions{serverOptions: serverOptions{component: "broker"}}
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Central token broker: one federated credential per identity, for any number of namespaces",
		Long: `podid broker exchanges its own service-account token at the identity provider on
behalf of pods, so that an identity needs exactly one federated credential (subject:
the broker's service account) however many namespaces and service accounts use it.
Agents present the asking pod's pod-bound token (audience ` + broker.Audience + `); the broker
validates it (TokenReview, live pod read), decides with the agent's rules (v1 bindings,
v2 service-account annotation) and requires the RBAC grant of AKS identity bindings
(verb ` + broker.AccessVerb + ` on resource <client-id> in API group ` + broker.AccessGroup + `).
See docs/broker.md.`,
		Args: noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			errs := []error{o.serverOptions.validate(cmd)}
			if o.tlsCertFile == "" || o.tlsKeyFile == "" {
				errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required"))
			}
			if o.reviewTTL < 0 || o.accessTTL < 0 {
				errs = append(errs, errors.New("--review-ttl and --access-ttl must not be negative"))
			}
			return usage(errs...)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := o.logger()
			rc, err := restConfig(o.kubeconfig, 100, 200)
			if err != nil {
				return err
			}
			rc.UserAgent = "podid-broker"
			hc, err := providerClient(o.authorityCAFile)
			if err != nil {
				return err
			}
			return broker.Run(cmd.Context(), broker.Config{
				RESTConfig: rc, ListenAddr: o.listenAddr, TLSCertFile: o.tlsCertFile, TLSKeyFile: o.tlsKeyFile, TokenFile: o.tokenFile, AgentServiceAccount: o.agentSA,
				HealthAddr: o.healthAddr, MetricsAddr: o.metricsAddr, DebugAddr: o.debugAddr,
				Authority: o.authority, AllowedAuthorities: o.allowedAuthorities, ProviderHTTPClient: hc,
				DefaultTenantID: o.tenantID, ClusterWide: o.clusterWide, ServeSecretIdentities: o.serveSecrets, MaxCachedTokens: o.maxCachedTokens,
				ReviewTTL: o.reviewTTL, AccessTTL: o.accessTTL, Logger: log,
			})
		},
	}
	f := cmd.Flags()
	addKubeconfigFlag(f, &o.kubeconfig)
	o.serverOptions.addFlags(f, serverDefaults{listen: ":8443", listenHelp: "HTTPS listen address for agents", health: ":9103", metricsFollowsHealth: true})
	f.StringVar(&o.tlsCertFile, "tls-cert-file", "", "PEM serving certificate (re-read when it changes)")
	f.StringVar(&o.tlsKeyFile, "tls-key-file", "", "PEM private key of the serving certificate")
	f.StringVar(&o.tokenFile, "token-file", workloadidentity.TokenFile, "the broker's own projected service-account token (audience "+workloadidentity.TokenAudience+"): the assertion of every exchange")
	f.StringVar(&o.agentSA, "agent-service-account", "", "the agents' service account, namespace/name (default podid-agent in the broker's namespace): a request must carry its pod-bound token for audience "+broker.AgentAudience+" in header "+broker.AgentHeader+", and the pod asked for must run on that agent's node")
	f.StringVar(&o.authority, flagAuthority, token.DefaultAuthority, "identity provider base URL (Entra ID, or podid sts)")
	f.StringVar(&o.authorityCAFile, "authority-ca-file", "", "PEM CA bundle trusted for the identity provider, added to the system roots (podid sts's CA)")
	f.StringSliceVar(&o.allowedAuthorities, "allowed-authority", nil, "further authorities an AzureIdentity's adEndpoint may name (repeatable)")
	f.StringVar(&o.tenantID, flagTenantID, os.Getenv("AZURE_TENANT_ID"), "tenant for identities that name none (default $AZURE_TENANT_ID)")
	f.BoolVar(&o.clusterWide, flagClusterWide, false, "let bindings select pods in other namespaces (must match the agents)")
	f.BoolVar(&o.serveSecrets, "serve-secret-identities", false, "serve type 1/2 identities (client secret, certificate) to agents, reading their Secrets (needs the chart's broker.secretIdentities RBAC)")
	f.IntVar(&o.maxCachedTokens, "max-cached-tokens", 10000, "bound on cached tokens")
	f.DurationVar(&o.reviewTTL, "review-ttl", 5*time.Minute, "longest a pod token's validation (TokenReview + pod read) is remembered")
	f.DurationVar(&o.accessTTL, "access-ttl", 30*time.Second, "how long an RBAC answer is remembered (a revoked grant takes effect within it)")
	return cmd
}
