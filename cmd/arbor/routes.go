package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/router"
	"github.com/spf13/cobra"
)

func newRoutesCmd(g *globalFlags) *cobra.Command {
	var to, at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "routes (--to PATH | [--at NODE]) [--json]",
		Short: "Build the chain and print every node's route table, or print NODE's table in arbor serve's tree",
		Example: `  arbor routes --to local/local/local          # every node's route table, as a tree
  arbor routes --to ssh:bastion/ssh:db1 -o json
  arbor routes                                 # arbor serve's root
  arbor routes --at web2                       # NODE's table in arbor serve's tree`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return g.withDaemon(func(d *daemon) error {
					t, methods, err := d.table(at)
					if err != nil {
						return err
					}
					printTables([]router.Table{t}, methods, asJSON)
					return nil
				})
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
				t, err := builtin.ReadRoutes(s.ctx, rm, "agent.routes")
				if err != nil {
					return callErr(err)
				}
				tables = append(tables, t)
			}
			printTables(tables, nil, asJSON)
			return nil
		},
	}
	addTargetFlag(cmd, &to, "path of hops, e.g. local/local")
	cmd.Flags().StringVar(&at, "at", "", "without --to: the node of arbor serve's tree whose table to show (default the root)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// table is the route table of node at (default the root) of the running
// daemon, read page by page, and the method of every node of the tree by
// ID: a named node's name ("web") does not say how it was spawned.
func (d *daemon) table(at string) (router.Table, map[uint32]string, error) {
	es, err := d.tree()
	if err != nil {
		return router.Table{}, nil, err
	}
	methods := make(map[uint32]string, len(es))
	for _, e := range es {
		methods[e.ID] = e.Method
	}
	var rm *arborctx.Remote
	fn := "agent.routes"
	if at == "" || at == "0" || at == "root" {
		// The root's own view, without the control-socket clients.
		rm, fn = d.root(), "serve.routes"
	} else {
		e, err := d.find(at, es)
		if err != nil {
			return router.Table{}, nil, err
		}
		rm = d.node.Remote(e.ID, e.Name)
	}
	defer rm.Release()
	t, err := builtin.ReadRoutes(d.ctx, rm, fn)
	if err != nil {
		return router.Table{}, nil, callErr(err)
	}
	return t, methods, nil
}

// printTables prints route tables: as a tree each, or as JSON. methods
// (may be nil) gives nodes' methods by ID.
func printTables(tables []router.Table, methods map[uint32]string, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(map[string]any{"nodes": tables})
		fmt.Println(string(b))
		return
	}
	fmt.Print(renderTables(tables, methods))
}

// renderTables draws each node's table as a tree with box-drawing
// connectors. A node's method is methods[ID] when known (methods may be
// nil), else read from its name.
func renderTables(tables []router.Table, methods map[uint32]string) string {
	var b strings.Builder
	for i, t := range tables {
		if i > 0 {
			b.WriteString("\n")
		}
		parent := "none"
		if t.Parent != nil {
			parent = fmt.Sprint(*t.Parent)
		}
		fmt.Fprintf(&b, "node %d %s (method %s, parent %s)\n", t.ID, t.Name, methodOf(t, methods), parent)
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
					fmt.Fprintf(&b, "%s%d %s (%s)\n", conn, r.ID, r.Name, methodOfNode(r.ID, r.Name, methods))
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

func methodOf(t router.Table, methods map[uint32]string) string {
	if t.Parent == nil {
		return "root"
	}
	return methodOfNode(t.ID, t.Name, methods)
}

// methodOfNode is node id's method: methods[id] when known, else read
// from its name (right only for a node named after its hop).
func methodOfNode(id uint32, name string, methods map[uint32]string) string {
	if m := methods[id]; m != "" {
		return m
	}
	return methodOfName(name)
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
