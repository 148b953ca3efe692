package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podid/podid/internal/cli"
)

// identity is what `podid identity create -o json` prints (the fields used).
type identity struct {
	Name        string `json:"name"`
	ID          string `json:"id"`
	ClientID    string `json:"clientId"`
	PrincipalID string `json:"principalId"`
}

// podidCLI runs one of podid's own CLI verbs in this process, exactly as
// a user types it, and returns what it printed on stdout.
func (s *session) podidCLI(ctx context.Context, args ...string) ([]byte, error) {
	root := &cobra.Command{Use: "podid", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(cli.NewCommands()...)
	full := append(append([]string{}, args...), "--kubeconfig", s.env["KUBECONFIG"])
	if s.o.CLIConfig != "" {
		full = append(full, "--podid-config", s.o.CLIConfig)
	}
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(full)
	s.p.line("$ podid " + strings.Join(args, " "))
	s.p.setStatus("podid " + strings.Join(args, " "))
	err := root.ExecuteContext(ctx)
	for _, l := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		if l != "" {
			s.p.line(l)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("podid %s: %w", strings.Join(args, " "), err)
	}
	return out.Bytes(), nil
}

// setupIdentities does what a user does against Azure, with podid's CLI
// against the sts's ARM-compatible API: point the CLI at the cloud, create
// the identities, trust the service accounts, grant the roles. Every verb
// is idempotent (PUT), so a second run changes nothing.
func (s *session) setupIdentities(ctx context.Context) error {
	s.identitiesAt = time.Now()
	svc, err := s.k.cs.CoreV1().Services(podidNamespace).Get(ctx, "podid-sts", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the sts's Service: %w", err)
	}
	s.stsURL = "https://" + svc.Spec.ClusterIP
	// The rollout is done, but kube-proxy programs the Service's rules a
	// moment later; until then the address refuses connections.
	if err := waitAccepts(ctx, net.JoinHostPort(svc.Spec.ClusterIP, "443"), time.Minute); err != nil {
		return fmt.Errorf("the sts's Service: %w (its pod is ready, so kube-proxy has not programmed the Service: see %s)", err, filepath.Join(s.o.Cache, "cluster", "logs", "kube-proxy.log"))
	}
	ca, err := s.k.cs.CoreV1().ConfigMaps(podidNamespace).Get(ctx, "podid-sts-ca", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the sts's CA: %w", err)
	}
	caFile := filepath.Join(s.o.upDir(), "sts-ca.pem")
	if err := os.WriteFile(caFile, []byte(ca.Data["ca.pem"]), 0o644); err != nil {
		return err
	}
	// The CLI's config: after up, podid's verbs talk to this sts by
	// default; `podid config set-cloud azure` switches.
	if _, err := s.podidCLI(ctx, "config", "set-cloud", "local", "--authority", s.stsURL, "--ca-file", caFile,
		"--tenant-id", s.tenant, "--client-id", adminClientID, "--client-secret-file", filepath.Join(s.o.upDir(), "admin-secret"),
		"--subscription", subscriptionID, "--resource-group", resourceGroup, "--location", location); err != nil {
		return err
	}
	// Vaults first: the identities' roles are granted at their scopes.
	if err := s.setupVaults(ctx); err != nil {
		return err
	}
	for _, spec := range Identities {
		// A new identity (a first run, or an sts whose state went with its
		// pod) makes every demo pod's token stale: restartStale.
		if _, err := s.podidCLI(ctx, "identity", "show", spec.Name, "-o", "json"); err != nil {
			var nf *cli.NotFoundError
			if !errors.As(err, &nf) {
				return err
			}
			s.newIdentities = true
		}
		out, err := s.podidCLI(ctx, "identity", "create", spec.Name, "-o", "json")
		if err != nil {
			return err
		}
		var id identity
		if err := json.Unmarshal(out, &id); err != nil || id.ClientID == "" || id.PrincipalID == "" {
			return fmt.Errorf("podid identity create %s printed no client and principal id: %q", spec.Name, out)
		}
		s.created[spec.Name] = id
		for _, sa := range spec.ServiceAccounts {
			if _, err := s.podidCLI(ctx, "fic", "create", "--identity", spec.Name, "--service-account", sa, "-o", "json"); err != nil {
				return err
			}
		}
		if err := s.grant(ctx, spec.Name, "", spec.Roles); err != nil {
			return err
		}
	}
	return nil
}

// grant gives the assignee (an identity's name; or, with objectID, a
// principal's object id, as --assignee-object-id) the roles it does not
// hold yet.
func (s *session) grant(ctx context.Context, assignee, objectID string, roles []RoleSpec) error {
	if len(roles) == 0 {
		return nil
	}
	who := []string{"--assignee", assignee}
	if objectID != "" {
		who = []string{"--assignee-object-id", objectID}
	}
	out, err := s.podidCLI(ctx, append([]string{"role-assignment", "list", "-o", "json"}, who...)...)
	if err != nil {
		return err
	}
	var have []map[string]any
	if err := json.Unmarshal(out, &have); err != nil {
		return fmt.Errorf("podid role-assignment list: %w", err)
	}
	for _, r := range roles {
		if hasRole(have, r) {
			continue
		}
		args := append([]string{"role-assignment", "create", "--role", r.Role, "-o", "json"}, who...)
		if r.Scope != "" {
			args = append(args, "--scope", r.Scope)
		}
		if _, err := s.podidCLI(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// setupVaults does seed 003's step 2 with podid's CLI: the vault (created
// when missing), the operator's Key Vault Administrator role on it, and
// each secret, set when the vault has none of that name — a second run
// adds no version.
func (s *session) setupVaults(ctx context.Context) error {
	for _, v := range Vaults {
		if _, err := s.podidCLI(ctx, "keyvault", "show", v.Name, "-o", "json"); err != nil {
			var nf *cli.NotFoundError
			if !errors.As(err, &nf) {
				return err
			}
			if _, err := s.podidCLI(ctx, "keyvault", "create", v.Name, "-o", "json"); err != nil {
				return err
			}
		}
		if err := s.grant(ctx, "", adminObjectID, []RoleSpec{{Role: "Key Vault Administrator", Scope: vaultScope(v.Name)}}); err != nil {
			return err
		}
		for _, sec := range v.Secrets {
			_, err := s.podidCLI(ctx, "keyvault", "secret", "show", "--vault-name", v.Name, "--name", sec.Name, "-o", "json")
			var nf *cli.NotFoundError
			if err == nil {
				continue
			}
			if !errors.As(err, &nf) {
				return err
			}
			if _, err := s.podidCLI(ctx, "keyvault", "secret", "set", "--vault-name", v.Name, "--name", sec.Name, "--value", sec.Value, "-o", "json"); err != nil {
				return err
			}
		}
	}
	return nil
}

// hasRole: the CLI's list holds the role at the scope. It reads both list
// shapes the CLI has had (role/resource, and az's roleDefinitionName/scope);
// an empty Scope matches any.
func hasRole(have []map[string]any, r RoleSpec) bool {
	field := func(m map[string]any, keys ...string) string {
		for _, k := range keys {
			if v, ok := m[k].(string); ok && v != "" {
				return v
			}
		}
		return ""
	}
	for _, h := range have {
		if !strings.EqualFold(field(h, "roleDefinitionName", "role"), r.Role) {
			continue
		}
		if r.Scope == "" || strings.EqualFold(strings.TrimRight(field(h, "scope", "resource"), "/"), strings.TrimRight(r.Scope, "/")) {
			return true
		}
	}
	return false
}

// waitAccepts waits (at most limit) until addr accepts a TCP connection.
func waitAccepts(ctx context.Context, addr string, limit time.Duration) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, limit, true, func(ctx context.Context) (bool, error) {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			last = err
			return false, nil
		}
		_ = c.Close()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%s accepted no connection in %s: %v", addr, limit, last)
	}
	return nil
}
