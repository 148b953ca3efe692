package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"

	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/sts/keyvault"
)

// Clouds the CLI talks to.
const (
	CloudLocal = "local" // podid sts: ARM and token endpoint at one URL
	CloudAzure = "azure" // Azure public cloud, DefaultAzureCredential
)

const (
	maxConfigBytes = 64 << 10
	// EnvClientSecret overrides Config.ClientSecretFile.
	EnvClientSecret = "PODID_CLIENT_SECRET"
)

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Config is the CLI's small state file. It never holds a secret: the local
// admin's secret stays in its own file (or PODID_CLIENT_SECRET).
type Config struct {
	Cloud string `json:"cloud"`
	// Authority is the sts base URL (local): both the token authority and
	// the ARM endpoint.
	Authority string `json:"authority,omitempty"`
	// CAFile is the PEM bundle trusted for Authority (local).
	CAFile           string `json:"caFile,omitempty"`
	TenantID         string `json:"tenantId,omitempty"`
	ClientID         string `json:"clientId,omitempty"`
	ClientSecretFile string `json:"clientSecretFile,omitempty"`
	Subscription     string `json:"subscription,omitempty"`
	ResourceGroup    string `json:"resourceGroup,omitempty"`
	Location         string `json:"location,omitempty"`
	// VaultDNSSuffix is the local sts's vault DNS suffix (its
	// --vault-dns-suffix); empty means vault.azure.net.
	VaultDNSSuffix string `json:"vaultDnsSuffix,omitempty"`
}

// ConfigError is a config file that cannot be used as written.
type ConfigError struct {
	Path string
	Msg  string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config %s: %s", e.Path, e.Msg) }

// DefaultConfigPath is $XDG_CONFIG_HOME/podid/config.yaml, else
// ~/.config/podid/config.yaml.
func DefaultConfigPath() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "podid", "config.yaml"), nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory (set XDG_CONFIG_HOME): %w", err)
	}
	return filepath.Join(h, ".config", "podid", "config.yaml"), nil
}

// Validate checks every field that is set.
func (c *Config) Validate() error {
	switch c.Cloud {
	case CloudLocal:
		if c.Authority == "" || c.TenantID == "" || c.ClientID == "" {
			return errors.New("cloud local needs authority, tenantId and clientId (podid config set-cloud local --authority … --tenant-id … --client-id …)")
		}
	case CloudAzure:
	case "":
		return errors.New("cloud is not set (podid config set-cloud local|azure)")
	default:
		return fmt.Errorf("cloud %q is unknown: use local or azure", c.Cloud)
	}
	if c.Authority != "" {
		u, err := url.Parse(c.Authority)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("authority %q must be an https URL without credentials, query or fragment", c.Authority)
		}
	}
	for name, v := range map[string]string{"tenantId": c.TenantID, "clientId": c.ClientID, "subscription": c.Subscription} {
		if v != "" && !guidRE.MatchString(v) {
			return fmt.Errorf("%s %q is not a GUID", name, v)
		}
	}
	if c.ResourceGroup != "" {
		if err := validResourceGroup(c.ResourceGroup); err != nil {
			return err
		}
	}
	if c.VaultDNSSuffix != "" {
		if c.Cloud == CloudAzure {
			return errors.New("vaultDnsSuffix is for cloud local (Azure's is vault.azure.net)")
		}
		if err := keyvault.ValidDNSSuffix(c.VaultDNSSuffix); err != nil {
			return err
		}
	}
	return nil
}

// LoadConfig reads and strictly parses path. A missing file is
// ErrNoConfig; a file others can read is refused, as ssh does, because it
// names the admin credential's file.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &ConfigError{Path: path, Msg: "does not exist: run podid config set-cloud local|azure first"}
	}
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat config: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, &ConfigError{Path: path, Msg: "is not a regular file"}
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, &ConfigError{Path: path, Msg: fmt.Sprintf("permissions %#o are too open: chmod 600 %s", st.Mode().Perm(), path)}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxConfigBytes {
		return nil, &ConfigError{Path: path, Msg: fmt.Sprintf("larger than %d bytes", maxConfigBytes)}
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, &ConfigError{Path: path, Msg: err.Error()}
	}
	if err := c.Validate(); err != nil {
		return nil, &ConfigError{Path: path, Msg: err.Error()}
	}
	return &c, nil
}

// SaveConfig writes c to path with mode 0600 (directory 0700), replacing
// the file atomically.
func SaveConfig(path string, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if _, err := io.Copy(tmp, bytes.NewReader(data)); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// clientSecret reads the local admin's secret: PODID_CLIENT_SECRET, else
// ClientSecretFile (bounded, trailing newline trimmed).
func (c *Config) clientSecret() (string, error) {
	if s := os.Getenv(EnvClientSecret); s != "" {
		return s, nil
	}
	if c.ClientSecretFile == "" {
		return "", fmt.Errorf("no client secret: set %s or podid config set-cloud local --client-secret-file", EnvClientSecret)
	}
	f, err := os.Open(c.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("read client secret: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return "", fmt.Errorf("read client secret: %w", err)
	}
	if len(b) > 4096 {
		return "", fmt.Errorf("client secret file %s is larger than 4096 bytes", c.ClientSecretFile)
	}
	s := string(bytes.TrimRight(b, "\r\n"))
	if s == "" {
		return "", fmt.Errorf("client secret file %s is empty", c.ClientSecretFile)
	}
	return s, nil
}
