package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/podid/podid/internal/daemon"
)

// The flag vocabulary every subcommand shares: one name for one thing.
const (
	flagKubeconfig  = "kubeconfig"
	flagLogLevel    = "log-level"
	flagListenAddr  = "listen-addr"
	flagHealthAddr  = "health-addr"
	flagMetricsAddr = "metrics-addr"
	flagDebugAddr   = "debug-addr"
	flagClusterWide = "cluster-wide"
	flagTenantID    = "tenant-id"
	flagAuthority   = "authority"
)

// serverOptions are the flags of a subcommand that runs a server
// component: where it logs and where its endpoints listen. An empty
// address disables that endpoint.
type serverOptions struct {
	component                                      string
	logLevel                                       string
	listenAddr, healthAddr, metricsAddr, debugAddr string

	// metricsFollowsHealth: /metrics is served with the probes unless
	// --metrics-addr is given (agent and webhook always served them together).
	metricsFollowsHealth bool
	level                slog.Level // set by validate
}

// serverDefaults are a subcommand's default addresses. Listen "" means the
// subcommand has no --listen-addr.
type serverDefaults struct {
	listen, listenHelp, health, metrics string
	metricsFollowsHealth                bool
}

func (o *serverOptions) addFlags(f *pflag.FlagSet, d serverDefaults) {
	f.StringVar(&o.logLevel, flagLogLevel, "info", "log level: debug, info, warn or error (JSON on stderr)")
	if d.listenHelp != "" {
		f.StringVar(&o.listenAddr, flagListenAddr, d.listen, d.listenHelp)
	}
	f.StringVar(&o.healthAddr, flagHealthAddr, d.health, "/healthz and /readyz listen address (empty disables)")
	metricsHelp := "Prometheus /metrics listen address (empty disables)"
	if d.metricsFollowsHealth {
		metricsHelp = "Prometheus /metrics listen address (default: the --health-addr; empty disables)"
	}
	f.StringVar(&o.metricsAddr, flagMetricsAddr, d.metrics, metricsHelp)
	f.StringVar(&o.debugAddr, flagDebugAddr, "", "net/http/pprof listen address (empty disables; keep it on loopback)")
	o.metricsFollowsHealth = d.metricsFollowsHealth
}

// validate checks the values and settles the derived ones; its errors are
// usage errors.
func (o *serverOptions) validate(cmd *cobra.Command) error {
	var errs []error
	l, err := daemon.ParseLevel(o.logLevel)
	if err != nil {
		errs = append(errs, fmt.Errorf("--%s: %w", flagLogLevel, err))
	}
	o.level = l
	if o.metricsFollowsHealth && !changed(cmd.Flags(), flagMetricsAddr) {
		o.metricsAddr = o.healthAddr
	}
	for _, a := range []struct{ flag, addr string }{{flagListenAddr, o.listenAddr}, {flagHealthAddr, o.healthAddr}, {flagMetricsAddr, o.metricsAddr}, {flagDebugAddr, o.debugAddr}} {
		if a.flag == flagMetricsAddr && o.metricsFollowsHealth && !changed(cmd.Flags(), flagMetricsAddr) {
			continue // the --health-addr, checked already
		}
		if err := checkAddr(a.flag, a.addr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// logger is the component's logger; client-go and controller-runtime log
// through their own global logger, pointed at the same handler.
func (o *serverOptions) logger() *slog.Logger {
	log := daemon.NewLogger(os.Stderr, o.level).With("component", o.component)
	crlog.SetLogger(logr.FromSlogHandler(log.Handler()))
	return log
}

// checkAddr accepts "" (disabled) or host:port with a numeric port.
func checkAddr(flag, addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || (n == 0 && port != "0") {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err != nil {
		return fmt.Errorf("--%s %q: want host:port or empty to disable: %w", flag, addr, err)
	}
	return nil
}

// alias registers old as a deprecated second name of the flag now: the
// same value, and pflag prints a deprecation notice when it is used.
func alias(f *pflag.FlagSet, old, now string) {
	nf := f.Lookup(now)
	f.AddFlag(&pflag.Flag{Name: old, Usage: "deprecated: use --" + now, Value: nf.Value, DefValue: nf.DefValue, NoOptDefVal: nf.NoOptDefVal})
	if err := f.MarkDeprecated(old, "use --"+now+" instead"); err != nil {
		panic(err) // old was just added
	}
}

// changed reports whether the flag was given, under its name or a
// deprecated alias (which shares the flag's Value but not its Changed).
func changed(f *pflag.FlagSet, name string) bool {
	v := f.Lookup(name).Value
	found := false
	f.Visit(func(fl *pflag.Flag) { found = found || fl.Value == v })
	return found
}

// zeroDisables rewrites the deprecated address "0" (controller-runtime's
// word for disabled) of the named flags to "", with a notice.
func zeroDisables(cmd *cobra.Command, names ...string) {
	for _, name := range names {
		f := cmd.Flags().Lookup(name)
		if f.Value.String() == "0" {
			cmd.PrintErrf("Flag --%s=0 has been deprecated, use --%s=\"\" to disable\n", name, name)
			_ = f.Value.Set("") // a string flag accepts anything
		}
	}
}

// debugLevel is the deprecated boolean --debug of `podid sts serve`: true
// means --log-level=debug.
type debugLevel struct{ level *string }

func (d debugLevel) String() string { return "false" }
func (d debugLevel) Type() string   { return "bool" }
func (d debugLevel) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if on {
		*d.level = "debug"
	}
	return nil
}

// noArgs is cobra.NoArgs as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return usageError{err}
	}
	return nil
}

// groupCommand makes cmd, which only holds subcommands, print its help when
// called alone and fail with a usage error on an unknown subcommand.
func groupCommand(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
		}
		return cmd.Help()
	}
	return cmd
}
