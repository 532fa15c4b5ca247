package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	arborctx "github.com/arbor-project/arbor/context"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
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
