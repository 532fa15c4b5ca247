package main

import (
	"fmt"
	"strings"

	"github.com/arbor-project/arbor/control"
	"github.com/spf13/cobra"
)

// treeJSON is one node of `arbor tree --json`.
type treeJSON struct {
	ID       uint32      `json:"id"`
	Name     string      `json:"name"`
	Method   string      `json:"method"`
	Host     string      `json:"host"`
	PID      int         `json:"pid"`
	State    string      `json:"state"`
	RTTMs    float64     `json:"rtt_ms"`
	Children []*treeJSON `json:"children"`
}

// nest builds the tree from serve.tree's flat list (parents first).
func nest(es []control.NodeEntry) *treeJSON {
	byID := map[uint32]*treeJSON{}
	var root *treeJSON
	for _, e := range es {
		n := &treeJSON{ID: e.ID, Name: e.Name, Method: e.Method, Host: e.Host, PID: e.PID, State: e.State, RTTMs: e.RTTMs, Children: []*treeJSON{}}
		byID[e.ID] = n
		if e.Parent == nil {
			root = n
			continue
		}
		if p := byID[*e.Parent]; p != nil {
			p.Children = append(p.Children, n)
		}
	}
	return root
}

func newTreeCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tree [--json]",
		Short: "Show the running tree: IDs, names, methods, hosts, pids, states and heartbeat RTTs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDaemon(func(d *daemon) error {
				es, err := d.nodes()
				if err != nil {
					return err
				}
				root := nest(es)
				if asJSON {
					printJSON(root)
					return nil
				}
				fmt.Print(renderTree(root))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// renderTree draws the tree with box-drawing connectors, one node a line.
func renderTree(root *treeJSON) string {
	var b strings.Builder
	line := func(n *treeJSON) string {
		s := fmt.Sprintf("%d %s  %s", n.ID, n.Name, n.Method)
		if n.Host != "" {
			s += " host " + n.Host
		}
		if n.PID != 0 {
			s += fmt.Sprintf(" pid %d", n.PID)
		}
		s += "  " + strings.ToUpper(n.State)
		if n.RTTMs > 0 {
			s += fmt.Sprintf("  rtt %.3f ms", n.RTTMs)
		}
		return s
	}
	var walk func(n *treeJSON, prefix string)
	walk = func(n *treeJSON, prefix string) {
		for i, c := range n.Children {
			conn, pad := "├── ", "│   "
			if i == len(n.Children)-1 {
				conn, pad = "└── ", "    "
			}
			b.WriteString(prefix + conn + line(c) + "\n")
			walk(c, prefix+pad)
		}
	}
	if root != nil {
		b.WriteString(line(root) + "\n")
		walk(root, "")
	}
	return b.String()
}
