package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/broker"
	"github.com/podid/podid/internal/intercept"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// agentOptions are the flags of `podid agent`.
type agentOptions struct {
	serverOptions
	nodeName           string
	kubeconfig         string
	authority          string
	authorityCAFile    string
	allowedAuthorities []string
	tenantID           string
	clusterWide        bool
	serveSecrets       bool
	confirmTTL         time.Duration
	maxCachedTokens    int
	brokerURL          string
	brokerCAFile       string
	brokerAgentToken   string
	brokerClientIDs    []string
	brokerSecrets      bool
	podTokenSocket     string

	interceptOptions
}

// interceptOptions are the interception flags, shared with `podid agent uninstall-interception`.
type interceptOptions struct {
	enabled  bool
	podCIDRs []string
	hostIP   string
	port     int
	interval time.Duration
	iptables string
	hostRoot string
	// The per-pod anti-spoofing guard (always on with --intercept).
	ebtables      string
	cniResultsDir string
}

func (o *interceptOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&o.podCIDRs, "pod-cidr", nil, "this node's pod CIDR(s) whose traffic to 169.254.169.254:80 is redirected (repeatable)")
	f.StringVar(&o.hostIP, "host-ip", os.Getenv("HOST_IP"), "the node address the redirected traffic goes to (default $HOST_IP)")
	f.IntVar(&o.port, "port", 2579, "the agent's IMDS port (listener and redirect target)")
	f.StringVar(&o.iptables, "iptables", "iptables", "iptables binary (iptables, iptables-nft or iptables-legacy; must match the node's backend); also for the anti-spoofing rules of routed pods")
	f.StringVar(&o.ebtables, "ebtables", "ebtables", "ebtables binary for the per-pod anti-spoofing rules (ebtables or ebtables-nft)")
	f.StringVar(&o.cniResultsDir, "cni-results-dir", intercept.DefaultCNIResultsDir, "the node's CNI results cache (libcni's), as seen on the node: it ties each pod's address to its interface")
	f.StringVar(&o.hostRoot, "host-root", "", "run iptables chrooted into this directory (the node's / mounted into the container), so the node's own binary and backend are used")
}

func (o *interceptOptions) build(log *slog.Logger) (*intercept.Interceptor, error) {
	host, err := netip.ParseAddr(o.hostIP)
	if err != nil {
		return nil, fmt.Errorf("--host-ip %q: %w", o.hostIP, err)
	}
	var cidrs []netip.Prefix
	for _, c := range o.podCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("--pod-cidr %q: %w", c, err)
		}
		cidrs = append(cidrs, p)
	}
	cfg := intercept.Config{
		PodCIDRs: cidrs, Target: netip.AddrPortFrom(host, uint16(o.port)), Interval: o.interval,
		IPTables: o.iptables, Logger: log,
	}
	if o.hostRoot != "" {
		cfg.Exec = intercept.ChrootExec(o.hostRoot)
	}
	return intercept.New(cfg)
}

// buildGuard assembles the per-pod anti-spoofing guard; it runs the same
// way as iptables (chrooted into --host-root; --ebtables for bridged pods,
// --iptables for routed ones) and reads the CNI records under --host-root.
func (o *interceptOptions) buildGuard(log *slog.Logger) (*intercept.Guard, error) {
	cfg := intercept.GuardConfig{EBTables: o.ebtables, IPTables: o.iptables, ResultsDir: filepath.Join("/", o.hostRoot, o.cniResultsDir), Logger: log}
	if o.hostRoot != "" {
		cfg.Exec = intercept.ChrootExec(o.hostRoot)
	}
	return intercept.NewGuard(cfg)
}

func newAgentCommand() *cobra.Command {
	o := &agentOptions{serverOptions: serverOptions{component: "agent"}}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Node agent: serves IMDS tokens to the pods on this node",
		Long: `podid agent answers http://169.254.169.254/metadata/identity/oauth2/token for the
pods on its node. It resolves the caller's IP to exactly one running pod, decides
which identity the pod may use (AzureIdentityBinding or workload-identity service
account) and obtains the token by federation with a service-account token bound to
that pod, or with the identity's secret or certificate. No identity is attached to
the node. See docs/agent.md.`,
		Args: noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return o.validate(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME, from the downward API)")
	addKubeconfigFlag(f, &o.kubeconfig)
	o.serverOptions.addFlags(f, serverDefaults{
		listenHelp: "IMDS listen address (default <host-ip>:<port>, or :<port> without --host-ip)",
		health:     ":9102", metricsFollowsHealth: true,
	})
	f.StringVar(&o.authority, flagAuthority, token.DefaultAuthority, "identity provider base URL (Entra ID, or podid sts, e.g. https://sts.podid.svc:8443)")
	f.StringVar(&o.authorityCAFile, "authority-ca-file", "", "PEM CA bundle trusted for the identity provider, added to the system roots (podid sts's CA)")
	f.StringSliceVar(&o.allowedAuthorities, "allowed-authority", nil, "further authorities an AzureIdentity's adEndpoint may name (repeatable)")
	f.StringVar(&o.tenantID, flagTenantID, os.Getenv("AZURE_TENANT_ID"), "tenant for identities that name none (default $AZURE_TENANT_ID)")
	f.BoolVar(&o.clusterWide, flagClusterWide, false, "let bindings select pods in other namespaces (legacy AAD Pod Identity behaviour)")
	f.BoolVar(&o.serveSecrets, "serve-secret-identities", false, "serve type 1/2 identities (needs the opt-in RBAC to read Secrets)")
	f.DurationVar(&o.confirmTTL, "confirm-ttl", time.Second, "how long a live API-server confirmation that a pod still owns its IP stays valid (bounds the IP-reuse window)")
	f.IntVar(&o.maxCachedTokens, "max-cached-tokens", 10000, "bound on cached tokens")
	f.StringVar(&o.brokerURL, "broker-url", "", "the podid broker (https://podid-broker.<namespace>.svc:8443); empty: no broker")
	f.StringVar(&o.brokerCAFile, "broker-ca-file", "", "PEM CA bundle trusted for the broker")
	f.StringVar(&o.brokerAgentToken, "broker-agent-token-file", broker.DefaultAgentTokenFile, "the agent's own projected token for audience "+broker.AgentAudience+", sent to the broker with every pod token (the broker then accepts only pods of this agent's node)")
	f.StringSliceVar(&o.brokerClientIDs, "broker-client-id", nil, "identity (client id) obtained through the broker instead of per-pod federation (repeatable); pods annotated "+workloadidentity.UseIdentityBindingAnnotation+"=true use it for their service account's identity too")
	f.BoolVar(&o.brokerSecrets, "broker-secret-identities", false, "obtain type 1/2 identities (client secret, certificate) through the broker, which reads their Secrets: the agent then needs no Secret access")
	f.StringVar(&o.podTokenSocket, "pod-token-socket", "", "serve podid csi-provider's usePodIdentity mounts on this unix socket (mounted only into the provider; empty disables)")
	f.BoolVar(&o.enabled, "intercept", true, "install and keep the iptables rules redirecting pod traffic for 169.254.169.254:80 to the agent")
	f.DurationVar(&o.interval, "intercept-interval", 30*time.Second, "how often the interception rules are re-checked")
	o.interceptOptions.addFlags(cmd)
	alias(f, "listen", flagListenAddr)
	alias(f, "cluster-wide-bindings", flagClusterWide)
	cmd.AddCommand(newUninstallInterceptionCommand())
	return cmd
}

func (o *agentOptions) validate(cmd *cobra.Command) error {
	errs := []error{o.serverOptions.validate(cmd)}
	if o.nodeName == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	if o.port <= 0 || o.port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d out of range", o.port))
	}
	if o.enabled {
		if o.hostIP == "" {
			errs = append(errs, errors.New("--host-ip (or $HOST_IP) is required with --intercept"))
		}
		if len(o.podCIDRs) == 0 {
			errs = append(errs, errors.New("--pod-cidr is required with --intercept"))
		}
	}
	if o.confirmTTL < 0 {
		errs = append(errs, errors.New("--confirm-ttl must not be negative"))
	}
	if o.brokerURL != "" && !strings.HasPrefix(o.brokerURL, "https://") {
		errs = append(errs, fmt.Errorf("--broker-url %q must be an https:// URL", o.brokerURL))
	}
	if (len(o.brokerClientIDs) > 0 || o.brokerSecrets) && o.brokerURL == "" {
		errs = append(errs, errors.New("--broker-client-id and --broker-secret-identities need --broker-url"))
	}
	if o.brokerSecrets && o.serveSecrets {
		errs = append(errs, errors.New("--broker-secret-identities and --serve-secret-identities exclude each other: the broker or the agent reads the Secrets, not both"))
	}
	return usage(errs...)
}

func (o *agentOptions) config() (agent.Config, error) {
	log := o.logger()
	rc, err := restConfig(o.kubeconfig, 50, 100)
	if err != nil {
		return agent.Config{}, err
	}
	rc.UserAgent = "podid-agent"
	hc, err := providerClient(o.authorityCAFile)
	if err != nil {
		return agent.Config{}, err
	}
	listen := o.listenAddr
	if listen == "" {
		listen = net.JoinHostPort(o.hostIP, strconv.Itoa(o.port))
	}
	cfg := agent.Config{
		NodeName: o.nodeName, RESTConfig: rc, ListenAddr: listen, HealthAddr: o.healthAddr, MetricsAddr: o.metricsAddr, DebugAddr: o.debugAddr,
		Authority: o.authority, AllowedAuthorities: o.allowedAuthorities, ProviderHTTPClient: hc,
		DefaultTenantID: o.tenantID, ClusterWide: o.clusterWide, ServeSecretIdentities: o.serveSecrets,
		ConfirmTTL: o.confirmTTL, MaxCachedTokens: o.maxCachedTokens, PodTokenSocket: o.podTokenSocket, Logger: log,
	}
	if o.brokerURL != "" {
		bhc, err := caClient("broker-ca-file", o.brokerCAFile)
		if err != nil {
			return agent.Config{}, err
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return agent.Config{}, err
		}
		bc, err := broker.NewClient(broker.ClientConfig{URL: o.brokerURL, HTTPClient: bhc, Tokens: token.KubeTokenRequester{Client: cs}, AgentTokenFile: o.brokerAgentToken})
		if err != nil {
			return agent.Config{}, usageError{err}
		}
		cfg.Broker, cfg.BrokerClientIDs, cfg.BrokerSecretIdentities = bc, o.brokerClientIDs, o.brokerSecrets
	}
	if o.enabled {
		ic, err := o.interceptOptions.build(log)
		if err != nil {
			return agent.Config{}, usageError{err}
		}
		cfg.Interceptor = ic
		if cfg.Guard, err = o.interceptOptions.buildGuard(log); err != nil {
			return agent.Config{}, usageError{err}
		}
	}
	return cfg, nil
}

// providerClient trusts the system roots plus caFile (of --authority-ca-file).
func providerClient(caFile string) (*http.Client, error) {
	return caClient("authority-ca-file", caFile)
}

// caClient trusts the system roots plus caFile, given by --flag.
func caClient(flag, caFile string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		if len(bytes.TrimSpace(pem)) == 0 {
			// An empty file (the default ConfigMap) means system roots only.
			return &http.Client{Transport: t, Timeout: 30 * time.Second}, nil
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--%s %s holds no PEM certificate", flag, caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}, nil
}

func newUninstallInterceptionCommand() *cobra.Command {
	o := &interceptOptions{}
	cmd := &cobra.Command{
		Use:   "uninstall-interception",
		Short: "Remove the iptables and ebtables rules the agent installed (pods then reach whatever answers at 169.254.169.254)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.hostIP == "" {
				o.hostIP = "127.0.0.1" // the target does not matter for removal
			}
			if len(o.podCIDRs) == 0 {
				o.podCIDRs = []string{"0.0.0.0/0"}
			}
			ic, err := o.build(slog.Default())
			if err != nil {
				return usageError{err}
			}
			g, err := o.buildGuard(slog.Default())
			if err != nil {
				return usageError{err}
			}
			return errors.Join(ic.Uninstall(cmd.Context()), g.Uninstall(cmd.Context()))
		},
	}
	o.addFlags(cmd)
	return cmd
}
