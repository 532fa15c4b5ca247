package main

import (
	"github.com/arbor-project/arbor/transfer"
	"github.com/spf13/cobra"
)

func newPullCmd(g *globalFlags) *cobra.Command {
	return newTransferCmd(g, "pull", "pull (--to PATH | NODE) [-r] REMOTE LOCAL",
		"Copy a file or tree (-r) from the last node of PATH (or NODE of arbor serve) to this machine", transfer.Pull,
		func(cmd *cobra.Command, f *transferFlags) {
			cmd.Long = "Copy a file or tree (-r) from the last node of PATH (or NODE of arbor serve) to this machine.\n\n" +
				"The copy is named LOCAL, or inside an existing directory LOCAL after the last element of REMOTE as\n" +
				"given here, never after a name the node chooses. Nothing is written outside it, a file whose\n" +
				"data is not the size the node declared never appears under its name, and setuid, setgid and\n" +
				"sticky bits are dropped unless --preserve-special is given."
			cmd.Example = `  arbor pull --to ssh:db1 /etc/postgresql/16/main/postgresql.conf ./
  arbor pull --to ssh:db1 -r /var/log/postgresql ./logs       # a directory tree
  arbor pull web2 /etc/hostname -                             # NODE of arbor serve, to stdout
  arbor pull -w 'ssh:web[01-02]' /etc/hosts out/              # out/web01/hosts, out/web02/hosts`
			cmd.Flags().BoolVar(&f.preserveSpecial, "preserve-special", false, "keep setuid, setgid and sticky bits (dropped by default)")
		})
}
