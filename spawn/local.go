package spawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// AgentArg is the hidden subcommand that runs a binary as a child agent.
const AgentArg = "__agent"

// ErrConnectTimeout matches a child that did not complete the hello in time.
var ErrConnectTimeout = errors.New("arbor: connection timed out")

// Process is a started child agent.
type Process struct {
	cmd    *exec.Cmd
	pgid   int
	stderr *tail
	waited chan struct{}
	state  *os.ProcessState
	werr   error
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

// LocalOptions says how to start a local child.
type LocalOptions struct {
	// Exe is the binary to run (default: this executable).
	Exe string
	// Env is added to the parent's environment.
	Env []string
	// Hello is the hello to send; Name and ID are filled by the caller,
	// and Name may contain "%d", replaced by the child's PID.
	Hello wire.Hello
	// Link configures the link; HelloTimeout is the connect deadline.
	Link *stream.Config
	// Logger receives the child's stderr lines.
	Logger hclog.Logger
}

// Local starts this binary as a child agent over stdio pipes and opens the
// link to it. The child runs in its own process group; if the hello does
// not complete, the child is killed and the error carries its exit status
// and the tail of its stderr, or says the connection timed out.
func Local(ctx context.Context, o LocalOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	exe := o.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, nil, wire.HelloAck{}, fmt.Errorf("arbor: finding this executable: %w", err)
		}
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	cmd := exec.Command(exe, AgentArg)
	cmd.Env = append(os.Environ(), o.Env...)
	// SIGTERM, not SIGKILL, when the parent dies: the agent handles it like
	// the loss of its parent link and shuts down, killing the process groups
	// of the commands it runs. A SIGKILL cascade would leave those behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	stderrR, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, wire.HelloAck{}, fmt.Errorf("arbor: starting %s: %w", exe, err)
	}
	p := &Process{cmd: cmd, pgid: cmd.Process.Pid, stderr: newTail(20), waited: make(chan struct{})}
	hello := o.Hello
	hello.Name = strings.ReplaceAll(hello.Name, "%d", fmt.Sprint(p.PID()))
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		p.stderr.pump(stderrR, log.With("child", hello.Name))
	}()
	go func() {
		<-stderrDone // all of stderr read before Wait closes the pipe
		p.state, p.werr = p.state0(cmd.Wait())
		close(p.waited)
	}()

	type opened struct {
		l   *stream.Link
		ack wire.HelloAck
		err error
	}
	ch := make(chan opened, 1)
	conn := &pipeConn{r: stdout, w: stdin}
	go func() {
		l, ack, err := stream.Open(conn, hello, o.Link)
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
		return res.l, p, res.ack, nil
	}
	p.Kill()
	p.Wait(5 * time.Second)
	if cancelled != nil {
		return nil, nil, wire.HelloAck{}, fmt.Errorf("arbor: spawning %s: %w", hello.Name, cancelled)
	}
	return nil, nil, wire.HelloAck{}, p.startError(hello.Name, res.err)
}

func (p *Process) state0(err error) (*os.ProcessState, error) { return p.cmd.ProcessState, err }

// startError explains why a child did not come up.
func (p *Process) startError(name string, err error) error {
	tailText := strings.TrimSpace(p.StderrTail())
	if strings.Contains(err.Error(), "connection timed out") {
		msg := fmt.Sprintf("arbor: spawning %s: connection timed out", name)
		if tailText != "" {
			msg += "; child stderr:\n" + tailText
		}
		return fmt.Errorf("%s: %w", msg, ErrConnectTimeout)
	}
	status := "unknown status"
	if p.state != nil {
		if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			status = "killed by signal " + ws.Signal().String()
		} else {
			status = fmt.Sprintf("exit status %d", p.state.ExitCode())
		}
	}
	msg := fmt.Sprintf("arbor: spawning %s: child exited before the link came up (%s)", name, status)
	if tailText != "" {
		msg += "; child stderr:\n" + tailText
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// pipeConn joins the child's stdout (read) and stdin (write).
type pipeConn struct {
	r    io.ReadCloser
	w    io.WriteCloser
	once sync.Once
}

func (c *pipeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *pipeConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		c.r.Close()
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

// pump reads the child's stderr line by line, keeping the tail and logging
// each line, until EOF.
func (t *tail) pump(r io.Reader, log hclog.Logger) {
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			line := string(buf[:i])
			buf = buf[i+1:]
			t.add(line)
			log.Warn("child stderr: " + line)
		}
		if len(buf) > 4096 { // a very long line: keep what we have
			t.add(string(buf))
			buf = buf[:0]
		}
		if err != nil {
			if len(buf) > 0 {
				t.add(string(buf))
				log.Warn("child stderr: " + string(buf))
			}
			return
		}
	}
}
