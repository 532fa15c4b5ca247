package main

import (
	"errors"
	"io"
	"os"

	"github.com/arbor-project/arbor/builtin"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newExecCmd(g *globalFlags) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "exec (--to PATH | NODE) -- CMD [ARGS...]",
		Short: "Run a command on the last node of PATH; its output is streamed and its exit status is arbor's",
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
	return cmd
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
