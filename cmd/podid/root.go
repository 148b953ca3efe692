package main

import (
	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/cli"
)

func newRootCommand() *cobra.Command {
	root := groupCommand(&cobra.Command{
		Use:           "podid",
		Short:         "Identity for Kubernetes pods without secrets",
		SilenceUsage:  true,
		SilenceErrors: true,
	})
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newControllerCommand(),
		newSTSCommand(),
		newWebhookCommand(),
		newAgentCommand(),
		newBrokerCommand(),
		newCSIProviderCommand(),
		newCSIRegistrarCommand(),
		newUpCommand(),
		newDownCommand(),
	)
	root.AddCommand(cli.NewCommands()...)
	return root
}
