package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// globals are the flags every user verb shares.
type globals struct {
	kubeconfig string
	configPath string
	output     string
}

func (g *globals) bind(f *pflag.FlagSet) {
	f.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&g.configPath, "podid-config", "", "CLI config file (default: $XDG_CONFIG_HOME/podid/config.yaml)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
}

func (g *globals) path() (string, error) {
	if g.configPath != "" {
		return g.configPath, nil
	}
	return DefaultConfigPath()
}

func (g *globals) config() (*Config, error) {
	p, err := g.path()
	if err != nil {
		return nil, err
	}
	return LoadConfig(p)
}

// NewCommands returns the user verbs for the podid root command.
func NewCommands() []*cobra.Command {
	g := &globals{}
	cmds := []*cobra.Command{
		newConfigCommand(g),
		newIdentityCommand(g),
		newFICCommand(g),
		newServiceAccountCommand(g),
		newRoleAssignmentCommand(g),
		newKeyVaultCommand(g),
		newDoctorCommand(g),
		newMigrateCommand(g),
	}
	for _, c := range cmds {
		g.bind(c.PersistentFlags())
		c.PersistentPreRunE = func(*cobra.Command, []string) error { return g.checkOutput() }
	}
	return cmds
}

func (g *globals) checkOutput() error {
	switch g.output {
	case "table", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: use table, json or yaml", g.output)
}

// table is rows with a header, printed aligned.
type table struct {
	header []string
	rows   [][]string
}

// print writes v as JSON or YAML, or t as a table.
func (g *globals) print(w io.Writer, v any, t table) error {
	switch g.output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func newConfigCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Choose the cloud the CLI manages identities in"}
	var c Config
	set := &cobra.Command{
		Use:   "set-cloud local|azure",
		Short: "Record the cloud: podid sts (local) or Azure",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c.Cloud = args[0]
			if c.Cloud == CloudAzure && (c.Authority != "" || c.ClientID != "" || c.ClientSecretFile != "" || c.CAFile != "") {
				return fmt.Errorf("cloud azure uses DefaultAzureCredential (az login): --authority, --ca-file, --client-id and --client-secret-file are for local")
			}
			c.Authority = strings.TrimRight(c.Authority, "/")
			p, err := g.path()
			if err != nil {
				return err
			}
			if err := SaveConfig(p, &c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cloud %s recorded in %s\n", c.Cloud, p)
			return nil
		},
	}
	f := set.Flags()
	f.StringVar(&c.Authority, "authority", "", "podid sts URL, e.g. https://127.0.0.1:8443 (local)")
	f.StringVar(&c.CAFile, "ca-file", "", "CA bundle the sts serves with (local)")
	f.StringVar(&c.TenantID, "tenant-id", "", "tenant")
	f.StringVar(&c.ClientID, "client-id", "", "admin application's client id (local)")
	f.StringVar(&c.ClientSecretFile, "client-secret-file", "", "file holding the admin secret (local; or $"+EnvClientSecret+")")
	f.StringVar(&c.Subscription, "subscription", "", "default subscription id")
	f.StringVarP(&c.ResourceGroup, "resource-group", "g", "", "default resource group")
	f.StringVar(&c.Location, "location", "", "default location for new identities and vaults")
	f.StringVar(&c.VaultDNSSuffix, "vault-dns-suffix", "", "the local sts's vault DNS suffix (local; default vault.azure.net)")
	view := &cobra.Command{
		Use:   "view",
		Short: "Print the recorded config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.config()
			if err != nil {
				return err
			}
			t := table{header: []string{"KEY", "VALUE"}}
			for _, kv := range [][2]string{{"cloud", c.Cloud}, {"authority", c.Authority}, {"caFile", c.CAFile}, {"tenantId", c.TenantID},
				{"clientId", c.ClientID}, {"clientSecretFile", c.ClientSecretFile}, {"subscription", c.Subscription},
				{"resourceGroup", c.ResourceGroup}, {"location", c.Location}, {"vaultDnsSuffix", c.VaultDNSSuffix}} {
				if kv[1] != "" {
					t.rows = append(t.rows, kv[:])
				}
			}
			return g.print(cmd.OutOrStdout(), c, t)
		},
	}
	cmd.AddCommand(set, view)
	return cmd
}
