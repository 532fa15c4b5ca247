package main

import (
	"fmt"
	"strconv"
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

// nest builds the tree from serve.tree's flat list. A node whose parent is
// not in the list (it joined between two pages) hangs below the root, as
// the server shows a node whose parent it does not know.
func nest(es []control.NodeEntry) *treeJSON {
	byID := map[uint32]*treeJSON{}
	var root *treeJSON
	for _, e := range es {
		n := &treeJSON{ID: e.ID, Name: e.Name, Method: e.Method, Host: e.Host, PID: e.PID, State: e.State, RTTMs: e.RTTMs, Children: []*treeJSON{}}
		byID[e.ID] = n
		if e.Parent == nil {
			root = n
		}
	}
	for _, e := range es {
		if e.Parent == nil || root == nil {
			continue
		}
		p := byID[*e.Parent]
		if p == nil || *e.Parent == e.ID {
			p = root
		}
		p.Children = append(p.Children, byID[e.ID])
	}
	return root
}

// tree is the daemon's whole tree, read page by page: the root, then every
// node in ID order, each node's parent before it.
func (d *daemon) tree() ([]control.NodeEntry, error) {
	root := d.root()
	defer root.Release()
	es, err := control.ReadTree(d.ctx, root)
	if err != nil {
		return nil, callErr(err)
	}
	return es, nil
}

// find picks NODE out of the tree es: an ID, a full name, or the last hop
// of one name. An unknown node is a usage error (exit 2).
func (d *daemon) find(spec string, es []control.NodeEntry) (control.NodeEntry, error) {
	if id, err := strconv.ParseUint(spec, 10, 32); err == nil {
		for _, e := range es {
			if e.ID == uint32(id) {
				return e, nil
			}
		}
		return control.NodeEntry{}, usageErr("unknown node %s: no node with that ID in the tree at %s (see arbor tree)", spec, d.socket)
	}
	var exact, byLast []control.NodeEntry
	for _, e := range es {
		if e.Name == spec {
			exact = append(exact, e)
		}
		if e.Name[strings.LastIndexByte(e.Name, '/')+1:] == spec {
			byLast = append(byLast, e)
		}
	}
	if len(exact) > 0 {
		// Two nodes with one name: sending a file to the first would be a
		// guess. Say so, whatever else matches.
		byLast = exact
	}
	switch len(byLast) {
	case 1:
		return byLast[0], nil
	case 0:
		return control.NodeEntry{}, usageErr("unknown node %q: no node with that name in the tree at %s (see arbor tree)", spec, d.socket)
	}
	ids := make([]string, len(byLast))
	for i, e := range byLast {
		ids[i] = fmt.Sprintf("%d (%s)", e.ID, e.Name)
	}
	return control.NodeEntry{}, usageErr("node name %q is ambiguous: %s; use an ID", spec, strings.Join(ids, ", "))
}

func newTreeCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tree [--json]",
		Short: "Show the running tree: IDs, names, methods, hosts, pids, states and heartbeat RTTs",
		Example: `  arbor tree
  arbor tree -o json | jq -r '.children[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDaemon(func(d *daemon) error {
				es, err := d.tree()
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
