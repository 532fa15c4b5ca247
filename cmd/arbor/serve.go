package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/funcs"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

func newServeCmd(g *globalFlags) *cobra.Command {
	hb := agent.DefaultHeartbeat()
	var maxClients int
	pool := control.DefaultPoolConfig()
	var exitIdle time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Keep a tree alive behind a control socket (foreground; logs to stderr)",
		Example: `  arbor serve &                                        # foreground; logs to stderr
  arbor serve --heartbeat 1s --unresponsive-after 5s --down-after 10s
  arbor --socket /tmp/arbor.sock serve --idle-ttl 10m --exit-idle 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := hb.Validate(); err != nil {
				return usageErr("%v", err)
			}
			if maxClients <= 0 {
				return usageErr("--max-clients must be positive")
			}
			if pool.IdleTTL <= 0 || pool.MaxBuilds <= 0 || exitIdle < 0 {
				return usageErr("--idle-ttl and --max-builds must be positive, --exit-idle not negative")
			}
			level := hclog.LevelFromString(g.logLevel)
			if level == hclog.NoLevel {
				return usageErr("unknown log level %q", g.logLevel)
			}
			log := hclog.New(&hclog.LoggerOptions{Name: "arbor", Level: level, Output: os.Stderr})
			path, err := control.SocketPath(socketFlag)
			if err != nil {
				return &exitError{code: exitRemote, err: err}
			}
			ln, err := control.Listen(path)
			if err != nil {
				if errors.Is(err, control.ErrAlreadyRunning) {
					return &exitError{code: exitRemote, err: err}
				}
				return &exitError{code: exitRemote, err: err}
			}
			if ln.Warning != "" {
				log.Warn(ln.Warning)
			}
			if ln.RemovedStale {
				log.Warn("removed a stale socket left by a server that died", "socket", path)
			}
			reg := funcs.NewRegistry()
			builtin.Register(reg)
			o := g.nodeOptions(log, level.String())
			o.Registry, o.Heartbeat = reg, hb
			root, err := agent.NewRoot(o)
			if err != nil {
				ln.Close()
				return &exitError{code: exitRemote, err: err}
			}
			srv := control.NewServer(root, reg, ln, control.Config{MaxClients: maxClients, Pool: pool})
			served := make(chan error, 1)
			go func() { served <- srv.Serve() }()
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			fmt.Fprintf(os.Stderr, "arbor serve: listening on %s (pid %d)\n", path, os.Getpid())
			var why string
			var serveErr error
			idle := make(chan struct{})
			if exitIdle > 0 {
				stopIdle := make(chan struct{})
				defer close(stopIdle)
				go exitWhenIdle(srv, exitIdle, idle, stopIdle)
			}
			select {
			case <-idle:
				why = fmt.Sprintf("no request for %s", exitIdle)
			case s := <-sig:
				why = s.String()
			case <-srv.StopRequested():
				why = "arbor stop"
			case serveErr = <-served:
				why = "control socket failed"
			}
			fmt.Fprintf(os.Stderr, "arbor serve: stopping (%s): shutting the tree down\n", why)
			if err := stopServe(srv, root, sig); err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, "arbor serve: stopped")
			if serveErr != nil {
				return &exitError{code: exitRemote, err: serveErr}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&hb.Interval, "heartbeat", hb.Interval, "probe each idle link this often")
	f.DurationVar(&hb.UnresponsiveAfter, "unresponsive-after", hb.UnresponsiveAfter, "a node silent this long is UNRESPONSIVE")
	f.DurationVar(&hb.DownAfter, "down-after", hb.DownAfter, "a node silent this long is DOWN: its link closes and its subtree is removed")
	f.IntVar(&maxClients, "max-clients", 16, "CLI clients served at once; more wait for a slot")
	f.DurationVar(&pool.IdleTTL, "idle-ttl", pool.IdleTTL, "shut a pool node down after this long unused (unless its path's floor needs it)")
	f.IntVar(&pool.MaxBuilds, "max-builds", pool.MaxBuilds, "builds of one pool path at once")
	f.DurationVar(&exitIdle, "exit-idle", 0, "exit after this long with no pool request queued or running (0: never; what --persist sets)")
	return cmd
}

// exitWhenIdle closes idle once srv's pool has had no request for d.
func exitWhenIdle(srv *control.Server, d time.Duration, idle chan<- struct{}, stop <-chan struct{}) {
	t := time.NewTicker(min(d/4, 250*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		since, busy := srv.Pool().IdleSince()
		if !busy && time.Since(since) >= d {
			close(idle)
			return
		}
	}
}
