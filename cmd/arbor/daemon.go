package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/arbor-project/arbor/agent"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/fanout"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

// socketFlag is --socket: arbor serve's control socket (default: see
// control.SocketPath).
var socketFlag string

// addDaemonCommands adds arbor serve and the commands against it.
func addDaemonCommands(root *cobra.Command, g *globalFlags) {
	root.PersistentFlags().StringVar(&socketFlag, "socket", "", "arbor serve's control socket (default $"+control.EnvSocket+", else $XDG_RUNTIME_DIR/arbor/arbor.sock, else ~/.arbor/arbor.sock)")
	root.AddCommand(newServeCmd(g), newSpawnCmd(g), newTreeCmd(g), newWatchCmd(g),
		newPingCmd(g), newKillCmd(g), newStopCmd(g), newPoolCmd(g))
}

// serveStopTimeout bounds arbor serve's shutdown. The tree's own steps
// are bounded (agent.Node.Close: ShutdownGrace, then a few seconds a
// step); past this whatever is still stuck (a handler of the control
// socket, a peer that stopped reading) is left behind: the children are
// killed and the process exits.
const serveStopTimeout = agent.ShutdownGrace + 30*time.Second

// stopServe shuts arbor serve down: no new clients, the tree goes down
// (attached clients last, so arbor stop returns when it is down), then the
// socket's handlers end. It returns nil once all that is done. When it is
// not done within serveStopTimeout, or another signal arrives on sig, it
// kills the tree's children and returns an error: the caller exits and
// leaves what is stuck behind. No peer can keep serve running.
func stopServe(srv *control.Server, root *agent.Node, sig <-chan os.Signal) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.StopAccepting()
		root.Close()
		srv.Close()
	}()
	t := time.NewTimer(serveStopTimeout)
	defer t.Stop()
	var why string
	select {
	case <-done:
		return nil
	case s := <-sig:
		why = fmt.Sprintf("%s again", s)
	case <-t.C:
		why = fmt.Sprintf("the tree was not down after %s", serveStopTimeout)
	}
	fmt.Fprintf(os.Stderr, "arbor serve: %s: killing the children and exiting\n", why)
	srv.StopAccepting()
	root.KillChildren()
	return &exitError{code: exitRemote, err: fmt.Errorf("arbor: serve: stopped without a clean shutdown (%s)", why)}
}

// daemon is this CLI process attached to a running arbor serve as a node
// of its tree.
type daemon struct {
	node   *agent.Node
	ctx    context.Context
	stop   context.CancelFunc
	socket string
	log    hclog.Logger
}

// attach dials arbor serve and attaches to its tree. A server that is not
// running is exit status 255, like an unreachable node.
func (g *globalFlags) attach() (*daemon, error) {
	path, err := control.SocketPath(socketFlag)
	if err != nil {
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	log, level, err := g.logger()
	if err != nil {
		return nil, err
	}
	ctx, stop := g.runContext()
	n, err := control.Dial(ctx, path, agent.Options{Logger: log, LogLevel: level.String()})
	if err != nil {
		stop()
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	return &daemon{node: n, ctx: ctx, stop: stop, socket: path, log: log}, nil
}

func (d *daemon) close() {
	d.node.Close()
	d.stop()
}

// withDaemon runs fn attached to arbor serve and detaches after.
func (g *globalFlags) withDaemon(fn func(d *daemon) error) error {
	d, err := g.attach()
	if err != nil {
		return err
	}
	defer d.close()
	return fn(d)
}

// withNode runs fn attached to arbor serve with NODE resolved (see
// resolve) to e; es is the whole tree, parents first.
func (g *globalFlags) withNode(spec string, fn func(d *daemon, e control.NodeEntry, es []control.NodeEntry) error) error {
	return g.withDaemon(func(d *daemon) error {
		e, es, err := d.resolve(spec)
		if err != nil {
			return err
		}
		return fn(d, e, es)
	})
}

// root is the daemon's root node.
func (d *daemon) root() *arborctx.Remote { return d.node.Remote(0, "root") }

// resolve finds NODE in the daemon's tree (read in pages; see find).
func (d *daemon) resolve(spec string) (control.NodeEntry, []control.NodeEntry, error) {
	es, err := d.tree()
	if err != nil {
		return control.NodeEntry{}, nil, err
	}
	e, err := d.find(spec, es)
	if err != nil {
		return control.NodeEntry{}, nil, err
	}
	return e, es, nil
}

// openNode attaches to the daemon and returns a session whose target is
// NODE: `call NODE`, `exec NODE` and friends then run as with --to.
func (g *globalFlags) openNode(spec string) (*session, error) {
	d, err := g.attach()
	if err != nil {
		return nil, err
	}
	e, _, err := d.resolve(spec)
	if err != nil {
		d.close()
		return nil, err
	}
	return &session{root: d.node, chain: []*arborctx.Remote{d.node.Remote(e.ID, e.Name)}, ctx: d.ctx, stop: d.stop}, nil
}

// openTarget is the target of call and exec: the chain named by --to (a
// one-shot tree), or else NODE of the running daemon.
func (g *globalFlags) openTarget(to, node string) (*session, error) {
	if to != "" {
		if !g.noDaemon {
			if s, ok, err := g.openPooled(to); ok {
				return s, err
			}
		}
		return g.open(to)
	}
	return g.openNode(node)
}

func printJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// spawnErr maps a failed serve.spawn to an exit status: arguments the
// server refuses (a name already used) are usage, 2; a hop that could not
// be built is an unreachable target, 255, as for exec --to.
func spawnErr(err error) error {
	var re *funcs.RemoteError
	if errors.As(err, &re) && re.Kind != funcs.KindBadArgs && re.Kind != funcs.KindUnknown {
		return &exitError{code: exitUnreachable, err: err}
	}
	return callErr(err)
}

func newSpawnCmd(g *globalFlags) *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "spawn PATH [--name NAME]",
		Short: "Add a chain of nodes to the running tree, reusing the leading hops it already has",
		Example: `  arbor spawn ssh:bastion/ssh:web1                 # prints "ID NAME"
  arbor spawn ssh:bastion/ssh:web2 --name web2     # reuses the bastion; NODE web2 from now on
  arbor spawn local/sudo:postgres -o json          # {"id":3,"name":"local.4711/sudo:postgres"}`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := spawn.ParsePath(args[0]); err != nil {
				return usageErr("%v", err)
			}
			if strings.Contains(name, "/") || strings.TrimSpace(name) != name {
				return usageErr("--name %q: a name has no '/' and no surrounding spaces", name)
			}
			if _, err := strconv.ParseUint(name, 10, 32); err == nil {
				return usageErr("--name %q: a name must not be a number (numbers are node IDs)", name)
			}
			return g.withDaemon(func(d *daemon) error {
				var res control.SpawnResult
				if err := d.root().Call(d.ctx, "serve.spawn", control.SpawnArgs{Path: args[0], Name: name}, &res); err != nil {
					return spawnErr(err)
				}
				if asJSON {
					printJSON(res)
				} else {
					fmt.Printf("%d %s\n", res.ID, res.Name)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the last hop (default: method.PID)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// pathTo lists the nodes from the root's first child down to e.
func pathTo(e control.NodeEntry, es []control.NodeEntry) []control.NodeEntry {
	byID := map[uint32]control.NodeEntry{}
	for _, x := range es {
		byID[x.ID] = x
	}
	var rev []control.NodeEntry
	for cur, ok := e, true; ok && cur.Parent != nil; cur, ok = byID[*cur.Parent] {
		rev = append(rev, cur)
	}
	out := make([]control.NodeEntry, len(rev))
	for i := range rev {
		out[i] = rev[len(rev)-1-i]
	}
	return out
}

func newPingCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	var to string
	var f fanFlags
	cmd := &cobra.Command{
		Use:   "ping NODE | ping --to PATH",
		Short: "Measure the round trip to NODE (or the node at the end of PATH) and to every hop on the way; over a set, to each target",
		Example: `  arbor ping web2                                  # the round trip to NODE and to every hop on the way
  arbor ping --to ssh:bastion/ssh:db1 -o json
  arbor ping -w 'ssh:web[01-04]'                   # one round trip a target
  arbor ping @all                                  # every node of arbor serve's tree`,
		Args: func(cmd *cobra.Command, args []string) error {
			if (to == "") == (len(args) == 0) || len(args) > 1 {
				return usageErr("ping takes one NODE (or set) of arbor serve, or --to PATH (or a set)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			node := ""
			if len(args) > 0 {
				node = args[0]
			}
			f.json = asJSON
			many, err := g.fansOut(to, node, &f)
			if err != nil {
				return err
			}
			if many {
				return g.pingSet(&f, to, node)
			}
			if to != "" {
				return g.pingPath(to, asJSON)
			}
			return g.withNode(args[0], func(d *daemon, e control.NodeEntry, es []control.NodeEntry) error {
				type hopRTT struct {
					ID    uint32  `json:"id"`
					Name  string  `json:"name"`
					RTTMs float64 `json:"rtt_ms"`
				}
				var hops []hopRTT
				for _, h := range pathTo(e, es) {
					rtt, err := d.node.Remote(h.ID, h.Name).Ping(d.ctx)
					if err != nil {
						return &exitError{code: exitUnreachable, err: err}
					}
					hops = append(hops, hopRTT{ID: h.ID, Name: h.Name, RTTMs: float64(rtt.Microseconds()) / 1000})
				}
				if asJSON {
					printJSON(map[string]any{"id": e.ID, "name": e.Name, "hops": hops})
					return nil
				}
				if len(hops) == 0 {
					fmt.Printf("%d %s: the root (this command talks to it directly)\n", e.ID, e.Name)
				}
				for i, h := range hops {
					fmt.Printf("hop %d: %d %s %.3f ms\n", i+1, h.ID, h.Name, h.RTTMs)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (over a set: one object per target, NDJSON)")
	addTargetFlag(cmd, &to, "path of hops: through a running arbor serve's pool, else a one-shot tree")
	f.add(cmd, false)
	return cmd
}

// pingSet is ping over a target set: each target's round trip, as
// "label: {"rtt_ms":…}" lines (or NDJSON), the summary and exit status of
// every fan-out command.
func (g *globalFlags) pingSet(f *fanFlags, to, node string) error {
	fr := &fanRun{g: g, f: f, verb: "ping"}
	return fr.run(to, node, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (outcome, error) {
		rtt, err := rm.Ping(ctx)
		if err != nil {
			return outcome{status: exitUnreachable}, err
		}
		ms := float64(rtt.Microseconds()) / 1000
		return outcome{result: map[string]float64{"rtt_ms": ms}, hasResult: true}, nil
	})
}

// pingPath is ping --to PATH: the node at the end of PATH, from the pool
// of a running arbor serve (or a one-shot tree), and each hop on the way
// that this command can see.
func (g *globalFlags) pingPath(to string, asJSON bool) error {
	s, err := g.openTarget(to, "")
	if err != nil {
		return err
	}
	defer s.close()
	type hopRTT struct {
		ID    uint32  `json:"id"`
		Name  string  `json:"name"`
		RTTMs float64 `json:"rtt_ms"`
	}
	var hops []hopRTT
	for _, r := range s.chain {
		rtt, err := r.Ping(s.ctx)
		if err != nil {
			return &exitError{code: exitUnreachable, err: err}
		}
		hops = append(hops, hopRTT{ID: r.ID(), Name: r.Name(), RTTMs: float64(rtt.Microseconds()) / 1000})
	}
	last := s.last()
	if asJSON {
		printJSON(map[string]any{"id": last.ID(), "name": last.Name(), "hops": hops})
		return nil
	}
	for i, h := range hops {
		fmt.Printf("hop %d: %d %s %.3f ms\n", i+1, h.ID, h.Name, h.RTTMs)
	}
	return nil
}

func newKillCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "kill NODE",
		Short: "Shut NODE and its subtree down",
		Example: `  arbor kill web2
  arbor kill 3 -o json                             # {"id":3,"name":"local.4711/web"}`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withNode(args[0], func(d *daemon, e control.NodeEntry, _ []control.NodeEntry) error {
				if e.Parent == nil {
					return usageErr("kill %s: that is the root; use arbor stop", args[0])
				}
				ctx, cancel := context.WithTimeout(d.ctx, agent.ShutdownGrace+10*time.Second)
				defer cancel()
				if err := d.node.Remote(e.ID, e.Name).Shutdown(ctx); err != nil {
					return &exitError{code: exitUnreachable, err: err}
				}
				if asJSON {
					printJSON(control.SpawnResult{ID: e.ID, Name: e.Name})
				} else {
					fmt.Printf("killed %d %s\n", e.ID, e.Name)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newStopCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop arbor serve: its whole tree shuts down",
		Example: `  arbor stop
  arbor --socket /tmp/arbor.sock stop -o json      # {"socket":"/tmp/arbor.sock","stopped":true}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDaemon(func(d *daemon) error {
				// The server may close this link before its answer is out: a
				// disconnect after the request is the stop itself.
				if err := d.root().Call(d.ctx, "serve.stop", nil, nil); err != nil && !errors.Is(err, router.ErrDisconnected) {
					return callErr(err)
				}
				// The server drops its clients once the tree is down.
				t := time.NewTimer(agent.ShutdownGrace + 30*time.Second)
				defer t.Stop()
				select {
				case <-d.node.ParentLost():
				case <-d.ctx.Done():
					return &exitError{code: exitUnreachable, err: fmt.Errorf("arbor serve at %s: stop requested; gave up waiting: %w", d.socket, d.ctx.Err())}
				case <-t.C:
					return &exitError{code: exitUnreachable, err: fmt.Errorf("arbor serve at %s: stop requested but still running", d.socket)}
				}
				if asJSON {
					printJSON(map[string]any{"stopped": true, "socket": d.socket})
				} else {
					fmt.Printf("stopped arbor serve at %s\n", d.socket)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
