package cli

import (
	"crypto/sha1" // the certificate's thumbprint, as az prints it
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/spf13/cobra"
)

// maxCertificateFile bounds a certificate file read for import.
const maxCertificateFile = 128 << 10

// Certificate is a Key Vault certificate as the CLI prints it.
type Certificate struct {
	Name       string            `json:"name"`
	ID         string            `json:"id"`
	Version    string            `json:"version,omitempty"`
	Enabled    bool              `json:"enabled"`
	Thumbprint string            `json:"x509ThumbprintHex,omitempty"`
	Subject    string            `json:"subject,omitempty"`
	NotBefore  *time.Time        `json:"notBefore,omitempty"`
	Expires    *time.Time        `json:"expires,omitempty"`
	KeyID      string            `json:"kid,omitempty"`
	SecretID   string            `json:"sid,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	// Set for a deleted certificate.
	RecoveryID         string     `json:"recoveryId,omitempty"`
	ScheduledPurgeDate *time.Time `json:"scheduledPurgeDate,omitempty"`
}

func certificateOf(id *azcertificates.ID, a *azcertificates.CertificateAttributes, x5t, cer []byte, kid, sid *azcertificates.ID, tags map[string]*string) Certificate {
	c := Certificate{Thumbprint: strings.ToUpper(hex.EncodeToString(x5t))}
	if kid != nil {
		c.KeyID = string(*kid)
	}
	if sid != nil {
		c.SecretID = string(*sid)
	}
	if id != nil {
		c.ID, c.Name, c.Version = string(*id), id.Name(), id.Version()
	}
	if a != nil {
		c.Enabled = a.Enabled != nil && *a.Enabled
		c.NotBefore, c.Expires = a.NotBefore, a.Expires
	}
	if len(cer) > 0 {
		if x, err := x509.ParseCertificate(cer); err == nil {
			c.Subject = x.Subject.String()
			if c.Thumbprint == "" {
				sum := sha1.Sum(cer)
				c.Thumbprint = strings.ToUpper(hex.EncodeToString(sum[:]))
			}
		}
	}
	if len(tags) > 0 {
		c.Tags = map[string]string{}
		for k, v := range tags {
			c.Tags[k] = str(v)
		}
	}
	return c
}

func certificateTable(cs ...Certificate) table {
	t := table{header: []string{"NAME", "VERSION", "ENABLED", "SUBJECT", "EXPIRES", "THUMBPRINT"}}
	for _, c := range cs {
		exp := ""
		if c.Expires != nil {
			exp = c.Expires.UTC().Format(time.RFC3339)
		}
		t.rows = append(t.rows, []string{c.Name, c.Version, strconv.FormatBool(c.Enabled), c.Subject, exp, c.Thumbprint})
	}
	return t
}

func (g *globals) certificates(s scope, vault string) (*azcertificates.Client, error) {
	uri, cred, opts, err := g.vaultClient(s, vault)
	if err != nil {
		return nil, err
	}
	c, err := azcertificates.NewClient(uri, cred, &azcertificates.ClientOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("certificates client: %w", err)
	}
	return c, nil
}

func (g *globals) keys(s scope, vault string) (*azkeys.Client, error) {
	uri, cred, opts, err := g.vaultClient(s, vault)
	if err != nil {
		return nil, err
	}
	c, err := azkeys.NewClient(uri, cred, &azkeys.ClientOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("keys client: %w", err)
	}
	return c, nil
}

// vaultObjectFlags are --vault-name and --name, checked.
type vaultObjectFlags struct{ vault, name string }

func (f *vaultObjectFlags) need(withName bool) error {
	if f.vault == "" {
		return errors.New("--vault-name is required")
	}
	if err := validVaultName(f.vault); err != nil {
		return err
	}
	if withName {
		if f.name == "" {
			return errors.New("--name is required")
		}
		return validSecretName(f.name)
	}
	return nil
}

func (f *vaultObjectFlags) bind(c *cobra.Command, withName bool, what string) {
	c.Flags().StringVar(&f.vault, "vault-name", "", "the vault")
	if withName {
		c.Flags().StringVarP(&f.name, "name", "n", "", "the "+what)
	}
}

func newCertificateCommand(g *globals, s *scope) *cobra.Command {
	cmd := &cobra.Command{Use: "certificate", Short: "Manage a vault's certificates (import, show, list, delete)"}
	var f vaultObjectFlags
	var file, password, version string
	imp := &cobra.Command{
		Use:   "import --vault-name V --name N --file F [--password P]",
		Short: "Import a certificate with its private key: a PEM file or a PKCS#12 (.pfx) file",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.need(true); err != nil {
				return err
			}
			value, err := certificateFile(c, file)
			if err != nil {
				return err
			}
			cc, err := g.certificates(*s, f.vault)
			if err != nil {
				return err
			}
			p := azcertificates.ImportCertificateParameters{Base64EncodedCertificate: to.Ptr(value)}
			if c.Flags().Changed("password") {
				p.Password = to.Ptr(password)
			}
			r, err := cc.ImportCertificate(c.Context(), f.name, p, nil)
			if err != nil {
				return cloudError("import certificate "+f.name+" into vault "+f.vault, err)
			}
			out := certificateOf(r.ID, r.Attributes, r.X509Thumbprint, r.CER, r.KID, r.SID, r.Tags)
			return g.print(c.OutOrStdout(), out, certificateTable(out))
		},
	}
	imp.Flags().StringVarP(&file, "file", "f", "", "the PEM or PKCS#12 file ('-' for stdin)")
	imp.Flags().StringVar(&password, "password", "", "the PKCS#12 file's password")
	show := &cobra.Command{
		Use:   "show --vault-name V --name N",
		Short: "Show a certificate",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.need(true); err != nil {
				return err
			}
			cc, err := g.certificates(*s, f.vault)
			if err != nil {
				return err
			}
			r, err := cc.GetCertificate(c.Context(), f.name, version, nil)
			if err != nil {
				return cloudError("certificate "+f.name+" in vault "+f.vault, err)
			}
			out := certificateOf(r.ID, r.Attributes, r.X509Thumbprint, r.CER, r.KID, r.SID, r.Tags)
			return g.print(c.OutOrStdout(), out, certificateTable(out))
		},
	}
	show.Flags().StringVar(&version, "version", "", "a version (default: the latest)")
	list := &cobra.Command{
		Use:   "list --vault-name V",
		Short: "List a vault's certificates",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.need(false); err != nil {
				return err
			}
			cc, err := g.certificates(*s, f.vault)
			if err != nil {
				return err
			}
			out := []Certificate{}
			for pg := cc.NewListCertificatePropertiesPager(nil); pg.More(); {
				page, err := pg.NextPage(c.Context())
				if err != nil {
					return cloudError("list certificates of vault "+f.vault, err)
				}
				for _, p := range page.Value {
					out = append(out, certificateOf(p.ID, p.Attributes, p.X509Thumbprint, nil, nil, nil, p.Tags))
				}
			}
			return g.print(c.OutOrStdout(), out, certificateTable(out...))
		},
	}
	del := &cobra.Command{
		Use:   "delete --vault-name V --name N",
		Short: "Delete a certificate with its key and secret (recoverable for the vault's retention days)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.need(true); err != nil {
				return err
			}
			cc, err := g.certificates(*s, f.vault)
			if err != nil {
				return err
			}
			r, err := cc.DeleteCertificate(c.Context(), f.name, nil)
			if err != nil {
				return cloudError("delete certificate "+f.name+" in vault "+f.vault, err)
			}
			out := certificateOf(r.ID, r.Attributes, r.X509Thumbprint, r.CER, r.KID, r.SID, r.Tags)
			out.RecoveryID, out.ScheduledPurgeDate = str(r.RecoveryID), r.ScheduledPurgeDate
			if g.output == "table" {
				until := ""
				if r.ScheduledPurgeDate != nil {
					until = " (recoverable until " + r.ScheduledPurgeDate.UTC().Format(time.RFC3339) + ")"
				}
				fmt.Fprintf(c.OutOrStdout(), "certificate %s deleted%s\n", f.name, until)
				return nil
			}
			return g.print(c.OutOrStdout(), out, table{})
		},
	}
	for _, c := range []*cobra.Command{imp, show, list, del} {
		f.bind(c, c != list, "certificate")
	}
	cmd.AddCommand(imp, show, list, del)
	return cmd
}

// certificateFile reads a certificate file for import: PEM text as is, a
// binary PKCS#12 file base64-encoded (what the import API takes).
func certificateFile(c *cobra.Command, file string) (string, error) {
	if file == "" {
		return "", errors.New("--file is required (a PEM or PKCS#12 file with the private key)")
	}
	var r io.Reader
	if file == "-" {
		r = c.InOrStdin()
	} else {
		fh, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--file: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	b, err := io.ReadAll(io.LimitReader(r, maxCertificateFile+1))
	if err != nil {
		return "", fmt.Errorf("--file: %w", err)
	}
	if len(b) > maxCertificateFile {
		return "", fmt.Errorf("--file %s is larger than %d bytes", file, maxCertificateFile)
	}
	if strings.HasPrefix(strings.TrimSpace(string(b)), "-----BEGIN") {
		return string(b), nil
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Key is a Key Vault key as the CLI prints it.
type Key struct {
	Name    string `json:"name"`
	ID      string `json:"kid"`
	Version string `json:"version,omitempty"`
	Enabled bool   `json:"enabled"`
	KeyType string `json:"kty,omitempty"`
	Curve   string `json:"crv,omitempty"`
	Managed bool   `json:"managed"`
}

func vaultKeyOf(id *azkeys.ID, a *azkeys.KeyAttributes, managed *bool, k *azkeys.JSONWebKey) Key {
	out := Key{Managed: managed != nil && *managed}
	if id != nil {
		out.ID, out.Name, out.Version = string(*id), id.Name(), id.Version()
	}
	if a != nil {
		out.Enabled = a.Enabled != nil && *a.Enabled
	}
	if k != nil {
		if k.Kty != nil {
			out.KeyType = string(*k.Kty)
		}
		if k.Crv != nil {
			out.Curve = string(*k.Crv)
		}
	}
	return out
}

func keyTable(ks ...Key) table {
	t := table{header: []string{"NAME", "VERSION", "ENABLED", "KTY", "MANAGED"}}
	for _, k := range ks {
		t.rows = append(t.rows, []string{k.Name, k.Version, strconv.FormatBool(k.Enabled), k.KeyType, strconv.FormatBool(k.Managed)})
	}
	return t
}

func newKeyCommand(g *globals, s *scope) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Show a vault's keys (the local vault serves the keys of its certificates)"}
	var f vaultObjectFlags
	var version string
	show := &cobra.Command{
		Use:   "show --vault-name V --name N",
		Short: "Show a key",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.need(true); err != nil {
				return err
			}
			kc, err := g.keys(*s, f.vault)
			if err != nil {
				return err
			}
			r, err := kc.GetKey(c.Context(), f.name, version, nil)
			if err != nil {
				return cloudError("key "+f.name+" in vault "+f.vault, err)
			}
			var id *azkeys.ID
			if r.Key != nil {
				id = r.Key.KID
			}
			out := vaultKeyOf(id, r.Attributes, r.Managed, r.Key)
			return g.print(c.OutOrStdout(), out, keyTable(out))
		},
	}
	show.Flags().StringVar(&version, "version", "", "a version (default: the latest)")
	list := &cobra.Command{
		Use:   "list --vault-name V",
		Short: "List a vault's keys",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.need(false); err != nil {
				return err
			}
			kc, err := g.keys(*s, f.vault)
			if err != nil {
				return err
			}
			out := []Key{}
			for pg := kc.NewListKeyPropertiesPager(nil); pg.More(); {
				page, err := pg.NextPage(c.Context())
				if err != nil {
					return cloudError("list keys of vault "+f.vault, err)
				}
				for _, p := range page.Value {
					out = append(out, vaultKeyOf(p.KID, p.Attributes, p.Managed, nil))
				}
			}
			return g.print(c.OutOrStdout(), out, keyTable(out...))
		},
	}
	for _, c := range []*cobra.Command{show, list} {
		f.bind(c, c != list, "key")
	}
	cmd.AddCommand(show, list)
	return cmd
}
