package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newExecCmd(g *globalFlags) *cobra.Command {
	var to, dir string
	var env []string
	var tty, interactive bool
	f := &fanFlags{}
	cmd := &cobra.Command{
		Use:   "exec (--to SET | NODE...) [--env K=V] [--dir D] [-t | -i] -- CMD [ARGS...]",
		Short: "Run a command on the last node of PATH, or on every target of a set; output is streamed and the exit status is arbor's",
		Long: `Run a command on the last node of PATH (--to), on NODE of arbor serve, or on every target of a set.

The -- before the command is required: everything after it is the command and its arguments,
never arbor's flags. Output is streamed as it comes; the exit status is the command's own (255
when the node cannot be reached, 127 for a command not found).

Stdin is forwarded when it is not a terminal (a pipe or a file); from a terminal it is forwarded
only with -i (the command reads it line by line as you type) or -t. With -t the command runs on a
pseudo-terminal on the node, as ssh -t does: the local terminal goes into raw mode, its size and
every change of it are passed on, and TERM is set as here (for top, vi, less, a shell).

The command's environment is the node's, less arbor's own ARBOR_* variables, plus --env.`,
		Example: `  arbor exec --to local -- id
  arbor exec --to ssh:web1/sudo:root -- systemctl status nginx
  arbor exec web2 -- uptime                                   # NODE of arbor serve
  arbor exec --to ssh:db1 --env PGUSER=app --dir /srv/app -- ./migrate --dry-run
  arbor exec -t web2 -- top                                   # a terminal on the node
  echo hi | arbor exec --to local/local -- cat                # stdin from a pipe is forwarded
  arbor exec -w 'ssh:web[01-20]' -f 8 -b -- uname -r          # many targets, gathered`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var node string
			if to == "" {
				switch dash := cmd.ArgsLenAtDash(); {
				case len(args) == 0:
					return usageErr("exec: no target: give --to PATH or NODE of arbor serve (arbor exec --to PATH -- CMD [ARGS...], arbor exec NODE -- CMD [ARGS...])")
				case dash == -1 && len(args) > 1:
					return usageErr("exec: put -- between the target and the command: arbor exec %s -- %s", args[0], strings.Join(args[1:], " "))
				case dash == 0:
					return usageErr("exec: no target before --: give --to PATH or NODE of arbor serve")
				case dash > 1:
					return usageErr("exec: one target before -- (a set is comma-separated: %s), then the command", strings.Join(args[:dash], ","))
				}
				node, args = args[0], args[1:]
			}
			if len(args) == 0 {
				return usageErr("exec: no command given (arbor exec --to PATH -- CMD [ARGS...])")
			}
			for _, kv := range env {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return usageErr("exec: --env %q: want KEY=VALUE", kv)
				}
			}
			if tty && interactive {
				return usageErr("exec: -t already forwards stdin; give -t or -i, not both")
			}
			ea := builtin.ExecStreamArgs{Argv: args, Env: env, Dir: dir}
			many, err := g.fansOut(to, node, f)
			if err != nil {
				return err
			}
			if many {
				if tty {
					return usageErr("exec: -t is for one target; a terminal cannot be shared by a set")
				}
				fr := &fanRun{g: g, f: f, verb: "exec"}
				return fr.run(to, node, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (outcome, error) {
					ow, ew, ob, eb := fr.writers(t.Label)
					st, err := builtin.ExecStream(ctx, rm, ea, nil, ow, ew)
					ow.Close()
					ew.Close()
					var se *builtin.StartError
					if errors.As(err, &se) {
						st = se.Status
					}
					return outcome{status: st, stdout: ob.Bytes(), stderr: eb.Bytes()}, err
				})
			}
			// stdin is forwarded unless it is a terminal, and from a
			// terminal with -i or -t.
			var stdin io.Reader
			if !isTerminal(os.Stdin) || interactive || tty {
				stdin = os.Stdin
			}
			s, err := g.openTarget(to, node)
			if err != nil {
				return err
			}
			defer s.close()
			var status int
			if tty {
				status, err = execTTY(s.ctx, s.last(), ea)
			} else {
				status, err = builtin.ExecStream(s.ctx, s.last(), ea, stdin, os.Stdout, os.Stderr)
			}
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
	cmd.Flags().StringArrayVar(&env, "env", nil, "KEY=VALUE in the command's environment (repeatable)")
	cmd.Flags().StringVar(&dir, "dir", "", "run the command in this directory of the node")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a pseudo-terminal on the node, stdin forwarded in raw mode (as ssh -t)")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "forward stdin even when it is a terminal")
	f.add(cmd, true)
	f.jsonFans = true
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
