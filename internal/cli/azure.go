package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/msi/armmsi"
	"github.com/spf13/pflag"
)

// armResource is ARM's token audience.
const armResource = "https://management.azure.com"

var (
	identityNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$`)
	rgRE           = regexp.MustCompile(`^[-\w._()]{1,90}$`)
)

func validIdentityName(n string) error {
	if !identityNameRE.MatchString(n) {
		return fmt.Errorf("identity name %q must be 3-128 letters, digits, '-' or '_', starting with a letter or digit", n)
	}
	return nil
}

func validResourceGroup(n string) error {
	if !rgRE.MatchString(n) || strings.HasSuffix(n, ".") {
		return fmt.Errorf("resource group %q must be 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'", n)
	}
	return nil
}

// scope are the flags naming where identities live; they override the config.
type scope struct {
	subscription  string
	resourceGroup string
}

func (s *scope) bind(f *pflag.FlagSet) {
	f.StringVar(&s.subscription, "subscription", "", "subscription id (default: from the config)")
	f.StringVarP(&s.resourceGroup, "resource-group", "g", "", "resource group (default: from the config)")
}

// azure is an authenticated session with the configured cloud.
type azure struct {
	cfg     *Config
	cred    azcore.TokenCredential
	armOpts *arm.ClientOptions
	http    *http.Client
	sub, rg string
}

// httpClient trusts caFile (plus the system roots) when given.
func httpClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// connect builds the credential and ARM options. Against the local sts every
// endpoint — token authority and ARM — is the sts, so no SDK call can reach
// or resolve a public name.
func (g *globals) connect(s scope, needRG bool) (*azure, error) {
	cfg, err := g.config()
	if err != nil {
		return nil, err
	}
	a := &azure{cfg: cfg, sub: cfg.Subscription, rg: cfg.ResourceGroup}
	if s.subscription != "" {
		a.sub = s.subscription
	}
	if s.resourceGroup != "" {
		a.rg = s.resourceGroup
	}
	if a.sub == "" {
		return nil, errors.New("no subscription: pass --subscription or record one with podid config set-cloud … --subscription")
	}
	if !guidRE.MatchString(a.sub) {
		return nil, fmt.Errorf("subscription %q is not a GUID", a.sub)
	}
	if needRG {
		if a.rg == "" {
			return nil, errors.New("no resource group: pass --resource-group or record one with podid config set-cloud … --resource-group")
		}
		if err := validResourceGroup(a.rg); err != nil {
			return nil, err
		}
	}
	hc, err := httpClient(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	a.http = hc
	opts := azcore.ClientOptions{Transport: hc, Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 200 * time.Millisecond}}
	switch cfg.Cloud {
	case CloudLocal:
		opts.Cloud = cloud.Configuration{
			ActiveDirectoryAuthorityHost: cfg.Authority + "/",
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: cfg.Authority, Audience: armResource},
			},
		}
		secret, err := cfg.clientSecret()
		if err != nil {
			return nil, err
		}
		a.cred, err = azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, secret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
		if err != nil {
			return nil, fmt.Errorf("local credential: %w", err)
		}
	case CloudAzure:
		opts.Cloud = cloud.AzurePublic
		a.cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts, TenantID: cfg.TenantID})
		if err != nil {
			return nil, fmt.Errorf("azure credential (az login?): %w", err)
		}
	}
	a.armOpts = &arm.ClientOptions{ClientOptions: opts}
	return a, nil
}

func (a *azure) identities() (*armmsi.UserAssignedIdentitiesClient, error) {
	c, err := armmsi.NewUserAssignedIdentitiesClient(a.sub, a.cred, a.armOpts)
	if err != nil {
		return nil, fmt.Errorf("identity client: %w", err)
	}
	return c, nil
}

func (a *azure) fics() (*armmsi.FederatedIdentityCredentialsClient, error) {
	c, err := armmsi.NewFederatedIdentityCredentialsClient(a.sub, a.cred, a.armOpts)
	if err != nil {
		return nil, fmt.Errorf("federated credential client: %w", err)
	}
	return c, nil
}

// NotFoundError is a resource the cloud does not have.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string { return e.What + " not found" }

// cloudError turns an SDK error into one line: the ARM code and message, or
// the token endpoint's AADSTS answer, or the transport failure.
func cloudError(what string, err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		if re.StatusCode == http.StatusNotFound {
			return &NotFoundError{What: what}
		}
		return fmt.Errorf("%s: %s (HTTP %d)", what, armMessage(re), re.StatusCode)
	}
	var af *azidentity.AuthenticationFailedError
	if errors.As(err, &af) {
		return fmt.Errorf("%s: sign-in failed: %s", what, aadstsSummary(af))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: timed out", what)
	}
	return fmt.Errorf("%s: %s", what, oneLine(err.Error()))
}

func armMessage(re *azcore.ResponseError) string {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if re.RawResponse != nil {
		if b, err := runtime.Payload(re.RawResponse); err == nil && json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
			return body.Error.Code + ": " + oneLine(body.Error.Message)
		}
	}
	return re.ErrorCode
}

// oneLine folds s onto one line of at most 300 bytes: a server's or
// library's text is shown to the user, never dumped.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
