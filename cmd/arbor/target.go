package main

import (
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/fanout"
	"github.com/arbor-project/arbor/inventory"
	"github.com/arbor-project/arbor/targets"
	"github.com/spf13/cobra"
)

// targetFlag is --to SET (-w, as in pdsh and clush). Given more than
// once, the sets are joined.
type targetFlag struct{ set *string }

func (f targetFlag) String() string { return *f.set }
func (f targetFlag) Type() string   { return "SET" }

func (f targetFlag) Set(v string) error {
	if *f.set != "" {
		v = *f.set + "," + v
	}
	*f.set = v
	return nil
}

// addTargetFlag adds --to/-w to cmd, stored in set.
func addTargetFlag(cmd *cobra.Command, set *string, usage string) {
	cmd.Flags().VarP(targetFlag{set}, "to", "w", usage+"; a set: comma-separated paths, ranges such as ssh:web[01-20], @group of the inventory")
}

// fanFlags are the flags of a command run over a target set.
type fanFlags struct {
	exclude        string
	fanout         int
	gather         bool
	json           bool
	commandTimeout time.Duration
	gateways       string
	// jsonFans makes --json alone a fan-out (NDJSON for one target): for
	// exec, which had no JSON form of its own. push, pull and call keep
	// their single-target JSON.
	jsonFans bool
}

func (f *fanFlags) add(cmd *cobra.Command, withJSON bool) {
	cmd.Flags().VarP(targetFlag{&f.exclude}, "exclude", "x", "leave out these targets (same syntax as --to)")
	cmd.Flags().IntVarP(&f.fanout, "fanout", "f", fanout.DefaultFanout, "at most this many hops being spawned plus commands running, across the whole tree")
	cmd.Flags().BoolVarP(&f.gather, "gather", "b", false, "gather identical outputs under a folded set of targets (as clubak -b)")
	if withJSON {
		cmd.Flags().BoolVar(&f.json, "json", false, "one JSON object per target as it finishes (NDJSON)")
	}
	cmd.Flags().DurationVar(&f.commandTimeout, "command-timeout", 0, "stop a target's command after this long (status 124, timed out); 0: no limit")
	cmd.Flags().StringVar(&f.gateways, "gateways", "", "spread targets of one hop over these gateways (a set of paths)")
}

// many reports whether a run must fan out: more than one target, or a
// fan-out option that changes the output.
func (f *fanFlags) many(n int) bool {
	return n > 1 || f.gather || f.json && f.jsonFans || f.exclude != "" || f.gateways != ""
}

// loadInventory reads --inventory, else $ARBOR_INVENTORY, else
// ~/.config/arbor/inventory if present; nil when there is none.
func (g *globalFlags) loadInventory(required bool) (*inventory.Inventory, error) {
	p := g.inventory
	if p == "" {
		p = inventory.DefaultPath()
	}
	if p == "" {
		if required {
			return nil, usageErr("no inventory: give --inventory FILE or set %s", inventory.EnvInventory)
		}
		return nil, nil
	}
	inv, err := inventory.Load(p)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	return inv, nil
}

// expandPaths expands a one-shot set: paths with ranges, and @group or
// host names of the inventory (a host is reached by its inventory path).
// names maps a path to the inventory host it came from.
func (g *globalFlags) expandPaths(set string, names map[string]string) ([]string, error) {
	items, offs, err := targets.SplitOffsets(set)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	var inv *inventory.Inventory
	var out []string
	for i, it := range items {
		if strings.HasPrefix(it, "@") || inv == nil {
			if inv, err = g.loadInventory(strings.HasPrefix(it, "@")); err != nil {
				return nil, err
			}
		}
		var hosts []string
		if grp, ok := strings.CutPrefix(it, "@"); ok {
			if hosts, err = inv.Group(grp); err != nil {
				return nil, usageErr("%v", err)
			}
		} else {
			ps, err := targets.Parse(it)
			if err != nil {
				if se, ok := err.(*targets.SyntaxError); ok {
					se.Input, se.Offset = set, se.Offset+offs[i]
				}
				return nil, usageErr("%v", err)
			}
			for _, p := range ps {
				if inv != nil && inv.HasHost(p) {
					hosts = append(hosts, p)
				} else {
					out = append(out, p)
				}
			}
		}
		for _, h := range hosts {
			p, err := inv.Path(h)
			if err != nil {
				return nil, usageErr("%v", err)
			}
			if names != nil {
				names[p] = h
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// oneShotTargets resolves --to SET minus --exclude into labelled targets.
func (g *globalFlags) oneShotTargets(set string, f *fanFlags) ([]fanout.Target, error) {
	names := map[string]string{}
	paths, err := g.expandPaths(set, names)
	if err != nil {
		return nil, err
	}
	if f.exclude != "" {
		ex, err := g.expandPaths(f.exclude, nil)
		if err != nil {
			return nil, err
		}
		paths = targets.Exclude(paths, ex)
	}
	paths = dedup(paths)
	if len(paths) == 0 {
		return nil, usageErr("target set %q expands to nothing", set)
	}
	return labelled(paths, names, func(p string) fanout.Target { return fanout.Target{Path: p} }), nil
}

// labelled labels paths (targets.Labels; an inventory host by its name
// when that is unique) and makes a target of each.
func labelled(paths []string, names map[string]string, mk func(string) fanout.Target) []fanout.Target {
	labels := targets.Labels(paths)
	byName := map[string]int{}
	for _, p := range paths {
		if n, ok := names[p]; ok {
			byName[n]++
		}
	}
	used := map[string]bool{}
	for i, p := range paths {
		if n, ok := names[p]; ok && byName[n] == 1 {
			labels[i] = n
		}
		if used[labels[i]] {
			labels[i] = p // never two targets under one label
		}
		used[labels[i]] = true
	}
	out := make([]fanout.Target, len(paths))
	for i, p := range paths {
		out[i] = mk(p)
		out[i].Label = labels[i]
	}
	return out
}

func dedup(ps []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// isSet reports whether a NODE argument names more than one node of
// arbor serve: a list, a range, a glob, a subtree or @group.
func isSet(spec string) bool { return strings.ContainsAny(spec, ",[*?@") }

// daemonTargets resolves a set of arbor serve's nodes: @all (every node
// but the root and clients), name globs (web*, matched against the full
// name and its last hop), subtrees (bastion/*: every node below
// bastion), ranges, @group (the inventory's hosts, by name), names and
// IDs. --exclude takes the same forms.
func (d *daemon) targets(g *globalFlags, set string, f *fanFlags) ([]fanout.Target, error) {
	es, err := control.ReadTree(d.ctx, d.root())
	if err != nil {
		return nil, callErr(err)
	}
	ids, err := d.match(g, set, es)
	if err != nil {
		return nil, err
	}
	if f.exclude != "" {
		ex, err := d.match(g, f.exclude, es)
		if err != nil {
			return nil, err
		}
		drop := map[uint32]bool{}
		for _, e := range ex {
			drop[e.ID] = true
		}
		var keep []control.NodeEntry
		for _, e := range ids {
			if !drop[e.ID] {
				keep = append(keep, e)
			}
		}
		ids = keep
	}
	if len(ids) == 0 {
		return nil, usageErr("target set %q matches no node of the tree at %s (see arbor tree)", set, d.socket)
	}
	byName := map[string]control.NodeEntry{}
	var names []string
	for _, e := range ids {
		byName[e.Name] = e
		names = append(names, e.Name)
	}
	return labelled(names, nil, func(n string) fanout.Target {
		e := byName[n]
		return fanout.Target{Path: n, Remote: d.node.Remote(e.ID, e.Name)}
	}), nil
}

func (d *daemon) match(g *globalFlags, set string, es []control.NodeEntry) ([]control.NodeEntry, error) {
	items, err := targets.Split(set)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	var out []control.NodeEntry
	seen := map[uint32]bool{}
	add := func(e control.NodeEntry) {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	last := func(name string) string { return name[strings.LastIndexByte(name, '/')+1:] }
	// forms are the names a node answers to: its full name and last hop,
	// each also without the hops' methods ("gw/web01" for
	// "ssh:gw/ssh:web01"), as labels print them.
	forms := func(name string) []string {
		b := bareName(name)
		return []string{name, last(name), b, last(b)}
	}
	for _, it := range items {
		switch {
		case it == "@all":
			for _, e := range es {
				if e.Parent != nil {
					add(e)
				}
			}
		case strings.HasPrefix(it, "@"):
			inv, err := g.loadInventory(true)
			if err != nil {
				return nil, err
			}
			hosts, err := inv.Group(it[1:])
			if err != nil {
				return nil, usageErr("%v", err)
			}
			for _, h := range hosts {
				p, _ := inv.Path(h)
				for _, e := range es {
					if e.Name == h || e.Name == p || last(e.Name) == h || last(e.Name) == "ssh:"+h {
						add(e)
					}
				}
			}
		case strings.HasSuffix(it, "/*"):
			base := strings.TrimSuffix(it, "/*")
			for _, b := range es {
				if !slices.Contains(forms(b.Name), base) && strconv.FormatUint(uint64(b.ID), 10) != base {
					continue
				}
				for _, e := range es {
					if strings.HasPrefix(e.Name, b.Name+"/") {
						add(e)
					}
				}
			}
		case strings.ContainsAny(it, "*?"):
			if _, err := path.Match(it, ""); err != nil {
				return nil, usageErr("bad pattern %q: %v", it, err)
			}
			for _, e := range es {
				if e.Parent == nil {
					continue
				}
				for _, n := range forms(e.Name) {
					if ok, _ := path.Match(it, n); ok {
						add(e)
						break
					}
				}
			}
		default:
			names, err := targets.Parse(it)
			if err != nil {
				return nil, usageErr("%v", err)
			}
			for _, n := range names {
				found := false
				for _, e := range es {
					if slices.Contains(forms(e.Name), n) || strconv.FormatUint(uint64(e.ID), 10) == n {
						add(e)
						found = true
					}
				}
				if !found {
					return nil, usageErr("unknown node %q: no node with that name in the tree at %s (see arbor tree)", n, d.socket)
				}
			}
		}
	}
	return out, nil
}

// bareName is a node's name without the methods of its hops:
// "gw/web01" for "ssh:gw/ssh:web01". A hop that is a plain name (set
// with spawn --name) stays as it is.
func bareName(name string) string {
	hops := strings.Split(name, "/")
	for i, h := range hops {
		if _, rest, ok := strings.Cut(h, ":"); ok && rest != "" {
			hops[i] = rest
		}
	}
	return strings.Join(hops, "/")
}

// statusLine reports whether a live status line may be drawn: stderr is
// a terminal.
func statusLine() bool { return isTerminal(os.Stderr) }
