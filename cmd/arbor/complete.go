package main

// Dynamic completion. cobra's scripts for bash, zsh, fish and PowerShell
// all call the hidden "__complete" command, which runs the functions
// here: node names and IDs from a running arbor serve, a node's functions
// and their argument names, hop methods, and @groups of the inventory.
// Nothing here builds a tree: a completion must not open ssh connections
// on a TAB. Every function gives up after completionTimeout and then
// offers nothing.

import (
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/spawn"
	"github.com/spf13/cobra"
)

// completionTimeout bounds what one completion asks a daemon, when
// --timeout does not.
const completionTimeout = 3 * time.Second

// completing prepares g for a completion: the settings (config file,
// $ARBOR_*) are bound once, as a command's run would bind them, and a
// deadline is set.
func (g *globalFlags) completing(cmd *cobra.Command) {
	if g.sources == nil {
		_ = g.bindSettings(cmd.Root())
		_ = g.loadTools()
	}
	if g.timeout <= 0 {
		g.timeout = completionTimeout
	}
}

// setItem splits the item being completed off a set: "ssh:a,ssh:b" →
// "ssh:a,", "ssh:b". A comma inside [ranges] or {braces} is part of its
// item.
func setItem(s string) (prefix, item string) {
	depth := 0
	cut := 0
	for i, c := range s {
		switch c {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case ',':
			if depth <= 0 {
				cut = i + 1
			}
		}
	}
	return s[:cut], s[cut:]
}

// lastHop splits the hop being completed off a path: "ssh:a/su" →
// "ssh:a/", "su". A slash inside {braces} is part of its hop.
func lastHop(s string) (prefix, hop string) {
	depth := 0
	cut := 0
	for i, c := range s {
		switch c {
		case '{':
			depth++
		case '}':
			depth--
		case '/':
			if depth <= 0 {
				cut = i + 1
			}
		}
	}
	return s[:cut], s[cut:]
}

// withPrefix keeps the candidates that start with toComplete.
func withPrefix(cands []string, toComplete string) []string {
	var out []string
	for _, c := range cands {
		v, _, _ := strings.Cut(c, "\t")
		if strings.HasPrefix(v, toComplete) {
			out = append(out, c)
		}
	}
	return out
}

// groupCandidates are "@GROUP" of the inventory (--inventory,
// $ARBOR_INVENTORY, the default file), with withAll adding @all when the
// inventory has no group of that name (a daemon's @all is every node).
func (g *globalFlags) groupCandidates(withAll bool) []string {
	var out []string
	if withAll {
		out = append(out, cobra.CompletionWithDesc("@all", "every node of the tree"))
	}
	inv, err := g.loadInventory(false)
	if err != nil || inv == nil {
		return out
	}
	for _, grp := range inv.Groups() {
		if n, err := inv.Group(grp); err == nil && !(withAll && grp == "all") {
			out = append(out, cobra.CompletionWithDesc("@"+grp, strconv.Itoa(len(n))+" hosts of the inventory"))
		}
	}
	return out
}

// pathCandidates complete one path of hops (a one-shot target, spawn's
// PATH): the hop being typed gets the hop methods (spawn/methods.go),
// "local" whole and the others as "METHOD:", a cmd: hop the config
// file's cmd: names. With sets, the first hop of an item may also be a
// host or an @group of the inventory.
func (g *globalFlags) pathCandidates(toComplete string, sets bool) ([]string, cobra.ShellCompDirective) {
	setPrefix, item := "", toComplete
	if sets {
		setPrefix, item = setItem(toComplete)
	}
	hopPrefix, hop := lastHop(item)
	prefix := setPrefix + hopPrefix
	var cands []string
	switch {
	case sets && hopPrefix == "" && strings.HasPrefix(hop, "@"):
		cands = g.groupCandidates(false)
	case strings.HasPrefix(hop, "cmd:"):
		for name := range g.cfg.Cmd {
			cands = append(cands, cobra.CompletionWithDesc("cmd:"+name+":", "cmd: method of the config file"))
		}
		slices.Sort(cands)
	case !strings.Contains(hop, ":"):
		for _, m := range spawn.Methods() {
			if m == "local" {
				cands = append(cands, cobra.CompletionWithDesc(m, "a child on the same host"))
			} else {
				cands = append(cands, cobra.CompletionWithDesc(m+":", "hop method"))
			}
		}
		if sets && hopPrefix == "" {
			if inv, err := g.loadInventory(false); err == nil && inv != nil {
				for _, h := range inv.Hosts() {
					cands = append(cands, cobra.CompletionWithDesc(h, "host of the inventory"))
				}
			}
		}
	}
	out := withPrefix(cands, hop)
	for i := range out {
		out[i] = prefix + out[i]
	}
	return out, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
}

// nodeCandidates complete NODE of arbor serve, or one item of a set of
// its nodes: names (the full name and the last hop), IDs when a digit is
// typed, @all and the inventory's @groups when an @ is.
func (g *globalFlags) nodeCandidates(toComplete string, sets bool) []string {
	setPrefix, item := "", toComplete
	if sets {
		setPrefix, item = setItem(toComplete)
	}
	var cands []string
	if sets && strings.HasPrefix(item, "@") {
		cands = g.groupCandidates(true)
	} else {
		byID := item != "" && item[0] >= '0' && item[0] <= '9'
		_ = g.withDaemon(func(d *daemon) error {
			es, err := d.tree()
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Parent == nil {
					continue
				}
				id := strconv.FormatUint(uint64(e.ID), 10)
				if byID {
					cands = append(cands, cobra.CompletionWithDesc(id, e.Name))
					continue
				}
				desc := "node " + id + " (" + e.Method + ")"
				cands = append(cands, cobra.CompletionWithDesc(e.Name, desc))
				if last := e.Name[strings.LastIndexByte(e.Name, '/')+1:]; last != e.Name {
					cands = append(cands, cobra.CompletionWithDesc(last, "node "+id+" "+e.Name))
				}
			}
			return nil
		})
	}
	out := withPrefix(dedupCompletions(cands), item)
	for i := range out {
		out[i] = setPrefix + out[i]
	}
	return out
}

// dedupCompletions drops a value offered twice (a last hop that is also
// another node's full name), keeping the first description.
func dedupCompletions(cs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range cs {
		v, _, _ := strings.Cut(c, "\t")
		if !seen[v] {
			seen[v] = true
			out = append(out, c)
		}
	}
	return out
}

// completeNodes completes the first argument of exec, push, pull and
// ping: NODE (or a set of nodes) of arbor serve, unless --to names the
// target. After it, files (push and pull) or nothing.
func completeNodes(g *globalFlags, files bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		rest := cobra.ShellCompDirectiveNoFileComp
		if files {
			rest = cobra.ShellCompDirectiveDefault
		}
		if len(args) > 0 || cmd.Flags().Changed("to") {
			return nil, rest
		}
		g.completing(cmd)
		return g.nodeCandidates(toComplete, true), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeNode completes one NODE of arbor serve: kill's argument (arg),
// routes --at's value.
func completeNode(g *globalFlags, arg bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if arg && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		g.completing(cmd)
		return g.nodeCandidates(toComplete, false), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeSet completes a flag or argument that takes a one-shot target
// set (--to, --gateways).
func completeSet(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		g.completing(cmd)
		return g.pathCandidates(toComplete, true)
	}
}

// completeExclude completes -x: a one-shot set with --to, else a set of
// arbor serve's nodes.
func completeExclude(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		g.completing(cmd)
		if cmd.Flags().Changed("to") {
			return g.pathCandidates(toComplete, true)
		}
		return g.nodeCandidates(toComplete, true), cobra.ShellCompDirectiveNoFileComp
	}
}

// completePath completes one path of hops (spawn PATH, pool keep PATH,
// routes --to).
func completePath(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		g.completing(cmd)
		return g.pathCandidates(toComplete, false)
	}
}

// completeCall completes call's arguments: NODE (without --to), then
// FUNC from the node's registry (agent.functions, what call --list
// shows; for --to PATH this binary's own, which every agent it spawns
// serves), then the function's argument names as KEY= (a string) or
// KEY:= (any other JSON value), each once.
func completeCall(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		to := cmd.Flags().Changed("to")
		if !to && len(args) == 0 {
			g.completing(cmd)
			return g.nodeCandidates(toComplete, true), cobra.ShellCompDirectiveNoFileComp
		}
		if list, _ := cmd.Flags().GetBool("list"); list {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		node := ""
		if !to {
			node, args = args[0], args[1:]
		}
		g.completing(cmd)
		shapes := g.functionShapes(node)
		if len(args) == 0 {
			var cands []string
			for _, s := range shapes {
				if !plainWord(s.Name) {
					continue // the node's word: never a name that could drive the terminal
				}
				cands = append(cands, cobra.CompletionWithDesc(s.Name, logsafe.Escape(s.Args+" -> "+s.Result)))
			}
			return withPrefix(cands, toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		for _, s := range shapes {
			if s.Name == args[0] {
				return argCandidates(s.Args, args[1:], toComplete), cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
			}
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// functionShapes are the functions of NODE of arbor serve (agent.functions
// on it), or with node "" those of this binary's registry.
func (g *globalFlags) functionShapes(node string) []funcs.Shape {
	if node == "" || isSet(node) {
		reg := funcs.NewRegistry()
		builtin.Register(reg)
		return reg.Shapes()
	}
	s, err := g.openNode(node)
	if err != nil {
		return nil
	}
	defer s.close()
	var shapes []funcs.Shape
	if err := s.last().Call(s.ctx, builtin.FnFunctions, nil, &shapes); err != nil {
		return nil
	}
	return shapes
}

// argCandidates are KEY= and KEY:= for the fields of an argument shape
// such as "{path: string, mode?: integer}" not given yet in given.
func argCandidates(shape string, given []string, toComplete string) []string {
	have := map[string]bool{}
	for _, a := range given {
		if k, _, ok := cutKeyArg(a); ok {
			have[k] = true
		}
	}
	var cands []string
	for _, f := range shapeFields(shape) {
		if have[f.name] || !plainWord(f.name) {
			continue
		}
		op := ":="
		if f.typ == "string" {
			op = "="
		}
		desc := logsafe.Escape(f.typ)
		if f.optional {
			desc += ", optional"
		}
		cands = append(cands, cobra.CompletionWithDesc(f.name+op, desc))
	}
	return withPrefix(cands, toComplete)
}

type shapeField struct {
	name, typ string
	optional  bool
}

// shapeFields reads the top-level fields of a struct shape as funcs.Shape
// writes it: "{name: type, name?: type}"; nil for any other shape.
func shapeFields(shape string) []shapeField {
	if !strings.HasPrefix(shape, "{") || !strings.HasSuffix(shape, "}") {
		return nil
	}
	body := shape[1 : len(shape)-1]
	var parts []string
	depth, start := 0, 0
	for i, c := range body {
		switch c {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, body[start:i])
				start = i + 1
			}
		}
	}
	parts = append(parts, body[start:])
	if len(parts) == 1 {
		// A map's shape is "{KEYTYPE: VALUE}": a type, not a field.
		switch k, _, _ := strings.Cut(strings.TrimSpace(parts[0]), ":"); k {
		case "", "string", "integer", "number", "bool", "bytes", "any":
			return nil
		}
	}
	var out []shapeField
	for _, p := range parts {
		name, typ, ok := strings.Cut(strings.TrimSpace(p), ": ")
		if !ok {
			return nil // a map shape ({string: any}), not fields
		}
		f := shapeField{name: name, typ: typ}
		if n, ok := strings.CutSuffix(name, "?"); ok {
			f.name, f.optional = n, true
		}
		out = append(out, f)
	}
	return out
}

// plainWord says whether s, a name a node listed (a function, an
// argument), may be offered as a completion: valid UTF-8 of printable
// characters and no space, so it can neither drive the terminal that
// shows it nor split into lines or fields of the completion's answer.
func plainWord(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// addCompletions registers the dynamic completions of root's commands.
func addCompletions(root *cobra.Command, g *globalFlags) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		switch c.CommandPath() {
		case "arbor exec", "arbor ping":
			c.ValidArgsFunction = completeNodes(g, false)
		case "arbor push", "arbor pull":
			c.ValidArgsFunction = completeNodes(g, true)
		case "arbor call":
			c.ValidArgsFunction = completeCall(g)
		case "arbor kill":
			c.ValidArgsFunction = completeNode(g, true)
		case "arbor spawn", "arbor pool keep":
			c.ValidArgsFunction = completePath(g)
		case "arbor inventory list":
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				g.completing(cmd)
				return g.pathCandidates(toComplete, true)
			}
		}
		if c.CommandPath() == "arbor routes" {
			_ = c.RegisterFlagCompletionFunc("to", completePath(g))
			_ = c.RegisterFlagCompletionFunc("at", completeNode(g, false))
		} else if c.Flags().Lookup("to") != nil {
			_ = c.RegisterFlagCompletionFunc("to", completeSet(g))
		}
		if c.Flags().Lookup("exclude") != nil {
			_ = c.RegisterFlagCompletionFunc("exclude", completeExclude(g))
		}
		if c.Flags().Lookup("gateways") != nil {
			_ = c.RegisterFlagCompletionFunc("gateways", completeSet(g))
		}
	}
	walk(root)
	_ = root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"trace", "debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
}
