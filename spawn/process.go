package spawn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Process is a started child: the agent itself (local), or the ssh or sudo
// process that carries the link to it.
type Process struct {
	cmd    *exec.Cmd
	pgid   int
	stderr *tail
	waited chan struct{}
	state  *os.ProcessState
	werr   error
	// up is set once the link is up: stderr lines before that are part
	// of the spawn error (logged at debug), lines after it are warnings.
	up atomic.Bool
	// prompted is set when the child prompted for a password before the
	// link came up (and was killed for it; see prompt.go).
	prompted atomic.Bool

	// Bootstrap says how a remote agent was started: "hit" (found in the
	// remote cache), "upload" (sent over the link first) or "" (local).
	Bootstrap string
}

// PID is the child's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Kill kills the child's whole process group.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
}

// Exited is closed when the child has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.waited }

// Wait waits for the child to exit, up to d, killing its group after that.
func (p *Process) Wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.waited:
	case <-t.C:
		p.Kill()
		<-p.waited
	}
}

// StderrTail is the last lines the child wrote to stderr.
func (p *Process) StderrTail() string { return p.stderr.String() }

// exitStatus describes how the child ended; call it once Exited is closed.
func (p *Process) exitStatus() (string, int) {
	if p.state == nil {
		return "unknown status", -1
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String(), -1
	}
	return fmt.Sprintf("exit status %d", p.state.ExitCode()), p.state.ExitCode()
}

// startProcess starts argv in its own process group with pipes on stdin
// and stdout; stderr lines are kept in a tail and logged under name.
//
// The child gets SIGTERM, not SIGKILL, when the parent dies: an agent
// handles it like the loss of its parent link and shuts down, killing the
// process groups of the commands it runs (a SIGKILL cascade would leave
// those behind); ssh exits on it, which ends the remote agent's link.
//
// With a prompt pattern, the child is killed as soon as its stderr shows
// a matching prompt before the link is up (prompt.go): a tool asking for
// a password would otherwise wait on stdin until the connect timeout.
func startProcess(argv, env []string, log hclog.Logger, name string, prompt ...*regexp.Regexp) (*Process, *pipeConn, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	stderrR, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("arbor: starting %s for %s: %w", argv[0], name, err)
	}
	p := &Process{cmd: cmd, pgid: cmd.Process.Pid, stderr: newTail(20), waited: make(chan struct{})}
	name = strings.ReplaceAll(name, "%d", fmt.Sprint(p.PID()))
	stderrDone := make(chan struct{})
	var stderr io.Reader = stderrR
	if len(prompt) > 0 && prompt[0] != nil {
		stderr = io.TeeReader(stderrR, &promptWatch{re: prompt[0], up: &p.up, onPrompt: func() {
			p.prompted.Store(true)
			p.Kill()
		}})
	}
	go func() {
		defer close(stderrDone)
		p.stderr.pump(stderr, log.With("child", name), &p.up)
	}()
	go func() {
		<-stderrDone // all of stderr read before Wait closes the pipe
		err := cmd.Wait()
		p.state, p.werr = cmd.ProcessState, err
		close(p.waited)
	}()
	return p, &pipeConn{r: stdout, w: stdin, pipes: pipeFiles(stdout, stdin)}, nil
}

// openLink sends the hello over conn and waits for the acknowledgement
// (bounded by cfg.HelloTimeout and ctx). When ctx ends first the child's
// group is killed and reaped; on another failure explain must reap it
// (see settle) and turn the failure into the error to return.
func openLink(ctx context.Context, p *Process, conn io.ReadWriteCloser, hello wire.Hello, cfg *stream.Config,
	explain func(err error) error) (*stream.Link, wire.HelloAck, error) {
	type opened struct {
		l   *stream.Link
		ack wire.HelloAck
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		l, ack, err := stream.Open(conn, hello, cfg)
		ch <- opened{l, ack, err}
	}()
	var res opened
	var cancelled error
	select {
	case res = <-ch:
	case <-ctx.Done():
		conn.Close()
		res = <-ch
		if res.err == nil {
			res.l.Close()
		}
		// Closing the pipes fails the hello with whatever error; the
		// reason is the caller's context, not the child.
		cancelled = ctx.Err()
	}
	if res.err == nil && cancelled == nil {
		p.up.Store(true)
		return res.l, res.ack, nil
	}
	if cancelled != nil {
		p.Kill()
		p.Wait(5 * time.Second)
		return nil, wire.HelloAck{}, fmt.Errorf("arbor: spawning %s: %w", hello.Name, cancelled)
	}
	return nil, wire.HelloAck{}, explain(res.err)
}

// settle lets a child that failed its start exit on its own (its exit
// status tells why), killing its group at once after a timeout or after a
// grace period otherwise, and reaps it.
func (p *Process) settle(timedOut bool) {
	if timedOut {
		p.Kill()
	}
	p.Wait(2 * time.Second)
	p.Kill() // anything left in its group
}

// startError explains why a local child did not come up, once it is
// reaped: a *HopError, like a remote hop's, that names the node and the
// hop, says "connection timed out" (ErrConnectTimeout) or how the child
// ended (ErrBootstrap), and unwraps to the link's error too.
func (p *Process) startError(name string, timeout time.Duration, err error) error {
	p.settle(isTimeout(err))
	he := &HopError{Node: name, Hop: "local", Stderr: p.StderrTail(), Err: err}
	if isTimeout(err) {
		he.Kind, he.Detail = ErrConnectTimeout, fmt.Sprintf("connection timed out after %s", timeout.Round(time.Millisecond))
		return he
	}
	he.Kind, he.Detail = ErrBootstrap, "child exited before the link came up"
	he.Status, _ = p.exitStatus()
	return he
}

// isTimeout reports whether the hello exchange with a child timed out.
func isTimeout(err error) bool {
	return errors.Is(err, stream.ErrConnectTimeout)
}

// pipeConn joins the child's stdout (read) and stdin (write). r may be
// replaced by a buffered reader that already holds bytes read from the
// child (the bootstrap's status lines).
type pipeConn struct {
	r     io.Reader
	rc    io.Closer
	w     io.WriteCloser
	pipes []syscall.Conn // the two pipes, for SetPipeSize
	once  sync.Once
}

// pipeFiles are the pipes among rw that can be reached as files (exec's
// pipes are *os.File, or wrap one).
func pipeFiles(rw ...any) []syscall.Conn {
	var fs []syscall.Conn
	for _, f := range rw {
		if sc, ok := f.(syscall.Conn); ok {
			fs = append(fs, sc)
		}
	}
	return fs
}

// SetPipeSize sets the capacity of the child's stdin and stdout pipes
// (stream.PipeSizer): the link grows them while it carries bulk data.
func (c *pipeConn) SetPipeSize(n int) error {
	if len(c.pipes) == 0 {
		return errors.ErrUnsupported
	}
	for _, p := range c.pipes {
		rc, err := p.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			_, serr = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, n)
		}); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
	}
	return nil
}

var (
	_ stream.PipeSizer  = (*pipeConn)(nil)
	_ stream.PipeWriter = (*pipeConn)(nil)
)

// PipeWriteConn is the child's stdin, the pipe Write writes to: the link
// writes small frames to it itself when nothing else is being written
// (stream.PipeWriter).
func (c *pipeConn) PipeWriteConn() (syscall.RawConn, error) {
	if sc, ok := c.w.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *pipeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *pipeConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		if c.rc != nil {
			c.rc.Close()
		} else if rc, ok := c.r.(io.Closer); ok {
			rc.Close()
		}
	})
	return nil
}

// tail keeps the last n lines written to it.
type tail struct {
	mu    sync.Mutex
	n     int
	lines []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// What a child's stderr may put in the log. The child is ssh or sudo
// carrying text from another host, or an agent that may be compromised,
// so every line is escaped (logsafe: control characters, ESC and invalid
// UTF-8 become visible escapes) and clipped at stderrLineMax bytes, and
// the lines logged are held to the budget of forwarded log records
// (agent/logs.go): stderrRate a second, stderrBurst at once. Lines over
// it are still kept in the tail but not logged; a summary counts them at
// most once every stderrDropEvery.
const (
	stderrLineMax   = 4 << 10
	stderrRate      = 200
	stderrBurst     = 1000
	stderrDropEvery = time.Second
)

// pump reads the child's stderr line by line, keeping the tail and logging
// each line (a warning once up is set), until EOF.
func (t *tail) pump(r io.Reader, log hclog.Logger, up *atomic.Bool) {
	limit := logsafe.NewLimiter(stderrRate, stderrBurst, stderrDropEvery, func(n uint64) {
		log.Warn(fmt.Sprintf("dropped %d lines of child stderr (rate limit)", n))
	})
	defer limit.Close()
	br := bufio.NewReaderSize(r, stderrLineMax)
	for {
		part, err := br.ReadSlice('\n')
		total := len(part)
		if err == bufio.ErrBufferFull {
			// A line longer than the limit: keep its start, skip the rest
			// (the newline too).
			part = bytes.Clone(part)
			var n int
			n, err = skipLine(br)
			total += n
		}
		if total == 0 {
			if err != nil {
				return
			}
			continue
		}
		if bytes.HasSuffix(part, []byte("\n")) {
			part, total = part[:len(part)-1], total-1
			if bytes.HasSuffix(part, []byte("\r")) { // CRLF endings, not an overwrite
				part, total = part[:len(part)-1], total-1
			}
		}
		line := logsafe.ClipPart(part, total, stderrLineMax)
		t.add(line)
		if limit.Allow() {
			if up.Load() {
				log.Warn("child stderr: " + line)
			} else {
				log.Debug("child stderr: " + line)
			}
		}
		if err != nil {
			return
		}
	}
}

// skipLine reads up to and including the next newline, or to the end of
// r, and reports how many bytes of the line it skipped (the newline not
// counted).
func skipLine(br *bufio.Reader) (int, error) {
	n := 0
	for {
		b, err := br.ReadSlice('\n')
		n += len(b)
		switch {
		case err == nil:
			return n - 1, nil
		case err != bufio.ErrBufferFull:
			return n, err
		}
	}
}
