package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/arbor-project/arbor/funcs"
)

// ExecArgs are the arguments of sys.exec.
type ExecArgs struct {
	Argv  []string `cbor:"argv" json:"argv"`
	Env   []string `cbor:"env,omitempty" json:"env,omitempty"`
	Dir   string   `cbor:"dir,omitempty" json:"dir,omitempty"`
	Stdin []byte   `cbor:"stdin,omitempty" json:"stdin,omitempty"`
}

// ExecResult is the result of sys.exec. Output is binary-safe.
type ExecResult struct {
	ExitStatus int    `cbor:"exit_status" json:"exit_status"`
	Stdout     []byte `cbor:"stdout" json:"stdout"`
	Stderr     []byte `cbor:"stderr" json:"stderr"`
}

func registerExec(reg *funcs.Registry) {
	funcs.Register(reg, "sys.exec", runExec)
}

// runExec runs a command to completion with its output buffered. Output
// beyond the node's message limit fails the call with a clear error. The
// command runs under a guard (startGuarded): cancelling the call, or the
// death of this node, kills it and everything it forked.
func runExec(ctx context.Context, c *funcs.Call, a ExecArgs) (ExecResult, error) {
	if len(a.Argv) == 0 {
		return ExecResult{}, errors.New("argv is empty")
	}
	path, err := lookCommand(a.Argv[0], a.Dir)
	if err != nil {
		return ExecResult{}, err
	}
	or, ow, err := os.Pipe()
	if err != nil {
		return ExecResult{}, fmt.Errorf("%s: %w", a.Argv[0], err)
	}
	er, ew, err := os.Pipe()
	if err != nil {
		or.Close()
		ow.Close()
		return ExecResult{}, fmt.Errorf("%s: %w", a.Argv[0], err)
	}
	g, err := startGuarded(path, a.Argv, commandEnv(a.Env), a.Dir, bytes.NewReader(a.Stdin), ow, ew, false)
	ow.Close()
	ew.Close()
	if err != nil {
		or.Close()
		er.Close()
		return ExecResult{}, fmt.Errorf("%s: %w", a.Argv[0], err)
	}
	stop := context.AfterFunc(ctx, g.kill)
	defer func() {
		stop()
		g.release()
	}()
	limit := int64(c.Router.MaxMessage()) - 4096
	stdout := &capped{max: limit}
	stderr := &capped{max: limit}
	var wg sync.WaitGroup
	wg.Add(2)
	drain := func(w io.Writer, r *os.File) {
		defer wg.Done()
		defer r.Close()
		_, _ = io.Copy(w, r)
	}
	go drain(stdout, or)
	go drain(stderr, er)
	status, err := g.wait(a.Argv[0])
	wg.Wait()
	if ctx.Err() != nil {
		return ExecResult{}, fmt.Errorf("%s: %w", a.Argv[0], ctx.Err())
	}
	if err != nil {
		return ExecResult{}, err
	}
	if stdout.over || stderr.over {
		return ExecResult{}, fmt.Errorf("%s: output larger than the message limit (%d bytes); stream it instead", a.Argv[0], c.Router.MaxMessage())
	}
	return ExecResult{ExitStatus: status, Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes()}, nil
}

// exitStatus is a finished command's status as a shell reports it (128+N
// for a command killed by signal N), from the error its Wait returned; an
// error that is not an exit status is returned as it is.
func exitStatus(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// capped buffers output up to max bytes, then records that it overflowed.
type capped struct {
	buf  bytes.Buffer
	max  int64
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if int64(c.buf.Len()+len(p)) > c.max {
		c.over = true
		return len(p), nil
	}
	return c.buf.Write(p)
}
