package main

import (
	"github.com/arbor-project/arbor/transfer"
	"github.com/spf13/cobra"
)

func newPullCmd(g *globalFlags) *cobra.Command {
	return newTransferCmd(g, "pull", "pull (--to PATH | NODE) [-r] REMOTE LOCAL",
		"Copy a file or tree (-r) from the last node of PATH (or NODE of arbor serve) to this machine", transfer.Pull)
}
