package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/arbor-project/arbor/router"
	"github.com/spf13/cobra"
)

func newRoutesCmd(g *globalFlags) *cobra.Command {
	var to, at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "routes (--to PATH | [--at NODE]) [--json]",
		Short: "Build the chain and print every node's route table, or print NODE's table in arbor serve's tree",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return g.daemonRoutes(at, asJSON)
			}
			if at != "" {
				return usageErr("routes: --at is for arbor serve's tree; with --to every node's table is shown")
			}
			s, err := g.open(to)
			if err != nil {
				return err
			}
			defer s.close()
			tables := []router.Table{s.root.Router.Table()}
			for _, rm := range s.chain {
				var t router.Table
				if err := rm.Call(s.ctx, "agent.routes", nil, &t); err != nil {
					return callErr(err)
				}
				tables = append(tables, t)
			}
			if asJSON {
				b, _ := json.MarshalIndent(map[string]any{"nodes": tables}, "", "  ")
				fmt.Println(string(b))
				return nil
			}
			fmt.Print(renderTables(tables))
			return nil
		},
	}
	addTargetFlag(cmd, &to, "path of hops, e.g. local/local")
	cmd.Flags().StringVar(&at, "at", "", "without --to: the node of arbor serve's tree whose table to show (default the root)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// renderTables draws each node's table as a tree with box-drawing connectors.
func renderTables(tables []router.Table) string {
	var b strings.Builder
	for i, t := range tables {
		if i > 0 {
			b.WriteString("\n")
		}
		parent := "none"
		if t.Parent != nil {
			parent = fmt.Sprint(*t.Parent)
		}
		fmt.Fprintf(&b, "node %d %s (method %s, parent %s)\n", t.ID, t.Name, methodOf(t), parent)
		// Group routes by the child link they go through.
		children := map[uint32][]router.RouteEntry{}
		var order []uint32
		for _, r := range t.Routes {
			if _, ok := children[r.Via]; !ok {
				order = append(order, r.Via)
			}
			children[r.Via] = append(children[r.Via], r)
		}
		for ci, via := range order {
			last := ci == len(order)-1
			conn, pad := "├── ", "│   "
			if last {
				conn, pad = "└── ", "    "
			}
			rs := children[via]
			for ri, r := range rs {
				if ri == 0 {
					fmt.Fprintf(&b, "%s%d %s (%s)\n", conn, r.ID, r.Name, methodOfName(r.Name))
					continue
				}
				sub := "├── "
				if ri == len(rs)-1 {
					sub = "└── "
				}
				fmt.Fprintf(&b, "%s%s%d %s (via %d)\n", pad, sub, r.ID, r.Name, via)
			}
		}
	}
	return b.String()
}

func methodOf(t router.Table) string {
	if t.Parent == nil {
		return "root"
	}
	return methodOfName(t.Name)
}

// methodOfName reads the method from the last hop of a node name such as
// "local.4711/local.4712".
func methodOfName(name string) string {
	last := name[strings.LastIndex(name, "/")+1:]
	if i := strings.IndexAny(last, ".:"); i > 0 {
		return last[:i]
	}
	return last
}
