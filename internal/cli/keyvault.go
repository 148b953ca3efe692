package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/keyvault/armkeyvault"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/sts/keyvault"
)

// Vault is a Key Vault as the CLI prints it.
type Vault struct {
	Name                    string            `json:"name"`
	ID                      string            `json:"id"`
	ResourceGroup           string            `json:"resourceGroup"`
	Location                string            `json:"location"`
	VaultURI                string            `json:"vaultUri"`
	TenantID                string            `json:"tenantId"`
	SKU                     string            `json:"sku"`
	EnableRbacAuthorization bool              `json:"enableRbacAuthorization"`
	SoftDeleteRetentionDays int32             `json:"softDeleteRetentionInDays"`
	Tags                    map[string]string `json:"tags,omitempty"`
}

func vaultOf(v armkeyvault.Vault) Vault {
	out := Vault{Name: str(v.Name), ID: str(v.ID), Location: str(v.Location)}
	if p := v.Properties; p != nil {
		out.VaultURI, out.TenantID = str(p.VaultURI), str(p.TenantID)
		if p.SKU != nil && p.SKU.Name != nil {
			out.SKU = string(*p.SKU.Name)
		}
		if p.EnableRbacAuthorization != nil {
			out.EnableRbacAuthorization = *p.EnableRbacAuthorization
		}
		if p.SoftDeleteRetentionInDays != nil {
			out.SoftDeleteRetentionDays = *p.SoftDeleteRetentionInDays
		}
	}
	if len(v.Tags) > 0 {
		out.Tags = map[string]string{}
		for k, x := range v.Tags {
			out.Tags[k] = str(x)
		}
	}
	if parts := strings.Split(out.ID, "/"); len(parts) > 4 && strings.EqualFold(parts[3], "resourceGroups") {
		out.ResourceGroup = parts[4]
	}
	return out
}

func vaultTable(vs ...Vault) table {
	t := table{header: []string{"NAME", "RESOURCE-GROUP", "LOCATION", "VAULT-URI"}}
	for _, v := range vs {
		t.rows = append(t.rows, []string{v.Name, v.ResourceGroup, v.Location, v.VaultURI})
	}
	return t
}

// Secret is a Key Vault secret as the CLI prints it. Value is set only
// when the user asked for it (--show-value).
type Secret struct {
	Name        string            `json:"name"`
	ID          string            `json:"id"`
	Version     string            `json:"version,omitempty"`
	Enabled     bool              `json:"enabled"`
	ContentType string            `json:"contentType,omitempty"`
	Created     *time.Time        `json:"created,omitempty"`
	Updated     *time.Time        `json:"updated,omitempty"`
	NotBefore   *time.Time        `json:"notBefore,omitempty"`
	Expires     *time.Time        `json:"expires,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Value       *string           `json:"value,omitempty"`
	// Set for a deleted secret.
	RecoveryID         string     `json:"recoveryId,omitempty"`
	ScheduledPurgeDate *time.Time `json:"scheduledPurgeDate,omitempty"`
}

func secretOf(id *azsecrets.ID, a *azsecrets.SecretAttributes, contentType *string, tags map[string]*string) Secret {
	s := Secret{ContentType: str(contentType)}
	if id != nil {
		s.ID, s.Name, s.Version = string(*id), id.Name(), id.Version()
	}
	if a != nil {
		s.Enabled = a.Enabled != nil && *a.Enabled
		s.Created, s.Updated, s.NotBefore, s.Expires = a.Created, a.Updated, a.NotBefore, a.Expires
	}
	if len(tags) > 0 {
		s.Tags = map[string]string{}
		for k, v := range tags {
			s.Tags[k] = str(v)
		}
	}
	return s
}

func secretTable(withValue bool, ss ...Secret) table {
	t := table{header: []string{"NAME", "VERSION", "ENABLED", "CONTENT-TYPE", "UPDATED"}}
	if withValue {
		t.header = append(t.header, "VALUE")
	}
	for _, s := range ss {
		upd := ""
		if s.Updated != nil {
			upd = s.Updated.UTC().Format(time.RFC3339)
		}
		row := []string{s.Name, s.Version, strconv.FormatBool(s.Enabled), s.ContentType, upd}
		if withValue {
			row = append(row, str(s.Value))
		}
		t.rows = append(t.rows, row)
	}
	return t
}

func validVaultName(n string) error {
	if !keyvault.ValidVaultName(n) {
		return fmt.Errorf("vault name %q must be 3-24 letters, digits and dashes, start with a letter, end with a letter or digit, without consecutive dashes", n)
	}
	return nil
}

func validSecretName(n string) error {
	if !keyvault.ValidSecretName(n) {
		return fmt.Errorf("secret name %q must be 1-127 letters, digits and dashes", n)
	}
	return nil
}

func newKeyVaultCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keyvault", Short: "Manage Key Vaults and their secrets and certificates (RBAC vaults)"}
	var s scope
	s.bind(cmd.PersistentFlags())
	var location string
	var rbacAuth bool
	var retention int
	var tags []string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create (or update) an RBAC vault",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validVaultName(args[0]); err != nil {
				return err
			}
			if !rbacAuth {
				return errors.New("--enable-rbac-authorization=false: podid's vaults authorize by Azure RBAC only; grant Key Vault roles with role assignments instead of access policies")
			}
			if retention < 7 || retention > 90 {
				return fmt.Errorf("--retention-days %d: must be 7..90", retention)
			}
			tm, err := parseTags(tags)
			if err != nil {
				return err
			}
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			loc := location
			if loc == "" {
				loc = a.cfg.Location
			}
			if loc == "" {
				return errors.New("no location: pass --location or record one with podid config set-cloud … --location")
			}
			c, err := a.vaults()
			if err != nil {
				return err
			}
			tenant := a.cfg.TenantID
			if tenant == "" {
				return errors.New("no tenant: record one with podid config set-cloud … --tenant-id")
			}
			poller, err := c.BeginCreateOrUpdate(cmd.Context(), a.rg, args[0], armkeyvault.VaultCreateOrUpdateParameters{
				Location: to.Ptr(loc), Tags: tm,
				Properties: &armkeyvault.VaultProperties{
					TenantID:                  to.Ptr(tenant),
					SKU:                       &armkeyvault.SKU{Family: to.Ptr(armkeyvault.SKUFamilyA), Name: to.Ptr(armkeyvault.SKUNameStandard)},
					EnableRbacAuthorization:   to.Ptr(true),
					SoftDeleteRetentionInDays: to.Ptr(int32(retention)),
				},
			}, nil)
			if err != nil {
				return cloudError("create vault "+args[0], err)
			}
			r, err := poller.PollUntilDone(cmd.Context(), &runtime.PollUntilDoneOptions{Frequency: time.Second})
			if err != nil {
				return cloudError("create vault "+args[0], err)
			}
			v := vaultOf(r.Vault)
			return g.print(cmd.OutOrStdout(), v, vaultTable(v))
		},
	}
	cf := create.Flags()
	cf.StringVarP(&location, "location", "l", "", "location (default: from the config)")
	cf.BoolVar(&rbacAuth, "enable-rbac-authorization", true, "authorize data actions by Azure RBAC (the only model podid supports)")
	cf.IntVar(&retention, "retention-days", 90, "days a deleted secret stays recoverable (7-90)")
	cf.StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable)")
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a vault",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validVaultName(args[0]); err != nil {
				return err
			}
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			c, err := a.vaults()
			if err != nil {
				return err
			}
			r, err := c.Get(cmd.Context(), a.rg, args[0], nil)
			if err != nil {
				return cloudError("vault "+args[0]+" in resource group "+a.rg, err)
			}
			v := vaultOf(r.Vault)
			return g.print(cmd.OutOrStdout(), v, vaultTable(v))
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a vault and every secret in it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validVaultName(args[0]); err != nil {
				return err
			}
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			c, err := a.vaults()
			if err != nil {
				return err
			}
			if _, err := c.Delete(cmd.Context(), a.rg, args[0], nil); err != nil {
				return cloudError("delete vault "+args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "vault %s deleted\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, show, del, newSecretCommand(g, &s), newCertificateCommand(g, &s), newKeyCommand(g, &s))
	return cmd
}

func parseTags(kvs []string) (map[string]*string, error) {
	tm := map[string]*string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--tag %q: want key=value", kv)
		}
		tm[k] = to.Ptr(v)
	}
	return tm, nil
}

func newSecretCommand(g *globals, s *scope) *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Manage a vault's secrets (data plane)"}
	var vault, name, value, file, contentType, version string
	var showValue bool
	need := func(c *cobra.Command, withName bool) error {
		if vault == "" {
			return errors.New("--vault-name is required")
		}
		if err := validVaultName(vault); err != nil {
			return err
		}
		if withName {
			if name == "" {
				return errors.New("--name is required")
			}
			return validSecretName(name)
		}
		return nil
	}
	set := &cobra.Command{
		Use:   "set --vault-name V --name N (--value X | --file F)",
		Short: "Set a secret (a new version)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := need(c, true); err != nil {
				return err
			}
			v, err := secretValue(c, value, file)
			if err != nil {
				return err
			}
			sc, err := g.secrets(*s, vault)
			if err != nil {
				return err
			}
			p := azsecrets.SetSecretParameters{Value: to.Ptr(v)}
			if contentType != "" {
				p.ContentType = to.Ptr(contentType)
			}
			r, err := sc.SetSecret(c.Context(), name, p, nil)
			if err != nil {
				return cloudError("set secret "+name+" in vault "+vault, err)
			}
			out := secretOf(r.ID, r.Attributes, r.ContentType, r.Tags)
			return g.print(c.OutOrStdout(), out, secretTable(false, out))
		},
	}
	set.Flags().StringVar(&value, "value", "", "the secret's value")
	set.Flags().StringVarP(&file, "file", "f", "", "read the value from this file ('-' for stdin)")
	set.Flags().StringVar(&contentType, "content-type", "", "content type, e.g. text/plain")
	show := &cobra.Command{
		Use:   "show --vault-name V --name N",
		Short: "Show a secret's attributes (its value with --show-value)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := need(c, true); err != nil {
				return err
			}
			sc, err := g.secrets(*s, vault)
			if err != nil {
				return err
			}
			r, err := sc.GetSecret(c.Context(), name, version, nil)
			if err != nil {
				return cloudError("secret "+name+" in vault "+vault, err)
			}
			out := secretOf(r.ID, r.Attributes, r.ContentType, r.Tags)
			if showValue {
				out.Value = r.Value
			}
			return g.print(c.OutOrStdout(), out, secretTable(showValue, out))
		},
	}
	show.Flags().StringVar(&version, "version", "", "a version (default: the latest)")
	show.Flags().BoolVar(&showValue, "show-value", false, "print the secret's value too")
	list := &cobra.Command{
		Use:   "list --vault-name V",
		Short: "List a vault's secrets (never their values)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := need(c, false); err != nil {
				return err
			}
			sc, err := g.secrets(*s, vault)
			if err != nil {
				return err
			}
			out := []Secret{}
			for pg := sc.NewListSecretPropertiesPager(nil); pg.More(); {
				page, err := pg.NextPage(c.Context())
				if err != nil {
					return cloudError("list secrets of vault "+vault, err)
				}
				for _, p := range page.Value {
					out = append(out, secretOf(p.ID, p.Attributes, p.ContentType, p.Tags))
				}
			}
			return g.print(c.OutOrStdout(), out, secretTable(false, out...))
		},
	}
	del := &cobra.Command{
		Use:   "delete --vault-name V --name N",
		Short: "Delete a secret (recoverable for the vault's retention days)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := need(c, true); err != nil {
				return err
			}
			sc, err := g.secrets(*s, vault)
			if err != nil {
				return err
			}
			r, err := sc.DeleteSecret(c.Context(), name, nil)
			if err != nil {
				return cloudError("delete secret "+name+" in vault "+vault, err)
			}
			out := secretOf(r.ID, r.Attributes, r.ContentType, r.Tags)
			out.RecoveryID, out.ScheduledPurgeDate = str(r.RecoveryID), r.ScheduledPurgeDate
			if g.output == "table" {
				until := ""
				if r.ScheduledPurgeDate != nil {
					until = " (recoverable until " + r.ScheduledPurgeDate.UTC().Format(time.RFC3339) + ")"
				}
				fmt.Fprintf(c.OutOrStdout(), "secret %s deleted%s\n", name, until)
				return nil
			}
			return g.print(c.OutOrStdout(), out, table{})
		},
	}
	for _, c := range []*cobra.Command{set, show, list, del} {
		c.Flags().StringVar(&vault, "vault-name", "", "the vault")
		if c != list {
			c.Flags().StringVar(&name, "name", "", "the secret")
		}
	}
	cmd.AddCommand(set, show, list, del)
	return cmd
}

// secretValue reads --value or --file (exactly one), bounded by Key
// Vault's 25 KB.
func secretValue(c *cobra.Command, value, file string) (string, error) {
	hasValue := c.Flags().Changed("value")
	switch {
	case hasValue && file != "":
		return "", errors.New("--value and --file exclude each other")
	case hasValue:
		if len(value) > keyvault.MaxValueBytes {
			return "", fmt.Errorf("--value is %d bytes; a secret holds at most %d", len(value), keyvault.MaxValueBytes)
		}
		return value, nil
	case file == "":
		return "", errors.New("--value or --file is required")
	}
	var r io.Reader
	if file == "-" {
		r = c.InOrStdin()
	} else {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, keyvault.MaxValueBytes+1))
	if err != nil {
		return "", fmt.Errorf("--file: %w", err)
	}
	if len(b) > keyvault.MaxValueBytes {
		return "", fmt.Errorf("--file %s is larger than %d bytes, the most a secret holds", file, keyvault.MaxValueBytes)
	}
	return string(b), nil
}

func (a *azure) vaults() (*armkeyvault.VaultsClient, error) {
	c, err := armkeyvault.NewVaultsClient(a.sub, a.cred, a.armOpts)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	return c, nil
}

// vaultClient is where the data-plane clients of vault connect: its URI
// and client options. Against the local sts the vault's host,
// {vault}.{suffix}, is dialed at the sts's address (nothing resolves a
// public name); the SDKs still address and check https://{vault}.{suffix}/.
func (g *globals) vaultClient(s scope, vault string) (string, azcore.TokenCredential, azcore.ClientOptions, error) {
	a, err := g.connect(s, false)
	if err != nil {
		return "", nil, azcore.ClientOptions{}, err
	}
	uri := "https://" + strings.ToLower(vault) + "." + keyvault.DefaultDNSSuffix + "/"
	opts := a.armOpts.ClientOptions
	if a.cfg.Cloud == CloudLocal {
		suffix := a.cfg.VaultDNSSuffix
		if suffix == "" {
			suffix = keyvault.DefaultDNSSuffix
		}
		uri = "https://" + strings.ToLower(vault) + "." + suffix + "/"
		u, err := url.Parse(a.cfg.Authority)
		if err != nil {
			return "", nil, azcore.ClientOptions{}, fmt.Errorf("authority: %w", err)
		}
		target := u.Host
		if u.Port() == "" {
			target = net.JoinHostPort(u.Hostname(), "443")
		}
		tr := a.http.Transport.(*http.Transport).Clone()
		tr.DialContext = keyvault.Dialer(suffix, target)
		tr.Proxy = nil // the vault is the local sts, dialed directly, never through a proxy
		opts.Transport = &http.Client{Transport: tr, Timeout: a.http.Timeout}
	}
	// The token's resource comes from the vault's challenge, not a cloud setting.
	return uri, a.cred, azcore.ClientOptions{Transport: opts.Transport, Retry: opts.Retry}, nil
}

// secrets returns the real azsecrets client for vault.
func (g *globals) secrets(s scope, vault string) (*azsecrets.Client, error) {
	uri, cred, opts, err := g.vaultClient(s, vault)
	if err != nil {
		return nil, err
	}
	c, err := azsecrets.NewClient(uri, cred, &azsecrets.ClientOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("secrets client: %w", err)
	}
	return c, nil
}
