package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/msi/armmsi"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podid/podid/internal/claimsexpr"
	"github.com/podid/podid/internal/workloadidentity"
)

// Federated credential constants of Entra ID.
const (
	// MaxFederatedCredentials is Entra's limit per identity.
	MaxFederatedCredentials = workloadidentity.MaxFederatedCredentials
	// ExchangeAudience is the audience of service-account tokens exchanged
	// for Entra tokens (the webhook projects tokens for it).
	ExchangeAudience = workloadidentity.TokenAudience
	maxFICField      = workloadidentity.MaxFederatedCredentialField
)

var ficNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}$`)

// FederatedCredential is one trust of an identity in an external issuer.
type FederatedCredential struct {
	Name      string   `json:"name"`
	Identity  string   `json:"identity"`
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Audiences []string `json:"audiences"`
	// ClaimsMatchingExpression replaces Subject in a flexible federated
	// credential (languageVersion 1), e.g. a whole namespace.
	ClaimsMatchingExpression string `json:"claimsMatchingExpression,omitempty"`
}

// LimitError is an identity at Entra's federated-credential limit.
type LimitError struct {
	Identity string
	Names    []string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("identity %s already has %d federated credentials, Entra's limit: delete one (podid federated-credential delete NAME --identity %s; existing: %s) or use another identity",
		e.Identity, len(e.Names), e.Identity, strings.Join(e.Names, ", "))
}

func ficOf(identity string, x armmsi.FederatedIdentityCredential) FederatedCredential {
	f := FederatedCredential{Name: str(x.Name), Identity: identity}
	if p := x.Properties; p != nil {
		f.Issuer, f.Subject = str(p.Issuer), str(p.Subject)
		for _, a := range p.Audiences {
			f.Audiences = append(f.Audiences, str(a))
		}
	}
	return f
}

func ficTable(fs ...FederatedCredential) table {
	t := table{header: []string{"NAME", "IDENTITY", "ISSUER", "SUBJECT", "AUDIENCE"}}
	for _, f := range fs {
		sub := f.Subject
		if f.ClaimsMatchingExpression != "" {
			sub = f.ClaimsMatchingExpression
		}
		t.rows = append(t.rows, []string{f.Name, f.Identity, f.Issuer, sub, strings.Join(f.Audiences, ",")})
	}
	return t
}

// parseServiceAccount parses NS/NAME.
func parseServiceAccount(s string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return "", "", fmt.Errorf("service account %q: want NAMESPACE/NAME", s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", "", fmt.Errorf("service account %q: namespace: %s", s, errs[0])
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", "", fmt.Errorf("service account %q: name: %s", s, errs[0])
	}
	return ns, name, nil
}

// Subject is the sub claim of a service account's tokens.
func Subject(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// defaultFICName names the credential of a service account.
func defaultFICName(ns, name string) string {
	n := strings.NewReplacer(".", "-").Replace("kubernetes-" + ns + "-" + name)
	if len(n) > 120 {
		n = n[:120]
	}
	return n
}

func validIssuer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || len(s) > maxFICField {
		return fmt.Errorf("issuer %q must be an https URL (≤ %d characters) without query, fragment or credentials", s, maxFICField)
	}
	return nil
}

func newFICCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "federated-credential", Aliases: []string{"fic"}, Short: "Manage federated credentials of an identity"}
	var s scope
	s.bind(cmd.PersistentFlags())
	var identity string
	cmd.PersistentFlags().StringVar(&identity, "identity", "", "identity name (required)")
	var sa, namespace, issuer, audience, name string
	create := &cobra.Command{
		Use:   "create [NAME] --identity ID (--service-account NS/NAME | --namespace NS)",
		Short: "Trust a Kubernetes service account's tokens (or those of every service account of a namespace) for an identity",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if identity == "" || (sa == "") == (namespace == "") {
				return errors.New("--identity and one of --service-account or --namespace are required")
			}
			f := FederatedCredential{Audiences: []string{audience}}
			if sa != "" {
				ns, n, err := parseServiceAccount(sa)
				if err != nil {
					return err
				}
				name, f.Subject = defaultFICName(ns, n), Subject(ns, n)
			} else {
				if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
					return fmt.Errorf("--namespace %q: %s", namespace, errs[0])
				}
				// A flexible federated credential: every ServiceAccount of the namespace.
				name, f.ClaimsMatchingExpression = defaultFICName(namespace, "all"), NamespaceExpression(namespace)
			}
			if len(args) == 1 {
				name = args[0]
			}
			if issuer == "" {
				k, err := g.kube()
				if err != nil {
					return err
				}
				if issuer, err = k.issuer(cmd.Context()); err != nil {
					return err
				}
			}
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			f.Name, f.Issuer = name, issuer
			f, _, err = a.putFIC(cmd.Context(), identity, f)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), f, ficTable(f))
		},
	}
	create.Flags().StringVar(&sa, "service-account", "", "NAMESPACE/NAME of the service account")
	create.Flags().StringVar(&namespace, "namespace", "", "every service account of this namespace (a flexible federated credential: claims['sub'] matches 'system:serviceaccount:NS:*')")
	create.Flags().StringVar(&issuer, "issuer", "", "issuer (default: the current cluster's, from its OIDC discovery)")
	create.Flags().StringVar(&audience, "audience", ExchangeAudience, "audience")
	list := &cobra.Command{
		Use:   "list --identity ID",
		Short: "List an identity's federated credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if identity == "" {
				return errors.New("--identity is required")
			}
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			fs, err := a.listFICs(cmd.Context(), identity)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), fs, ficTable(fs...))
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME --identity ID",
		Short: "Delete a federated credential",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if identity == "" {
				return errors.New("--identity is required")
			}
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			if err := a.deleteFIC(cmd.Context(), identity, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "federated credential %s of identity %s deleted\n", args[0], identity)
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// listFICs lists an identity's federated credentials. It reads them with
// the api-version that has claimsMatchingExpression (armmsi has no field
// for it), through the same ARM pipeline.
func (a *azure) listFICs(ctx context.Context, identity string) ([]FederatedCredential, error) {
	if err := validIdentityName(identity); err != nil {
		return nil, err
	}
	out := []FederatedCredential{}
	next := a.ficURL(identity, "")
	for pages := 0; next != ""; pages++ {
		if pages > MaxFederatedCredentials {
			return nil, fmt.Errorf("federated credentials of identity %s: too many pages", identity)
		}
		var page struct {
			Value    []armFIC `json:"value"`
			NextLink string   `json:"nextLink"`
		}
		if err := a.armDo(ctx, http.MethodGet, next, nil, &page); err != nil {
			return nil, cloudError("federated credentials of identity "+identity, err)
		}
		for _, x := range page.Value {
			out = append(out, x.credential(identity))
		}
		next = page.NextLink
	}
	return out, nil
}

// putFIC creates or updates a credential; it reports created=false when an
// equal one (same issuer, subject, audience) already exists under any name,
// so repeating a setup is a no-op.
func (a *azure) putFIC(ctx context.Context, identity string, f FederatedCredential) (FederatedCredential, bool, error) {
	if !ficNameRE.MatchString(f.Name) {
		return f, false, fmt.Errorf("federated credential name %q must be 3-120 letters, digits, '-' or '_', starting with a letter or digit", f.Name)
	}
	if err := validIssuer(f.Issuer); err != nil {
		return f, false, err
	}
	if len(f.Audiences) != 1 || f.Audiences[0] == "" || len(f.Audiences[0]) > maxFICField || len(f.Subject) > maxFICField {
		return f, false, fmt.Errorf("a federated credential needs exactly one audience and a subject of at most %d characters", maxFICField)
	}
	if f.ClaimsMatchingExpression != "" {
		if f.Subject != "" {
			return f, false, errors.New("a federated credential has a subject or a claims matching expression, not both")
		}
		if _, err := claimsexpr.Parse(f.ClaimsMatchingExpression, claimsexpr.LanguageVersion); err != nil {
			return f, false, err
		}
	}
	existing, err := a.listFICs(ctx, identity)
	if err != nil {
		return f, false, err
	}
	var names []string
	for _, e := range existing {
		if e.Issuer == f.Issuer && e.Subject == f.Subject && e.ClaimsMatchingExpression == f.ClaimsMatchingExpression && slices.Equal(e.Audiences, f.Audiences) {
			return e, false, nil
		}
		names = append(names, e.Name)
	}
	if len(existing) >= MaxFederatedCredentials && !slices.ContainsFunc(existing, func(e FederatedCredential) bool { return strings.EqualFold(e.Name, f.Name) }) {
		return f, false, &LimitError{Identity: identity, Names: names}
	}
	if f.ClaimsMatchingExpression != "" {
		got, err := a.putFlexibleFIC(ctx, identity, f)
		return got, err == nil, err
	}
	c, err := a.fics()
	if err != nil {
		return f, false, err
	}
	r, err := c.CreateOrUpdate(ctx, a.rg, identity, f.Name, armmsi.FederatedIdentityCredential{Properties: &armmsi.FederatedIdentityCredentialProperties{
		Issuer: to.Ptr(f.Issuer), Subject: to.Ptr(f.Subject), Audiences: to.SliceOfPtrs(f.Audiences...),
	}}, nil)
	if err != nil {
		return f, false, cloudError("create federated credential "+f.Name+" of identity "+identity, err)
	}
	return ficOf(identity, r.FederatedIdentityCredential), true, nil
}

func (a *azure) deleteFIC(ctx context.Context, identity, name string) error {
	if err := validIdentityName(identity); err != nil {
		return err
	}
	if !ficNameRE.MatchString(name) {
		return fmt.Errorf("federated credential name %q must be 3-120 letters, digits, '-' or '_'", name)
	}
	c, err := a.fics()
	if err != nil {
		return err
	}
	if _, err := c.Delete(ctx, a.rg, identity, name, nil); err != nil {
		return cloudError("delete federated credential "+name+" of identity "+identity, err)
	}
	return nil
}
