package main

import (
	"errors"
	"io"
	"os"

	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/spf13/cobra"
)

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
