package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

type globalFlags struct {
	logLevel string
	timeout  time.Duration
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "arbor",
		Short:         "Run code across trees of machines",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", agent.LevelFromEnv("warn"), "log level for every node of the tree (trace, debug, info, warn, error); also ARBOR_LOG_LEVEL")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 0, "give up after this long (0: no limit)")
	root.AddCommand(newExecCmd(g), newCallCmd(g), newRoutesCmd(g))
	return root
}

// session is a one-shot tree: a root in this process and the chain of hops
// named by --to.
type session struct {
	root  *agent.Node
	chain []*arborctx.Remote
	ctx   context.Context
	stop  context.CancelFunc
}

func (g *globalFlags) open(path string) (*session, error) {
	hops, err := spawn.ParsePath(path)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	for _, h := range hops {
		if h.Method != "local" {
			return nil, usageErr("%s: %s is not supported yet (only local hops in this release)", h, h.Method)
		}
	}
	level := hclog.LevelFromString(g.logLevel)
	if level == hclog.NoLevel {
		return nil, usageErr("unknown log level %q", g.logLevel)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "arbor", Level: level, Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		prev := stop
		stop = func() { cancel(); prev() }
	}
	root, err := agent.NewRoot(agent.Options{Logger: log, LogLevel: level.String()})
	if err != nil {
		stop()
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	s := &session{root: root, ctx: ctx, stop: stop}
	s.chain, err = root.SpawnPath(ctx, hops)
	if err != nil {
		s.close()
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	return s, nil
}

func (s *session) last() *arborctx.Remote { return s.chain[len(s.chain)-1] }

func (s *session) close() {
	s.root.Close()
	s.stop()
}

// callErr maps a call failure to an exit status: a remote function's own
// error is 1; not reaching the node is 255; an unknown function is usage.
func callErr(err error) error {
	var re *funcs.RemoteError
	switch {
	case errors.As(err, &re) && re.Kind == funcs.KindUnknown:
		return &exitError{code: exitUsage, err: err}
	case errors.As(err, &re) && re.Kind == funcs.KindBadArgs:
		return &exitError{code: exitUsage, err: err}
	case errors.As(err, &re):
		return &exitError{code: exitRemote, err: err}
	}
	return &exitError{code: exitUnreachable, err: err}
}

func newExecCmd(g *globalFlags) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "exec --to PATH -- CMD [ARGS...]",
		Short: "Run a command on the last node of PATH; its exit status is arbor's",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("exec: --to PATH is required")
			}
			if len(args) == 0 {
				return usageErr("exec: no command given (arbor exec --to PATH -- CMD [ARGS...])")
			}
			var stdin []byte
			if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice == 0 && st.Mode()&os.ModeNamedPipe != 0 {
				stdin, _ = io.ReadAll(os.Stdin)
			}
			s, err := g.open(to)
			if err != nil {
				return err
			}
			defer s.close()
			var res builtin.ExecResult
			if err := s.last().Call(s.ctx, "sys.exec", builtin.ExecArgs{Argv: args, Stdin: stdin}, &res); err != nil {
				var re *funcs.RemoteError
				if errors.As(err, &re) {
					return &exitError{code: 127, err: err} // the command could not run
				}
				return callErr(err)
			}
			os.Stdout.Write(res.Stdout)
			os.Stderr.Write(res.Stderr)
			if res.ExitStatus != 0 {
				return &exitError{code: res.ExitStatus}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "path of hops, e.g. local/local")
	return cmd
}

func newCallCmd(g *globalFlags) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "call --to PATH FUNC [JSON-ARGS]",
		Short: "Call a function on the last node of PATH and print its result as JSON",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("call: --to PATH is required")
			}
			var fnArgs any
			if len(args) == 2 {
				v, err := parseJSONArgs(args[1])
				if err != nil {
					return usageErr("call %s: invalid JSON arguments: %v", args[0], err)
				}
				fnArgs = v
			}
			s, err := g.open(to)
			if err != nil {
				return err
			}
			defer s.close()
			var raw rawResult
			if err := s.last().Call(s.ctx, args[0], fnArgs, &raw); err != nil {
				return callErr(err)
			}
			out, err := json.MarshalIndent(raw.v, "", "  ")
			if err != nil {
				return &exitError{code: exitRemote, err: fmt.Errorf("result of %s is not JSON-printable: %w", args[0], err)}
			}
			fmt.Println(string(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "path of hops, e.g. local/local")
	return cmd
}

func newRoutesCmd(g *globalFlags) *cobra.Command {
	var to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "routes --to PATH [--json]",
		Short: "Build the chain and print every node's route table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("routes: --to PATH is required")
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
	cmd.Flags().StringVar(&to, "to", "", "path of hops, e.g. local/local")
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

// parseJSONArgs decodes JSON with integers kept as integers, so they match
// integer fields on the remote side.
func parseJSONArgs(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return normalizeNumbers(v), nil
}

func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
		return x
	}
	return v
}

// rawResult decodes any CBOR result into JSON-printable Go values.
type rawResult struct{ v any }

func (r *rawResult) UnmarshalCBOR(b []byte) error {
	v, err := wire.UnmarshalAny(b)
	r.v = v
	return err
}
