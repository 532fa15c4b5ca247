package main

import (
	"github.com/arbor-project/arbor/transfer"
	"github.com/spf13/cobra"
)

func newPullCmd(g *globalFlags) *cobra.Command {
	f := &transferFlags{}
	cmd := &cobra.Command{
		Use:   "pull (--to PATH | NODE) [-r] REMOTE LOCAL",
		Short: "Copy a file or tree (-r) from the last node of PATH (or NODE of arbor serve) to this machine",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTransfer(g, f, "pull", args, transfer.Pull)
		},
	}
	f.add(cmd)
	return cmd
}
