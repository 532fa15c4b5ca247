package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/agent"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

// acquireGrace is how much longer than the caller's deadline the
// serve.acquire call may last: the daemon fails the queued request at the
// deadline with its own message, which must have time to arrive.
const acquireGrace = 5 * time.Second

// openPooled runs a one-shot --to PATH through arbor serve's pool: it
// attaches to the daemon (starting one first with --persist), acquires
// the path's node and returns a session on it. ok is false when no daemon
// runs: the caller then builds its own tree, as without a daemon.
func (g *globalFlags) openPooled(path string) (s *session, ok bool, err error) {
	if _, err := spawn.ParsePath(path); err != nil {
		return nil, true, usageErr("%v", err)
	}
	d, ok, err := g.dialPool()
	if !ok || err != nil {
		return nil, ok, err
	}
	rm, release, err := d.lease(g.wait)(d.ctx, path)
	if err != nil {
		d.close()
		return nil, true, spawnErr(err)
	}
	return &session{root: d.node, chain: []*arborctx.Remote{rm}, ctx: d.ctx, stop: d.stop, release: release}, true, nil
}

// dialPool attaches to the running arbor serve for its pool (starting one
// with --persist). ok is false when none runs, or there is no time left
// to ask one (a --timeout shorter than a dial): the caller then builds its
// own tree and reports failures as for any one-shot run.
func (g *globalFlags) dialPool() (d *daemon, ok bool, err error) {
	sock, err := control.SocketPath(socketFlag)
	if err != nil {
		return nil, false, nil
	}
	log, level, err := g.logger()
	if err != nil {
		return nil, true, err
	}
	ctx, stop := g.runContext()
	o := agent.Options{Logger: log, LogLevel: level.String()}
	n, err := control.Dial(ctx, sock, o)
	if errors.Is(err, control.ErrNotRunning) && g.persist > 0 {
		n, err = g.startPersist(ctx, sock, o, log)
	}
	if err != nil {
		stop()
		if errors.Is(err, control.ErrNotRunning) || ctx.Err() != nil {
			return nil, false, nil
		}
		return nil, true, &exitError{code: exitUnreachable, err: err}
	}
	return &daemon{node: n, ctx: ctx, stop: stop, socket: sock, log: log}, true, nil
}

// lease is fanout.Runner.Lease over the daemon's pool: a target's node
// for the run, given back when its operation is done.
func (d *daemon) lease(wait bool) func(ctx context.Context, path string) (*arborctx.Remote, func(), error) {
	return func(ctx context.Context, path string) (*arborctx.Remote, func(), error) {
		res, err := d.acquire(ctx, path, wait)
		if err != nil {
			return nil, nil, err
		}
		return d.node.Remote(res.ID, res.Name), func() { d.release(res.Lease) }, nil
	}
}

// release gives lease back to the pool; a daemon that does not answer in
// time takes it back itself when this client goes.
func (d *daemon) release(lease uint64) {
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.root().Call(rctx, "serve.release", control.ReleaseArgs{Lease: lease}, nil)
}

// acquire asks the daemon's pool for path's node. The caller's deadline
// travels as an argument, and the call itself may last acquireGrace
// longer, so that a request that times out in the queue gets the pool's
// message; an interrupt still ends the call at once.
func (d *daemon) acquire(ctx context.Context, path string, wait bool) (control.AcquireResult, error) {
	args := control.AcquireArgs{Path: path, Wait: wait}
	if dl, ok := ctx.Deadline(); ok {
		args.DeadlineUnixNano = dl.UnixNano()
		parent := ctx
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.WithoutCancel(parent), dl.Add(acquireGrace))
		defer cancel()
		stop := context.AfterFunc(parent, func() {
			if errors.Is(parent.Err(), context.Canceled) {
				cancel()
			}
		})
		defer stop()
	}
	var res control.AcquireResult
	err := d.root().Call(ctx, "serve.acquire", args, &res)
	return res, err
}

// startPersist starts arbor serve in the background on sock (detached,
// its log beside the socket) to exit after --persist without requests,
// and attaches to it once it answers.
func (g *globalFlags) startPersist(ctx context.Context, sock string, o agent.Options, log hclog.Logger) (*agent.Node, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("arbor: --persist: %w", err)
	}
	dir := filepath.Dir(sock)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("arbor: --persist: %w", err)
	}
	logPath := filepath.Join(dir, "serve.log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("arbor: --persist: %w", err)
	}
	defer lf.Close()
	args := []string{"--socket", sock, "--log-level", g.logLevel, "--ssh-path", g.sshPath,
		"--connect-timeout", g.connectTimeout.String()}
	add := func(flag string, vals ...string) {
		for _, v := range vals {
			if v != "" {
				args = append(args, "--"+flag, v)
			}
		}
	}
	add("ssh-config", g.sshConfig)
	add("ssh-option", g.sshOptions...)
	add("agent-dir", g.agentDir)
	if g.sources[configFlag] == "flag" {
		add(configFlag, g.config) // $ARBOR_CONFIG it inherits
	}
	add("tool-path", g.toolPaths...)
	add("tool-option", g.toolOptions...)
	add("kube-context", g.kubeContext)
	add("kubeconfig", g.kubeconfig)
	args = append(args, "serve", "--exit-idle", g.persist.String())
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("arbor: --persist: starting arbor serve: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	log.Info("started arbor serve in the background", "pid", cmd.Process.Pid, "socket", sock, "log", logPath, "exit_idle", g.persist)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := control.Dial(ctx, sock, o)
		if err == nil || !errors.Is(err, control.ErrNotRunning) || time.Now().After(deadline) {
			return n, err
		}
		select {
		case <-exited:
			// Another --persist may have won the socket: one more try.
			return control.Dial(ctx, sock, o)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func newPoolCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pool [--json]",
		Short: "Show arbor serve's pool of warm nodes: paths, nodes, queued requests, backoff",
		Example: `  arbor pool                                       # paths, nodes, builds, queue, backoff
  arbor pool -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDaemon(func(d *daemon) error {
				var ps []control.PoolPath
				if err := d.root().Call(d.ctx, "serve.pool", nil, &ps); err != nil {
					return callErr(err)
				}
				if asJSON {
					printJSON(ps)
					return nil
				}
				fmt.Print(renderPool(ps))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(newPoolKeepCmd(g))
	return cmd
}

func newPoolKeepCmd(g *globalFlags) *cobra.Command {
	var floor int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keep PATH --min N",
		Short: "Keep at least N nodes of PATH open or building (0: none)",
		Example: `  arbor pool keep ssh:web1 --min 2                 # 2 nodes of ssh:web1 open or building at all times
  arbor pool keep ssh:web1 --min 0 -o json         # no floor: {"min":0,"path":"ssh:web1"}`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := spawn.ParsePath(args[0]); err != nil {
				return usageErr("%v", err)
			}
			if floor < 0 {
				return usageErr("--min must not be negative")
			}
			return g.withDaemon(func(d *daemon) error {
				if err := d.root().Call(d.ctx, "serve.pool.keep", control.KeepArgs{Path: args[0], Min: floor}, nil); err != nil {
					return callErr(err)
				}
				if asJSON {
					printJSON(map[string]any{"path": args[0], "min": floor})
				} else {
					fmt.Printf("%s: floor %d\n", args[0], floor)
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&floor, "min", 0, "the floor: nodes kept open or building")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// renderPool is arbor pool's text form.
func renderPool(ps []control.PoolPath) string {
	if len(ps) == 0 {
		return "the pool is empty\n"
	}
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s  floor %d  idle TTL %s\n", p.Path, p.Floor, time.Duration(p.IdleTTLS*float64(time.Second)))
		for _, n := range p.Nodes {
			if n.Users > 0 {
				fmt.Fprintf(&b, "  node %d %s  busy (%d requests)\n", n.ID, n.Name, n.Users)
			} else {
				fmt.Fprintf(&b, "  node %d %s  idle for %.1f s\n", n.ID, n.Name, n.IdleS)
			}
		}
		if p.Building > 0 {
			fmt.Fprintf(&b, "  building %d (for %.1f s)\n", p.Building, p.BuildingS)
		}
		for i, w := range p.Queue {
			fmt.Fprintf(&b, "  queued #%d: client %d, waiting %.1f s\n", i+1, w.Client, w.WaitedS)
		}
		if p.LastError != "" {
			fmt.Fprintf(&b, "  backoff: %d failed builds, next try in %.1f s; last error: %s\n", p.Failures, p.NextTryInS, logsafe.Escape(p.LastError))
		}
	}
	return b.String()
}
