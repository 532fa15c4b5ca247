package builtin

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/arbor-project/arbor/router"
	"github.com/creack/pty"
)

// execTTY runs a sys.exec.stream command whose ExecStreamArgs.TTY is set:
// on a new pseudo-terminal, its controlling terminal, in a session of its
// own led by the guard (so the guard's kill still takes the whole group).
func execTTY(ctx context.Context, a ExecStreamArgs, path string, out *recordConn, ch *router.Channel, fail func(error) (ExecStreamResult, error)) (ExecStreamResult, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return fail(fmt.Errorf("%s: opening a terminal: %w", a.Argv[0], err))
	}
	if a.Rows > 0 && a.Cols > 0 {
		_ = pty.Setsize(ptmx, &pty.Winsize{Rows: a.Rows, Cols: a.Cols})
	}
	g, err := startGuarded(path, a.Argv, commandEnv(a.Env), a.Dir, tty, tty, tty, true)
	tty.Close()
	if err != nil {
		ptmx.Close()
		return fail(fmt.Errorf("%s: %w", a.Argv[0], err))
	}
	var stdin *os.File
	if a.Stdin {
		stdin = ptmx
	}
	go readCaller(ch, stdin, ptmx, g.kill)
	var pumps sync.WaitGroup
	pumps.Add(1)
	go pumpRecords(&pumps, out, g, recStdout, ptmx)
	return finishExec(ctx, a, g, &pumps, out, ch, fail)
}

// commandEnv is the environment of a command run for a caller: this
// node's own, less arbor's (ARBOR_*: the log level and socket an agent
// was started with are no business of the command), then the caller's
// extra KEY=VALUE pairs, which win.
func commandEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ARBOR_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
