package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newExecCmd(g *globalFlags) *cobra.Command {
	var to string
	f := &fanFlags{}
	cmd := &cobra.Command{
		Use:   "exec (--to SET | NODE...) -- CMD [ARGS...]",
		Short: "Run a command on the last node of PATH, or on every target of a set; output is streamed and the exit status is arbor's",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var node string
			if to == "" {
				if len(args) < 1 || cmd.ArgsLenAtDash() != 1 {
					return usageErr("exec: --to PATH is required") // or NODE of arbor serve: exec NODE -- CMD
				}
				node, args = args[0], args[1:]
			}
			if len(args) == 0 {
				return usageErr("exec: no command given (arbor exec --to PATH -- CMD [ARGS...])")
			}
			many, err := g.fansOut(to, node, f)
			if err != nil {
				return err
			}
			if many {
				fr := &fanRun{g: g, f: f, verb: "exec"}
				return fr.run(to, node, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (outcome, error) {
					ow, ew, ob, eb := fr.writers(t.Label)
					st, err := builtin.ExecStream(ctx, rm, builtin.ExecStreamArgs{Argv: args}, nil, ow, ew)
					ow.Close()
					ew.Close()
					var se *builtin.StartError
					if errors.As(err, &se) {
						st = se.Status
					}
					return outcome{status: st, stdout: ob.Bytes(), stderr: eb.Bytes()}, err
				})
			}
			// stdin is forwarded unless it is a terminal.
			var stdin io.Reader
			if !isTerminal(os.Stdin) {
				stdin = os.Stdin
			}
			s, err := g.openTarget(to, node)
			if err != nil {
				return err
			}
			defer s.close()
			status, err := builtin.ExecStream(s.ctx, s.last(), builtin.ExecStreamArgs{Argv: args}, stdin, os.Stdout, os.Stderr)
			if err != nil {
				// A command that could not run exits as in sh: 127 when
				// there is no such command, 126 when it cannot be run.
				var se *builtin.StartError
				if errors.As(err, &se) {
					return &exitError{code: se.Status, err: err}
				}
				return callErr(err)
			}
			if status != 0 {
				return &exitError{code: status}
			}
			return nil
		},
	}
	addTargetFlag(cmd, &to, "path of hops, e.g. local/local")
	f.add(cmd, true)
	return cmd
}

// fansOut reports whether a command runs over a set: --to names more
// than one target, NODE is a pattern, or a fan-out option is given. A
// malformed set is a usage error here.
func (g *globalFlags) fansOut(to, node string, f *fanFlags) (bool, error) {
	if to == "" {
		return isSet(node) || f.many(1), nil
	}
	ts, err := g.oneShotTargets(to, f)
	if err != nil {
		return false, err
	}
	if !f.many(len(ts)) && ts[0].Path != to {
		// One inventory host: reached by its own path.
		return true, nil
	}
	return f.many(len(ts)), nil
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
