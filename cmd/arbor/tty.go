package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"golang.org/x/term"
)

// execTTY runs exec -t: the command on a pseudo-terminal on node rm, the
// local terminal (when stdin is one) in raw mode until it ends, its size
// sent at the start and on every SIGWINCH, TERM passed on.
func execTTY(ctx context.Context, rm *arborctx.Remote, a builtin.ExecStreamArgs) (int, error) {
	in := int(os.Stdin.Fd())
	a.Rows, a.Cols = 24, 80
	size := func() (builtin.WinSize, bool) {
		for _, fd := range []int{int(os.Stdout.Fd()), in} {
			if c, r, err := term.GetSize(fd); err == nil && c > 0 && r > 0 {
				return builtin.WinSize{Rows: uint16(r), Cols: uint16(c)}, true
			}
		}
		return builtin.WinSize{}, false
	}
	if ws, ok := size(); ok {
		a.Rows, a.Cols = ws.Rows, ws.Cols
	}
	if t := os.Getenv("TERM"); t != "" {
		a.Env = append([]string{"TERM=" + t}, a.Env...)
	}
	if term.IsTerminal(in) {
		if old, err := term.MakeRaw(in); err == nil {
			defer term.Restore(in, old)
		}
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	resize := make(chan builtin.WinSize, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
			}
			if ws, ok := size(); ok {
				select {
				case resize <- ws:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return builtin.ExecStreamTTY(ctx, rm, a, os.Stdin, os.Stdout, resize)
}
