package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newInventoryCmd(g *globalFlags) *cobra.Command {
	inv := &cobra.Command{Use: "inventory", Short: "Read the Ansible inventory (--inventory, $ARBOR_INVENTORY or ~/.config/arbor/inventory)"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [SET]",
		Short: "Print the targets a set expands to (default @all): label and path, one per line",
		Example: `  arbor --inventory hosts.ini inventory list          # every host (@all): label and path
  arbor inventory list @front -o json
  arbor inventory list 'ssh:web[01-03],@back'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set := "@all"
			if len(args) == 1 {
				set = args[0]
			}
			if _, err := g.loadInventory(true); err != nil {
				return err
			}
			ts, err := g.oneShotTargets(set, &fanFlags{})
			if err != nil {
				return err
			}
			w := 0
			for _, t := range ts {
				w = max(w, len(t.Label))
			}
			for _, t := range ts {
				if asJSON {
					printJSON(map[string]string{"target": t.Label, "path": t.Path})
				} else {
					fmt.Printf("%-*s %s\n", w, t.Label, strings.TrimSpace(t.Path))
				}
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "one JSON object per target: {\"target\",\"path\"}")
	inv.AddCommand(list)
	return inv
}
