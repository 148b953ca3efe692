package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/cli"
)

// Down removes everything Up made: the release (so the agent stops
// putting its interception rules back), those rules, the cluster and every
// trace it left on the host (hack/cluster.sh down verifies that), the
// operator's credential, and the CLI config Up pointed at the local sts.
func Down(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return &PreflightError{"podid down must run as root (it stops the kubelet and removes iptables rules)", "run it as root: sudo podid down"}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	p, err := newProgress(o.Err, o.Verbose, o.logDir(), "down")
	if err != nil {
		return err
	}
	defer p.close()
	s := &session{o: o, p: p}
	p.say("podid down (log: %s)", p.logPath)
	if _, err := os.Stat(filepath.Join(o.Cache, "cluster", "cluster.env")); err == nil {
		if err := p.step(ctx, "uninstall", "uninstall podid (helm uninstall, interception rules)", s.uninstall); err != nil {
			p.say("  %v; stopping the cluster anyway", err)
		}
	}
	if err := p.step(ctx, "cluster", "stop the cluster and remove every trace (hack/cluster.sh down)", s.script("hack/cluster.sh", "down")); err != nil {
		return fmt.Errorf("%w\n  log: %s", err, p.logPath)
	}
	if err := s.forgetLocalCloud(); err != nil {
		return err
	}
	p.say("podid is down: nothing of it is left on this machine (hack/cluster.sh leftovers checks)")
	return nil
}

func (s *session) uninstall(ctx context.Context) error {
	var errs []error
	if err := s.clusterEnv(ctx); err != nil {
		return err
	}
	if _, err := os.Stat(s.o.helmBin()); err == nil {
		if _, err := s.run(ctx, s.o.helmBin(), "uninstall", release, "--namespace", podidNamespace, "--kubeconfig", s.env["KUBECONFIG"],
			"--ignore-not-found", "--wait", "--timeout", "2m"); err != nil {
			errs = append(errs, err)
		}
	}
	// The agent's rules outlive it by design (a restarting agent must not
	// open a window): remove them with podid's own command.
	self := s.o.Self
	if self == "" {
		self, _ = os.Executable()
	}
	if _, err := exec.LookPath(self); err == nil {
		if _, err := s.run(ctx, self, "agent", "uninstall-interception", "--pod-cidr", s.env["PODID_POD_CIDR"], "--host-ip", s.env["PODID_NODE_IP"]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forgetLocalCloud removes $PODID_CACHE/up (the admin secret, the values)
// and the CLI config if it still points at the local sts Up recorded.
func (s *session) forgetLocalCloud() error {
	path := s.o.CLIConfig
	if path == "" {
		var err error
		if path, err = cli.DefaultConfigPath(); err != nil {
			return err
		}
	}
	if b, err := os.ReadFile(path); err == nil {
		var c cli.Config
		if yaml.Unmarshal(b, &c) == nil && c.Cloud == cli.CloudLocal && c.ClientID == adminClientID &&
			c.ClientSecretFile == filepath.Join(s.o.upDir(), "admin-secret") {
			if err := os.Remove(path); err != nil {
				return err
			}
			s.p.say("  removed %s (it pointed podid's CLI at the local sts)", path)
		}
	}
	return os.RemoveAll(s.o.upDir())
}
