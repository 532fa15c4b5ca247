package main

import (
	"os"

	"github.com/arbor-project/arbor/control"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "man DIR",
		Short:   "Write a man page for every command into DIR (arbor.1, arbor-exec.1, ...)",
		Example: "  arbor man /usr/local/share/man/man1 && man arbor-exec",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return localErr(err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Title: "ARBOR", Section: "1", Source: "arbor " + versionLine()}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return localErr(err)
			}
			return nil
		},
	}
}

// completeNodes completes NODE (the first argument) with the names and
// IDs of arbor serve's nodes, when a server answers; nothing otherwise.
func completeNodes(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 || cmd.Flags().Changed("to") {
			return nil, cobra.ShellCompDirectiveDefault
		}
		var out []string
		_ = g.withDaemon(func(d *daemon) error {
			es, err := control.ReadTree(d.ctx, d.root())
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Parent != nil {
					out = append(out, e.Name, e.Name[lastSlash(e.Name)+1:])
				}
			}
			return nil
		})
		return dedup(out), cobra.ShellCompDirectiveNoFileComp
	}
}

func lastSlash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}
