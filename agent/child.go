package agent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/hashicorp/go-hclog"
)

// RunChild is the main of a child agent. Before anything else it moves the
// link off fds 0 and 1: the parent's pipes are duplicated to private
// descriptors, fd 0 becomes /dev/null and fd 1 a pipe whose lines are
// logged, so a stray write to stdout can never corrupt the link. It then
// accepts the parent's hello, serves until the parent link closes or a
// SHUTDOWN arrives, takes its children down, and returns.
func RunChild() error { return RunChildWith(nil) }

// RunChildWith is RunChild serving the functions in reg (nil: the
// built-ins). A program that registers its own functions calls it when
// started with spawn.AgentArg.
func RunChildWith(reg *funcs.Registry) error {
	linkR, linkW, err := takeStdio()
	if err != nil {
		return err
	}
	stderr := os.Stderr
	fwd := newLogForwarder(func(p []byte) { stderr.Write(p) })
	level := hclog.LevelFromString(LevelFromEnv("info"))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	log := hclog.New(&hclog.LoggerOptions{Level: level, Output: fwd, JSONFormat: true})

	conn := &fdConn{r: linkR, w: linkW}
	lcfg := stream.DefaultConfig()
	lcfg.Logger = log
	l, hello, err := stream.Accept(conn, lcfg, os.Getpid())
	if err != nil {
		return fmt.Errorf("%w (agent pid %d)", err, os.Getpid())
	}
	log = log.Named(hello.Name)
	cfg := router.FromHello(hello)
	cfg.Logger = log
	r, err := router.New(cfg)
	if err != nil {
		l.Close()
		return err
	}
	n := newNode(r, Options{Logger: log, LogLevel: level.String(), Registry: reg, Heartbeat: HeartbeatFromHello(hello)})
	fwd.start(r)
	n.beforeClose = func() {
		fwd.close()
		if p := r.Parent(); p != nil {
			p.Link.Flush(time.Second)
		}
	}
	go logStdout(log)
	// SIGTERM (also sent when the parent process dies: see spawn.Local)
	// shuts the node down like the loss of its parent link.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)
	if _, err := r.AttachParent(l); err != nil {
		n.Close()
		return err
	}
	log.Debug("agent up", "id", hello.ID, "parent", hello.ParentID)
	select {
	case <-l.Done():
	case <-n.Done():
	case <-term:
		log.Debug("shutting down on SIGTERM")
	}
	closed := make(chan struct{})
	go func() {
		fwd.close()
		n.Close()
		close(closed)
	}()
	// A function that ignores cancellation must not keep this process
	// alive once its tree is gone.
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
		fmt.Fprintf(stderr, "arbor agent %d: shutdown took longer than %s; exiting\n", os.Getpid(), shutdownGrace)
	}
	return nil
}

// shutdownGrace bounds a child's shutdown after its parent is gone.
const shutdownGrace = 10 * time.Second

var stdoutPipe *os.File

// takeStdio moves the link off fds 0 and 1 (see RunChild).
func takeStdio() (*os.File, *os.File, error) {
	in, err := syscall.Dup(0)
	if err != nil {
		return nil, nil, fmt.Errorf("arbor agent: dup stdin: %w", err)
	}
	out, err := syscall.Dup(1)
	if err != nil {
		return nil, nil, fmt.Errorf("arbor agent: dup stdout: %w", err)
	}
	syscall.CloseOnExec(in)
	syscall.CloseOnExec(out)
	// Non-blocking, so the runtime poller owns them and Close unblocks a
	// pending Read.
	_ = syscall.SetNonblock(in, true)
	_ = syscall.SetNonblock(out, true)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := syscall.Dup3(int(null.Fd()), 0, 0); err != nil {
		return nil, nil, fmt.Errorf("arbor agent: redirect stdin: %w", err)
	}
	null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	if err := syscall.Dup3(int(pw.Fd()), 1, 0); err != nil {
		return nil, nil, fmt.Errorf("arbor agent: redirect stdout: %w", err)
	}
	pw.Close()
	stdoutPipe = pr
	return os.NewFile(uintptr(in), "parent-in"), os.NewFile(uintptr(out), "parent-out"), nil
}

// logStdout logs every line written to this process's stdout.
func logStdout(log hclog.Logger) {
	if stdoutPipe == nil {
		return
	}
	sc := bufio.NewScanner(stdoutPipe)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		log.Info("stray stdout: " + sc.Text())
	}
}

// fdConn is the link's transport: the parent's pipes on private fds.
type fdConn struct {
	r, w *os.File
	once sync.Once
}

func (c *fdConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *fdConn) Write(b []byte) (int, error) { return c.w.Write(b) }

// PipeWriteConn is the descriptor Write writes to (non-blocking, see
// takeStdio): the link writes small frames to it itself when nothing else
// is being written, if it is a pipe (stream.PipeWriter).
func (c *fdConn) PipeWriteConn() (syscall.RawConn, error) { return c.w.SyscallConn() }
func (c *fdConn) Close() error {
	c.once.Do(func() {
		c.r.Close()
		c.w.Close()
	})
	return nil
}

var _ io.ReadWriteCloser = (*fdConn)(nil)
