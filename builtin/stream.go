package builtin

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/arbor-project/arbor/transfer"
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
}

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
// 'i' stdin bytes, 'c' stdin closed. Node to caller: 'o' stdout bytes,
// 'e' stderr bytes, then 'z' (CBOR ExecStreamResult) when the command has
// exited and its output is all sent, or 'x' (CBOR text) when it could not
// run. A channel that ends before 'z' or 'x' was cut short.
const (
	recStdin      = 'i'
	recStdinClose = 'c'
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

// execStream is the node side of sys.exec.stream.
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
		if b, merr := wire.Marshal(err.Error()); merr == nil {
			_ = out.write(recFail, b)
		}
		return ExecStreamResult{}, err
	}
	if len(a.Argv) == 0 {
		return fail(errors.New("argv is empty"))
	}
	path, err := exec.LookPath(a.Argv[0])
	if err != nil {
		return fail(fmt.Errorf("command not found: %s", a.Argv[0]))
	}
	cmd := exec.Command(path, a.Argv[1:]...)
	cmd.Args[0] = a.Argv[0]
	cmd.Dir = a.Dir
	cmd.Env = append(os.Environ(), a.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var closeAfterStart []*os.File
	pipe := func() (*os.File, *os.File) {
		r, w, perr := os.Pipe()
		if perr != nil {
			err = perr
			return nil, nil
		}
		return r, w
	}
	or, ow := pipe()
	er, ew := pipe()
	var ir, iw *os.File
	if a.Stdin {
		ir, iw = pipe()
	}
	if err != nil {
		return fail(fmt.Errorf("%s: %w", a.Argv[0], err))
	}
	cmd.Stdout, cmd.Stderr = ow, ew
	closeAfterStart = append(closeAfterStart, ow, ew)
	if a.Stdin {
		cmd.Stdin = ir
		closeAfterStart = append(closeAfterStart, ir)
	}
	err = cmd.Start()
	for _, f := range closeAfterStart {
		f.Close()
	}
	if err != nil {
		or.Close()
		er.Close()
		if iw != nil {
			iw.Close()
		}
		return fail(fmt.Errorf("%s: %w", a.Argv[0], err))
	}
	kill := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer kill()
	if a.Stdin {
		go forwardStdin(ch, iw)
	}
	var pumps sync.WaitGroup
	pump := func(typ byte, f *os.File) {
		defer pumps.Done()
		defer f.Close()
		buf := make([]byte, execChunk)
		for {
			n, rerr := f.Read(buf)
			if n > 0 {
				if werr := out.write(typ, buf[:n]); werr != nil {
					// The caller is gone: keep draining so the command
					// is not stopped by a full pipe before it is killed.
					_, _ = io.Copy(io.Discard, f)
					return
				}
			}
			if rerr != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump(recStdout, or)
	go pump(recStderr, er)
	pumps.Wait()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return ExecStreamResult{}, fmt.Errorf("%s: %w", a.Argv[0], ctx.Err())
	}
	status, err := exitStatus(err)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", a.Argv[0], err))
	}
	res := ExecStreamResult{ExitStatus: status}
	body, err := wire.Marshal(res)
	if err != nil {
		return fail(err)
	}
	if err := out.write(recExit, body); err != nil {
		return res, fmt.Errorf("%s: sending exit status: %w", a.Argv[0], err)
	}
	_ = ch.CloseWrite()
	return res, nil
}

// forwardStdin copies 'i' records to the command's stdin until 'c', the
// end of the channel, or the command no longer reads.
func forwardStdin(ch *router.Channel, stdin *os.File) {
	defer stdin.Close()
	r := bufio.NewReaderSize(ch, execChunk+5)
	buf := make([]byte, execChunk)
	for {
		typ, body, err := readRecord(r, buf)
		if err != nil || typ != recStdin {
			return
		}
		if _, err := stdin.Write(body); err != nil {
			return
		}
	}
}

// ExecStream runs argv on node rm with its output streamed to stdout and
// stderr as it is produced, and stdin (nil: none) forwarded to it. It
// returns the command's exit status (128+signal when killed). A command
// that cannot run is a *funcs.RemoteError ("command not found: X").
func ExecStream(ctx context.Context, rm *arborctx.Remote, a ExecStreamArgs, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
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
	if stdin != nil {
		go sendStdin(cc.Channel, stdin)
	}
	status, rerr := readOutput(cc.Channel, stdout, stderr)
	var lw *localWriteError
	if errors.As(rerr, &lw) {
		cancel() // nobody reads the output any more: stop the command
	}
	var res ExecStreamResult
	werr := cc.Wait(&res)
	switch {
	case werr != nil:
		return 0, werr
	case rerr != nil:
		return 0, fmt.Errorf("arbor: exec on node %d (%s): %w", rm.ID(), rm.Name(), rerr)
	}
	return status, nil
}

func sendStdin(ch *router.Channel, stdin io.Reader) {
	out := &recordConn{w: bufio.NewWriterSize(ch, execChunk+5)}
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
			return 0, fmt.Errorf("output cut short: %w", err)
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
			var msg string
			_ = wire.Unmarshal(body, &msg)
			return 0, errors.New(msg)
		default:
			return 0, fmt.Errorf("unexpected record %q", typ)
		}
	}
}

type localWriteError struct{ err error }

func (e *localWriteError) Error() string { return "writing output: " + e.err.Error() }
func (e *localWriteError) Unwrap() error { return e.err }
