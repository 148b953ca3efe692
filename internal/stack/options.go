package stack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Options configure Up and Down.
type Options struct {
	// Root is podid's source tree: hack/ (the node's recipe), deploy/chart
	// and deploy/examples/up.
	Root string
	// Cache is $PODID_CACHE: built binaries, the cluster's state, logs.
	Cache string
	// Verbose copies the underlying commands' output to Err.
	Verbose bool
	// Timeout bounds the whole run (cold: the Kubernetes build is most of it).
	Timeout time.Duration
	// CLIConfig is podid's CLI config file that Up points at the local sts
	// ("" = the CLI's default, $XDG_CONFIG_HOME/podid/config.yaml).
	CLIConfig string
	// Self is this podid binary: Down runs its `agent uninstall-interception`.
	Self string
	// Out gets the summary, Err the progress.
	Out, Err io.Writer
}

// UsageError is an invalid option; the CLI maps it to exit code 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Validate checks the options and fills in defaults.
func (o *Options) Validate() error {
	if o.Timeout <= 0 {
		return &UsageError{fmt.Errorf("--timeout %s: must be positive", o.Timeout)}
	}
	if o.Root == "" {
		root, err := FindRoot(".")
		if err != nil {
			return &UsageError{err}
		}
		o.Root = root
	}
	if _, err := os.Stat(filepath.Join(o.Root, "hack", "cluster.sh")); err != nil {
		return &UsageError{fmt.Errorf("--source-dir %s: not podid's source tree (no hack/cluster.sh)", o.Root)}
	}
	if o.Cache == "" {
		o.Cache = filepath.Join(o.Root, ".cache")
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Err == nil {
		o.Err = os.Stderr
	}
	return nil
}

// FindRoot returns the nearest directory at or above dir holding
// hack/cluster.sh and deploy/chart/podid.
func FindRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if isRoot(d) {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", errors.New("not inside podid's source tree (no hack/cluster.sh above the current directory): run from the repository or pass --source-dir")
		}
		d = up
	}
}

func isRoot(d string) bool {
	for _, p := range []string{"hack/cluster.sh", "deploy/chart/podid/Chart.yaml"} {
		if _, err := os.Stat(filepath.Join(d, p)); err != nil {
			return false
		}
	}
	return true
}

func (o *Options) upDir() string  { return filepath.Join(o.Cache, "up") }
func (o *Options) logDir() string { return filepath.Join(o.Cache, "logs") }
func (o *Options) helmBin() string {
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	return filepath.Join(o.Cache, "bin", "helm")
}
