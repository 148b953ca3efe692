package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podid/podid/internal/pki"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/tokenverify"
)

func newSTSCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:   "sts",
		Short: "Local, Entra-compatible identity provider",
	})
	cmd.AddCommand(newSTSServeCommand(), newSTSVerifyCommand())
	return cmd
}

type stsServeOptions struct {
	serverOptions
	state, caFile, publicURL, bootstrap string
	vaultDNSSuffix                      string
	caCert, caKey                       string
	hosts                               []string
	tokenLifetime, rotation, overlap    time.Duration
	identityTokenLifetime, publishLead  time.Duration
	trustedCAs                          []string
	issuerCAs, clusterIssuers           map[string]string
	noSystemRoots                       bool
}

func newSTSServeCommand() *cobra.Command {
	o := &stsServeOptions{serverOptions: serverOptions{component: "sts"}}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the token endpoint, discovery, JWKS and the management API over HTTPS",
		Args:  noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			errs := []error{o.serverOptions.validate(cmd)}
			if o.state == "" {
				errs = append(errs, errors.New("--state is required"))
			}
			if (o.caCert == "") != (o.caKey == "") {
				errs = append(errs, errors.New("--ca-cert and --ca-key go together"))
			}
			if err := keyvault.ValidDNSSuffix(o.vaultDNSSuffix); err != nil {
				errs = append(errs, fmt.Errorf("--vault-dns-suffix: %w", err))
			}
			return usage(errs...)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			return sts.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	o.serverOptions.addFlags(f, serverDefaults{listen: "127.0.0.1:8443", listenHelp: "address to serve HTTPS on"})
	f.StringVar(&o.state, "state", "", "bbolt state file (created if missing)")
	f.StringVar(&o.caFile, "ca-file", "", "write the sts CA certificate (PEM) here; point SSL_CERT_FILE at it")
	f.StringVar(&o.caCert, "ca-cert", "", "PEM CA certificate to serve under instead of the stored one (with --ca-key; e.g. the Helm chart's)")
	f.StringVar(&o.caKey, "ca-key", "", "PEM private key of --ca-cert")
	f.StringSliceVar(&o.hosts, "host", []string{"localhost", "127.0.0.1"}, "DNS names and IPs of the serving certificate (repeatable)")
	f.StringVar(&o.publicURL, "public-url", "", "base URL for requests whose Host is not a --host (default https://<first host>:<port>)")
	f.StringVar(&o.bootstrap, "bootstrap", "", "bootstrap YAML applied idempotently at start")
	f.StringVar(&o.vaultDNSSuffix, "vault-dns-suffix", "vault.azure.net", "DNS suffix of the Key Vaults served: vault V is https://V.<suffix>/, tokens are for https://<suffix>, the certificate names *.<suffix>")
	f.DurationVar(&o.tokenLifetime, "token-lifetime", time.Hour, "access token lifetime for app registrations")
	f.DurationVar(&o.identityTokenLifetime, "identity-token-lifetime", 24*time.Hour, "access token lifetime for managed identities")
	f.DurationVar(&o.rotation, "key-rotation-interval", 24*time.Hour, "how long a signing key signs before it is replaced")
	f.DurationVar(&o.publishLead, "key-publish-lead", time.Hour, "how long a new signing key is in the JWKS before it signs (≥ JWKS max-age 5m + 5m; < --key-rotation-interval)")
	f.DurationVar(&o.overlap, "key-overlap", 0, "how long a retired key stays in the JWKS (default longest token lifetime + 10m; must be ≥ it)")
	f.StringSliceVar(&o.trustedCAs, "trusted-ca-file", nil, "CA bundle trusted when fetching any federated issuer's metadata (repeatable)")
	f.StringToStringVar(&o.issuerCAs, "issuer-ca-file", nil, "issuer=CA bundle trusted for that issuer only (repeatable)")
	f.StringToStringVar(&o.clusterIssuers, "cluster-issuer", nil, "name=PEM public key file: host OIDC discovery+JWKS for a cluster at <url>/clusters/<name> (repeatable)")
	f.BoolVar(&o.noSystemRoots, "no-system-roots", false, "do not trust the system roots for federated issuers")
	alias(f, "listen", flagListenAddr)
	alias(f, "metrics-listen", flagMetricsAddr)
	f.AddFlag(&pflag.Flag{Name: "debug", Usage: "deprecated: use --log-level=debug", Value: debugLevel{&o.logLevel}, DefValue: "false", NoOptDefVal: "true"})
	if err := f.MarkDeprecated("debug", "use --log-level=debug instead"); err != nil {
		panic(err) // just added
	}
	return cmd
}

func (o *stsServeOptions) config() (sts.Config, error) {
	cfg := sts.Config{
		ListenAddr: o.listenAddr, StatePath: o.state, CAFile: o.caFile, Hosts: o.hosts, PublicURL: strings.TrimRight(o.publicURL, "/"),
		VaultDNSSuffix: o.vaultDNSSuffix,
		TokenLifetime:  o.tokenLifetime, IdentityTokenLifetime: o.identityTokenLifetime,
		KeyRotationInterval: o.rotation, KeyPublishLead: o.publishLead, KeyOverlap: o.overlap,
		MetricsAddr: o.metricsAddr, HealthAddr: o.healthAddr, DebugAddr: o.debugAddr,
		Logger: o.logger(),
	}
	if o.caCert != "" {
		ca, err := loadCA(o.caCert, o.caKey)
		if err != nil {
			return cfg, err
		}
		cfg.CA = ca
	}
	if o.bootstrap != "" {
		b, err := sts.LoadBootstrap(o.bootstrap)
		if err != nil {
			return cfg, err
		}
		cfg.Bootstrap = b
	}
	trust, err := jwks.LoadTrust(o.trustedCAs, o.issuerCAs, o.noSystemRoots)
	if err != nil {
		return cfg, err
	}
	cfg.ExternalTrust = trust
	for name, file := range o.clusterIssuers {
		set, err := sts.LoadClusterIssuerKeys(file)
		if err != nil {
			return cfg, fmt.Errorf("cluster issuer %s: %w", name, err)
		}
		if cfg.ClusterIssuers == nil {
			cfg.ClusterIssuers = map[string]jose.JSONWebKeySet{}
		}
		cfg.ClusterIssuers[name] = set
	}
	return cfg, nil
}

func loadCA(certFile, keyFile string) (*pki.CA, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-key: %w", err)
	}
	ca, err := pki.LoadCA(c, k)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert/--ca-key: %w", err)
	}
	return ca, nil
}

type stsVerifyOptions struct {
	jwksURL, tokenFile string
	caFiles            []string
	issuers, audiences []string
	allowArrayAud      bool
}

func newSTSVerifyCommand() *cobra.Command {
	o := &stsVerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify [TOKEN]",
		Short: "Check an access token as a resource server would and print its claims",
		Long: "Checks the RS256 signature against the JWKS (fetched over HTTPS), the issuer, a single-string\n" +
			"audience and exp/nbf/iat. The token comes from the argument, --token-file, or stdin.",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MaximumNArgs(1)(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		PreRunE: func(*cobra.Command, []string) error {
			if o.jwksURL == "" || len(o.issuers) == 0 || len(o.audiences) == 0 {
				return usageError{fmt.Errorf("--jwks-url, --issuer and --audience are required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := o.token(cmd.InOrStdin(), args)
			if err != nil {
				return err
			}
			trust, err := jwks.LoadTrust(o.caFiles, nil, false)
			if err != nil {
				return err
			}
			v, err := tokenverify.New(tokenverify.Config{
				JWKSURL: o.jwksURL, Keys: jwks.New(jwks.Config{Trust: trust}),
				Issuers: o.issuers, Audiences: o.audiences, AllowArrayAudience: o.allowArrayAud,
			})
			if err != nil {
				return err
			}
			c, err := v.Verify(cmd.Context(), raw)
			if err != nil {
				return fmt.Errorf("token rejected: %w", err)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.jwksURL, "jwks-url", "", "JWKS URL, e.g. https://127.0.0.1:8443/common/discovery/keys")
	f.StringSliceVar(&o.caFiles, "ca-file", nil, "CA bundle to trust for the JWKS URL in addition to the system roots (repeatable)")
	f.StringSliceVar(&o.issuers, "issuer", nil, "accepted issuer, exact (repeatable), e.g. https://sts.windows.net/<tenant>/")
	f.StringSliceVar(&o.audiences, "audience", nil, "accepted audience, exact (repeatable)")
	f.BoolVar(&o.allowArrayAud, "allow-array-audience", false, "accept an array aud claim")
	f.StringVar(&o.tokenFile, "token-file", "", "read the token from this file")
	return cmd
}

func (o *stsVerifyOptions) token(stdin io.Reader, args []string) (string, error) {
	var raw []byte
	var err error
	switch {
	case len(args) == 1:
		raw = []byte(args[0])
	case o.tokenFile != "":
		raw, err = os.ReadFile(o.tokenFile)
	default:
		raw, err = io.ReadAll(io.LimitReader(stdin, tokenverify.MaxTokenSize+1))
	}
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	return strings.TrimSpace(string(raw)), nil
}
