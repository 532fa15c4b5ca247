package main

import (
	"fmt"

	"github.com/arbor-project/arbor/builtin"
	"github.com/spf13/cobra"
)

// versionLine is `arbor version`'s text, also `arbor --version`'s:
// "arbor VERSION (commit C[, modified]) GOVERSION OS/ARCH".
func versionLine() string {
	b := builtin.Build()
	s := "arbor " + b.Version
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if b.Modified {
			c += ", modified"
		}
		s += " (commit " + c + ")"
	}
	return fmt.Sprintf("%s %s %s/%s", s, b.GoVersion, b.OS, b.Arch)
}

func newVersionCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print arbor's version, commit, Go version and platform (from the binary's build information)",
		Example: `  arbor version
  arbor version -o json     # {"version":"v0.3.0","commit":"…","go_version":"go1.26.0","os":"linux","arch":"amd64"}
  arbor call web2 agent.info   # a node's version too`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				printJSON(builtin.Build())
				return nil
			}
			fmt.Println(versionLine())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
