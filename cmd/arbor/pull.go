package main

import (
	"github.com/arbor-project/arbor/transfer"
	"github.com/spf13/cobra"
)

func newPullCmd(g *globalFlags) *cobra.Command {
	f := &transferFlags{}
	cmd := &cobra.Command{
		Use:   "pull --to PATH [-r] REMOTE LOCAL",
		Short: "Copy a file or tree (-r) from the last node of PATH to this machine",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTransfer(g, f, "pull", args[0], args[1], transfer.Pull)
		},
	}
	f.add(cmd)
	return cmd
}
