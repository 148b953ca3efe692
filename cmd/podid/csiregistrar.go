package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/csiregistrar"
	"github.com/podid/podid/internal/daemon"
)

// csiRegistrarOptions are the flags of `podid csi-registrar`.
type csiRegistrarOptions struct {
	serverOptions
	driverName       string
	registrationPath string
	registrationDir  string
	csiAddress       string
}

func (o *csiRegistrarOptions) validate(cmd *cobra.Command) error {
	errs := []error{o.serverOptions.validate(cmd)}
	for _, p := range []struct{ flag, path string }{{"kubelet-registration-path", o.registrationPath}, {"registration-dir", o.registrationDir}} {
		if !filepath.IsAbs(p.path) {
			errs = append(errs, fmt.Errorf("--%s %q: want an absolute path", p.flag, p.path))
		}
	}
	if o.driverName == "" {
		errs = append(errs, errors.New("--driver-name is required"))
	}
	return errors.Join(errs...)
}

func newCSIRegistrarCommand() *cobra.Command {
	o := &csiRegistrarOptions{serverOptions: serverOptions{component: "csi-registrar"}}
	cmd := &cobra.Command{
		Use:   "csi-registrar",
		Short: "Registers a CSI driver with the kubelet (plugin registration), like node-driver-registrar",
		Long: `podid csi-registrar serves the kubelet's plugin-registration API on
<registration-dir>/<driver-name>-reg.sock once the driver's socket (--csi-address)
exists, so the kubelet registers the driver at --kubelet-registration-path (the same
socket, as the node sees it). It exits when the kubelet refuses the driver. See
docs/csi.md.`,
		Args: noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := o.logger()
			r, err := csiregistrar.New(csiregistrar.Config{
				DriverName: o.driverName, Endpoint: o.registrationPath,
				RegistrationDir: o.registrationDir, WaitFor: o.csiAddress, Logger: log,
			})
			if err != nil {
				return usageError{err}
			}
			return daemon.Run(cmd.Context(), daemon.Config{HealthAddr: o.healthAddr, DebugAddr: o.debugAddr, Ready: r.Registered, Logger: log}, r.Run)
		},
	}
	f := cmd.Flags()
	o.serverOptions.addFlags(f, serverDefaults{health: "127.0.0.1:8899"})
	_ = f.MarkHidden(flagMetricsAddr) // nothing to measure
	f.StringVar(&o.driverName, "driver-name", "secrets-store.csi.k8s.io", "the CSI driver's name (its CSIDriver object's)")
	f.StringVar(&o.csiAddress, "csi-address", "/csi/csi.sock", "the driver's socket as this container sees it: registration waits for it (empty: do not wait)")
	f.StringVar(&o.registrationPath, "kubelet-registration-path", "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock", "the driver's socket as the kubelet sees it, on the node")
	f.StringVar(&o.registrationDir, "registration-dir", "/registration", "the kubelet's plugins_registry directory as this container sees it")
	return cmd
}
