package builtin

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/arbor-project/arbor/internal/errs"
	"io"
	"os"
	"sync"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/arbor-project/arbor/transfer"
	"github.com/creack/pty"
)

// FnExecStream runs a command with its output streamed over a channel.
const FnExecStream = "sys.exec.stream"

// ExecStreamArgs are the arguments of sys.exec.stream.
type ExecStreamArgs struct {
	Channel uint32   `cbor:"channel" json:"channel"`
	Argv    []string `cbor:"argv" json:"argv"`
	Env     []string `cbor:"env,omitempty" json:"env,omitempty"`
	Dir     string   `cbor:"dir,omitempty" json:"dir,omitempty"`
	// Stdin: the caller forwards stdin on the channel; without it the
	// command reads /dev/null.
	Stdin bool `cbor:"stdin,omitempty" json:"stdin,omitempty"`
	// TTY: the command runs on a new pseudo-terminal of Rows x Cols (its
	// controlling terminal, as under ssh -t). Its stdout and stderr are
	// the terminal's output, sent as stdout records; stdin records are
	// typed into it; resize records change its size.
	TTY  bool   `cbor:"tty,omitempty" json:"tty,omitempty"`
	Rows uint16 `cbor:"rows,omitempty" json:"rows,omitempty"`
	Cols uint16 `cbor:"cols,omitempty" json:"cols,omitempty"`
}

// WinSize is a terminal's size in characters.
type WinSize struct{ Rows, Cols uint16 }

// ExecStreamResult is the result of sys.exec.stream.
type ExecStreamResult struct {
	ExitStatus int `cbor:"exit_status" json:"exit_status"`
}

// registerStreams adds the channel-based built-ins: streamed exec and the
// node side of file transfers.
func registerStreams(reg *funcs.Registry) {
	funcs.Register(reg, FnExecStream, execStream)
	transfer.Register(reg)
}

// The exec channel carries records: one type byte, a 4-byte big-endian
// length, the body (stream/PROTOCOL.md, section 11.4). Caller to node:
// 'i' stdin bytes, 'c' stdin closed, 'w' window size (rows, columns: two
// big-endian uint16; a TTY command only). Node to caller: 'o' stdout bytes,
// 'e' stderr bytes, then 'z' (CBOR ExecStreamResult) when the command has
// exited and its output is all sent, or 'x' (CBOR text) when it could not
// run. A channel that ends before 'z' or 'x' was cut short.
const (
	recStdin      = 'i'
	recStdinClose = 'c'
	recResize     = 'w'
	recStdout     = 'o'
	recStderr     = 'e'
	recExit       = 'z'
	recFail       = 'x'

	execChunk     = 32 << 10
	maxExecRecord = 1 << 20
)

// recordConn writes records from several goroutines, each flushed at once
// so output arrives as it is produced.
type recordConn struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (rc *recordConn) write(typ byte, body []byte) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	rc.w.Write(hdr[:])
	rc.w.Write(body)
	return rc.w.Flush()
}

func readRecord(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxExecRecord {
		return 0, nil, fmt.Errorf("record of %d bytes exceeds %d", n, maxExecRecord)
	}
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, io.ErrUnexpectedEOF
	}
	return hdr[0], body, nil
}

// execStream is the node side of sys.exec.stream. The command runs under a
// guard (startGuarded): the call's cancel, the end of the channel before
// the command's exit status is sent (the caller is gone), and this node's
// death all kill it and everything it forked.
func execStream(ctx context.Context, c *funcs.Call, a ExecStreamArgs) (ExecStreamResult, error) {
	ch, err := c.Router.ClaimChannel(c.Src, a.Channel)
	if err != nil {
		return ExecStreamResult{}, err
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, ch.Abort)
	defer stop()
	out := &recordConn{w: bufio.NewWriterSize(ch, execChunk+5)}
	fail := func(err error) (ExecStreamResult, error) {
		f := execFailure{Message: err.Error(), ExitStatus: StatusCannotRun}
		var nr *notRunnable
		if errors.As(err, &nr) {
			f.ExitStatus = nr.status
		}
		if b, merr := wire.Marshal(f); merr == nil {
			_ = out.write(recFail, b)
		}
		return ExecStreamResult{}, err
	}
	if len(a.Argv) == 0 {
		return fail(errors.New("argv is empty"))
	}
	path, err := lookCommand(a.Argv[0], a.Dir)
	if err != nil {
		return fail(err)
	}
	var closeAfterStart []*os.File
	pipe := func() (*os.File, *os.File) {
		r, w, perr := os.Pipe()
		if perr != nil {
			err = perr
			return nil, nil
		}
		closeAfterStart = append(closeAfterStart, r, w)
		return r, w
	}
	if a.TTY {
		return execTTY(ctx, a, path, out, ch, fail)
	}
	or, ow := pipe()
	er, ew := pipe()
	var ir, iw *os.File
	if a.Stdin {
		ir, iw = pipe()
	}
	if err != nil {
		for _, f := range closeAfterStart {
			f.Close()
		}
		return fail(fmt.Errorf("%s: %w", a.Argv[0], err))
	}
	var stdin io.Reader // nil: /dev/null
	if a.Stdin {
		stdin = ir
	}
	g, err := startGuarded(path, a.Argv, commandEnv(a.Env), a.Dir, stdin, ow, ew, false)
	ow.Close()
	ew.Close()
	if ir != nil {
		ir.Close()
	}
	if err != nil {
		or.Close()
		er.Close()
		if iw != nil {
			iw.Close()
		}
		return fail(fmt.Errorf("%s: %w", a.Argv[0], err))
	}
	go readCaller(ch, iw, nil, g.kill)
	var pumps sync.WaitGroup
	pumps.Add(2)
	go pumpRecords(&pumps, out, g, recStdout, or)
	go pumpRecords(&pumps, out, g, recStderr, er)
	return finishExec(ctx, a, g, &pumps, out, ch, fail)
}

// pumpRecords sends what the command writes to f as records of type typ
// until f ends, then closes f.
func pumpRecords(pumps *sync.WaitGroup, out *recordConn, g *guarded, typ byte, f *os.File) {
	defer pumps.Done()
	defer f.Close()
	buf := make([]byte, execChunk)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if werr := out.write(typ, buf[:n]); werr != nil {
				// The caller is gone: stop the command, and keep
				// draining so nothing blocks on a full pipe meanwhile.
				g.kill()
				_, _ = io.Copy(io.Discard, f)
				return
			}
		}
		if rerr != nil {
			// A terminal's master reads EIO once no process holds the
			// terminal: that is its end of output.
			return
		}
	}
}

// finishExec waits for the command and its output, then sends the exit
// status; the command is released once it is sent.
func finishExec(ctx context.Context, a ExecStreamArgs, g *guarded, pumps *sync.WaitGroup, out *recordConn, ch *router.Channel, fail func(error) (ExecStreamResult, error)) (ExecStreamResult, error) {
	kill := context.AfterFunc(ctx, g.kill)
	defer func() {
		kill()
		g.release()
	}()
	status, err := g.wait(a.Argv[0])
	pumps.Wait()
	if ctx.Err() != nil {
		return ExecStreamResult{}, fmt.Errorf("%s: %w", a.Argv[0], ctx.Err())
	}
	if err != nil {
		return fail(err)
	}
	res := ExecStreamResult{ExitStatus: status}
	body, err := wire.Marshal(res)
	if err != nil {
		return fail(err)
	}
	if err := out.write(recExit, body); err != nil {
		return res, fmt.Errorf("%w (%s: sending exit status)", err, a.Argv[0])
	}
	_ = ch.CloseWrite()
	return res, nil
}

// readCaller reads what the caller sends: 'i' records go to the command's
// stdin (nil: the command reads /dev/null) and 'c' closes it. The caller
// never ends the channel before it has the exit status, so an end or an
// error before that means the caller is gone: kill is called (execStream
// releases the command once the status is sent, which makes it a no-op).
//
// For a command on a terminal, tty is the terminal's master (stdin is the
// same file): 'w' resizes it and 'c' is ignored (the terminal stays open
// until the command ends, as under ssh -t).
func readCaller(ch *router.Channel, stdin, tty *os.File, kill func()) {
	closeStdin := func() {
		if stdin != nil {
			stdin.Close()
			stdin = nil
		}
	}
	defer closeStdin()
	r := bufio.NewReaderSize(ch, execChunk+5)
	buf := make([]byte, execChunk)
	for {
		typ, body, err := readRecord(r, buf)
		if err != nil {
			kill()
			return
		}
		switch typ {
		case recStdin:
			if stdin != nil {
				if _, err := stdin.Write(body); err != nil {
					closeStdin() // the command no longer reads it
				}
			}
		case recStdinClose:
			if tty == nil {
				closeStdin()
			}
		case recResize:
			if tty != nil && len(body) == 4 {
				_ = pty.Setsize(tty, &pty.Winsize{Rows: binary.BigEndian.Uint16(body), Cols: binary.BigEndian.Uint16(body[2:])})
			}
		default:
			kill()
			return
		}
	}
}

// execFailure is the body of a 'x' record: why the command could not run,
// and the exit status a shell gives that (StatusNotFound, StatusCannotRun).
type execFailure struct {
	Message    string `cbor:"message"`
	ExitStatus int    `cbor:"exit_status"`
}

// ExecStream runs argv on node rm with its output streamed to stdout and
// stderr as it is produced, and stdin (nil: none) forwarded to it. It
// returns the command's exit status (128+signal when killed). A command
// that cannot run is a *StartError wrapping the *funcs.RemoteError that
// says why ("command not found: X", "permission denied: X").
func ExecStream(ctx context.Context, rm *arborctx.Remote, a ExecStreamArgs, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	a.TTY = false
	return execStream1(ctx, rm, a, stdin, stdout, stderr, nil)
}

// ExecStreamTTY is ExecStream with the command on a pseudo-terminal of
// size a.Rows x a.Cols on the node (see ExecStreamArgs.TTY): its output
// goes to stdout, stdin (nil: none) is typed into the terminal, and every
// size received on resize is sent on to it. resize may be nil.
func ExecStreamTTY(ctx context.Context, rm *arborctx.Remote, a ExecStreamArgs, stdin io.Reader, stdout io.Writer, resize <-chan WinSize) (int, error) {
	a.TTY = true
	return execStream1(ctx, rm, a, stdin, stdout, io.Discard, resize)
}

func execStream1(ctx context.Context, rm *arborctx.Remote, a ExecStreamArgs, stdin io.Reader, stdout, stderr io.Writer, resize <-chan WinSize) (int, error) {
	a.Stdin = stdin != nil
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := rm.StartChannel(ctx, FnExecStream, func(id uint32) any {
		a.Channel = id
		return a
	})
	if err != nil {
		return 0, err
	}
	in := &recordConn{w: bufio.NewWriterSize(cc.Channel, execChunk+5)}
	if stdin != nil {
		go sendStdin(in, stdin)
	}
	if resize != nil {
		go sendResizes(ctx, in, resize)
	}
	status, rerr := readOutput(cc.Channel, stdout, stderr)
	var lw *localWriteError
	if errors.As(rerr, &lw) {
		cancel() // nobody reads the output any more: stop the command
	}
	var res ExecStreamResult
	werr := cc.Wait(&res)
	var f *execFailure
	switch {
	case werr != nil && errors.As(rerr, &f):
		return 0, &StartError{Status: f.ExitStatus, Err: werr}
	case werr != nil:
		return 0, werr
	case rerr != nil:
		return 0, errs.Wrap(rerr, fmt.Sprintf("exec on node %d (%s)", rm.ID(), rm.Name()))
	}
	return status, nil
}

// sendResizes sends each size from resize as a 'w' record until ctx ends.
func sendResizes(ctx context.Context, out *recordConn, resize <-chan WinSize) {
	for {
		select {
		case <-ctx.Done():
			return
		case ws := <-resize:
			var b [4]byte
			binary.BigEndian.PutUint16(b[:], ws.Rows)
			binary.BigEndian.PutUint16(b[2:], ws.Cols)
			if out.write(recResize, b[:]) != nil {
				return
			}
		}
	}
}

func sendStdin(out *recordConn, stdin io.Reader) {
	buf := make([]byte, execChunk)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			if out.write(recStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			_ = out.write(recStdinClose, nil)
			return
		}
	}
}

func readOutput(ch *router.Channel, stdout, stderr io.Writer) (int, error) {
	r := bufio.NewReaderSize(ch, execChunk+5)
	buf := make([]byte, execChunk)
	for {
		typ, body, err := readRecord(r, buf)
		if err != nil {
			return 0, errs.Wrap(err, "output cut short")
		}
		switch typ {
		case recStdout:
			if _, err := stdout.Write(body); err != nil {
				return 0, &localWriteError{err}
			}
		case recStderr:
			_, _ = stderr.Write(body)
		case recExit:
			var res ExecStreamResult
			if err := wire.Unmarshal(body, &res); err != nil {
				return 0, err
			}
			return res.ExitStatus, nil
		case recFail:
			f := &execFailure{ExitStatus: StatusCannotRun}
			if err := wire.Unmarshal(body, f); err != nil {
				return 0, err
			}
			return 0, f
		default:
			return 0, fmt.Errorf("unexpected record %q", typ)
		}
	}
}

func (f *execFailure) Error() string { return f.Message }

// StartError is a command that could not run on the node. Status is the
// exit status a shell gives that: StatusNotFound or StatusCannotRun.
type StartError struct {
	Status int
	Err    error // the call's error, naming the node and the reason
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

type localWriteError struct{ err error }

func (e *localWriteError) Error() string { return "writing output: " + e.err.Error() }
func (e *localWriteError) Unwrap() error { return e.err }
