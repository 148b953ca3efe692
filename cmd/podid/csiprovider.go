package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/csiprovider"
	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/sts/keyvault"
)

// csiProviderOptions are the flags of `podid csi-provider`.
type csiProviderOptions struct {
	serverOptions
	providerDir     string
	defaultCloud    string
	localCloud      string
	authority       string
	authorityCAFile string
	vaultDNSSuffix  string
	vaultAddress    string
	concurrency     int
	podIdentitySock string
}

func (o *csiProviderOptions) validate(cmd *cobra.Command) error {
	var errs []error
	if err := o.serverOptions.validate(cmd); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(o.providerDir) {
		errs = append(errs, fmt.Errorf("--provider-dir %q: want an absolute path", o.providerDir))
	}
	if o.vaultDNSSuffix != "" {
		if !strings.HasPrefix(o.authority, "https://") {
			errs = append(errs, fmt.Errorf("--%s %q: the local cloud needs an https identity provider URL", flagAuthority, o.authority))
		}
		if strings.HasPrefix(o.vaultDNSSuffix, ".") || strings.Contains(o.vaultDNSSuffix, "/") {
			errs = append(errs, fmt.Errorf("--vault-dns-suffix %q: want a DNS suffix such as vault.podid.local", o.vaultDNSSuffix))
		}
	} else if o.vaultAddress != "" {
		errs = append(errs, errors.New("--vault-address needs --vault-dns-suffix"))
	}
	if o.vaultAddress != "" {
		if err := checkAddr("vault-address", o.vaultAddress); err != nil {
			errs = append(errs, err)
		}
	}
	if o.concurrency < 1 || o.concurrency > 64 {
		errs = append(errs, fmt.Errorf("--concurrency %d: want 1 to 64", o.concurrency))
	}
	return errors.Join(errs...)
}

// clouds are the public clouds and, with --vault-dns-suffix, podid's local one.
func (o *csiProviderOptions) clouds() []csiprovider.Cloud {
	cs := append([]csiprovider.Cloud(nil), csiprovider.PublicClouds...)
	if o.vaultDNSSuffix != "" {
		cs = append(cs, csiprovider.Cloud{Name: o.localCloud, VaultDNSSuffix: o.vaultDNSSuffix, Authority: o.authority})
	}
	return cs
}

// transport carries the identity provider's and the vault's traffic:
// --authority-ca-file trusted, and names under the local vault suffix
// connected to --vault-address (the local vault has no DNS records; TLS
// still checks the vault's own name).
func (o *csiProviderOptions) transport() (*http.Client, error) {
	hc, err := providerClient(o.authorityCAFile)
	if err != nil {
		return nil, err
	}
	if o.vaultAddress == "" {
		return hc, nil
	}
	hc.Transport.(*http.Transport).DialContext = keyvault.Dialer(o.vaultDNSSuffix, o.vaultAddress)
	return hc, nil
}

func newCSIProviderCommand() *cobra.Command {
	o := &csiProviderOptions{serverOptions: serverOptions{component: "csi-provider"}}
	cmd := &cobra.Command{
		Use:   "csi-provider",
		Short: "Secrets Store CSI driver provider: Key Vault secrets mounted with the mounting pod's identity",
		Long: `podid csi-provider serves the Secrets Store CSI driver's provider API on
<provider-dir>/azure.sock, so SecretProviderClasses written for the Azure Key Vault
provider (provider: azure) apply unchanged. Every mount uses the mounting pod's own
identity: clientID or useVMManagedIdentity + userAssignedIdentityID by exchanging the
pod's ServiceAccount token that the driver passes (the identity must have a federated
credential for the pod's ServiceAccount: for useVMManagedIdentity that is the
administrator's grant). See docs/csi.md.`,
		Args: noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := o.logger()
			hc, err := o.transport()
			if err != nil {
				return err
			}
			creds := &csiprovider.PodCredentials{Transport: hc}
			if o.podIdentitySock != "" {
				creds.PodIdentity = &csiprovider.AgentPodIdentities{Socket: o.podIdentitySock}
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			srv, err := csiprovider.New(csiprovider.Config{
				Clouds: o.clouds(), DefaultCloud: o.defaultCloud,
				Credentials: creds,
				Transport:   hc, Concurrency: o.concurrency,
				Logger: log, Registerer: reg,
			})
			if err != nil {
				return usageError{err}
			}
			sock := filepath.Join(o.providerDir, csiprovider.SocketName)
			return daemon.Run(cmd.Context(), daemon.Config{
				HealthAddr: o.healthAddr, MetricsAddr: o.metricsAddr, DebugAddr: o.debugAddr,
				Registry: reg, Logger: log,
			}, func(ctx context.Context) error { return srv.Serve(ctx, sock) })
		},
	}
	f := cmd.Flags()
	o.serverOptions.addFlags(f, serverDefaults{health: "127.0.0.1:8898", metricsFollowsHealth: true})
	f.StringVar(&o.providerDir, "provider-dir", "/var/run/secrets-store-csi-providers", "the driver's providers directory (its --provider-volume); the socket is azure.sock in it")
	f.StringVar(&o.defaultCloud, "default-cloud", "AzurePublicCloud", "cloud of SecretProviderClasses that set no cloudName (AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud or --local-cloud)")
	f.StringVar(&o.localCloud, "local-cloud", "PodidLocalCloud", "cloudName of podid's local cloud (with --vault-dns-suffix)")
	f.StringVar(&o.authority, flagAuthority, "", "the local cloud's identity provider base URL (podid sts)")
	f.StringVar(&o.authorityCAFile, "authority-ca-file", "", "PEM CA bundle trusted for the identity provider and the vaults, added to the system roots (podid sts's CA)")
	f.StringVar(&o.vaultDNSSuffix, "vault-dns-suffix", "", "the local cloud's vault DNS suffix: a vault's URL is https://<keyvaultName>.<suffix>/ (empty: no local cloud)")
	f.StringVar(&o.vaultAddress, "vault-address", "", "host:port every name under --vault-dns-suffix connects to (empty: DNS)")
	f.IntVar(&o.concurrency, "concurrency", 4, "objects of one mount fetched at once")
	f.StringVar(&o.podIdentitySock, "pod-identity-socket", "", "podid agent's pod-token socket (its --pod-token-socket) for usePodIdentity mounts (empty: usePodIdentity is refused)")
	return cmd
}
