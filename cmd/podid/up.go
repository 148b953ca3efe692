package main

import (
	"errors"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podid/podid/internal/stack"
)

// Flags of `podid up` and `podid down` (docs/flags.md).
const (
	flagVerbose   = "verbose"
	flagTimeout   = "timeout"
	flagSourceDir = "source-dir"
)

// stackOptions are the flags up and down share; the environment gives
// the cache ($PODID_CACHE) as the hack scripts read it.
type stackOptions struct {
	o stack.Options
}

func (s *stackOptions) addFlags(f *pflag.FlagSet, timeout time.Duration) {
	f.BoolVarP(&s.o.Verbose, flagVerbose, "v", false, "show the underlying commands' output (it is always in the log under $PODID_CACHE/logs)")
	f.DurationVar(&s.o.Timeout, flagTimeout, timeout, "give up after this long")
	f.StringVar(&s.o.Root, flagSourceDir, "", "podid's source tree, for its node recipe (hack/), chart and demo manifests (default: the one holding the current directory)")
}

// options settles the defaults: $PODID_CACHE, else <source-dir>/.cache.
func (s *stackOptions) options(cmd *cobra.Command) (stack.Options, error) {
	o := s.o
	o.Out, o.Err = cmd.OutOrStdout(), cmd.ErrOrStderr()
	o.Cache = os.Getenv("PODID_CACHE")
	if err := o.Validate(); err != nil {
		var u *stack.UsageError
		if errors.As(err, &u) {
			return o, usageError{err}
		}
		return o, err
	}
	return o, nil
}

func newUpCommand() *cobra.Command {
	s := &stackOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run podid on this machine: a local cluster, podid from its chart, identities and demo pods that get tokens",
		Long: `podid up installs what is missing, starts the project's single-node cluster
(hack/cluster.sh), builds and imports podid's images, installs podid's Helm chart
for the local identity provider, sets up identities with podid's CLI against the
sts's ARM API, applies the seed articles' manifests and waits until every demo pod
got its token; then prints a summary. A second run changes nothing.
Must run as root, from podid's source tree (or --source-dir).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := s.options(cmd)
			if err != nil {
				return err
			}
			return stack.Up(cmd.Context(), o)
		},
	}
	s.addFlags(cmd.Flags(), 45*time.Minute)
	return cmd
}

func newDownCommand() *cobra.Command {
	s := &stackOptions{}
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove everything podid up made: the release, the cluster and every trace on the host",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := s.options(cmd)
			if err != nil {
				return err
			}
			return stack.Down(cmd.Context(), o)
		},
	}
	s.addFlags(cmd.Flags(), 10*time.Minute)
	return cmd
}
