package builtin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Exit statuses of a command that could not run, as sh and ssh report them.
const (
	// StatusNotFound: no such command.
	StatusNotFound = 127
	// StatusCannotRun: the command exists but could not be run (not
	// executable, a directory, not a format the kernel runs).
	StatusCannotRun = 126
)

// notRunnable is a command that could not run; status is what sh would
// exit with.
type notRunnable struct {
	status int
	msg    string
}

func (e *notRunnable) Error() string { return e.msg }

// lookCommand finds the program for argv[0] as sh does: a name without a
// slash is searched in PATH, a name with one is taken as it is (relative
// to dir, where the command runs). A missing command is StatusNotFound; a
// file that exists but cannot be run is StatusCannotRun.
func lookCommand(name, dir string) (string, error) {
	if !strings.Contains(name, "/") {
		path, err := exec.LookPath(name)
		if err != nil {
			return "", &notRunnable{StatusNotFound, "command not found: " + name}
		}
		return path, nil
	}
	check := name
	if dir != "" && !filepath.IsAbs(name) {
		check = filepath.Join(dir, name)
	}
	_, err := exec.LookPath(check)
	switch {
	case err == nil:
		return name, nil
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return "", &notRunnable{StatusNotFound, "command not found: " + name}
	case errors.Is(err, syscall.EISDIR):
		return "", &notRunnable{StatusCannotRun, "is a directory: " + name}
	case errors.Is(err, fs.ErrPermission):
		return "", &notRunnable{StatusCannotRun, "permission denied: " + name}
	}
	return "", &notRunnable{StatusCannotRun, fmt.Sprintf("cannot run %s: %v", name, errors.Unwrap(err))}
}

// guarded is a command started under a guard (see runGuard): the guard
// leads a process group of its own that holds the command and whatever it
// forks, and kills that group when the lifeline closes, so nothing the
// command started outlives this node, however the node dies.
type guarded struct {
	cmd      *exec.Cmd // the guard
	lifeline *os.File  // write end; this process's death closes it too
	status   *os.File  // read end of the guard's report
	reaped   chan struct{}
	state    *os.ProcessState

	mu       sync.Mutex
	released bool
	cut      sync.Once
}

// guardExe is the binary to run as the guard: this one, through /proc
// (which runs it even if the file was replaced), else by the absolute path
// it was started with (a host or chroot without /proc).
func guardExe() (string, error) {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err == nil {
		return self, nil
	}
	if p := os.Args[0]; filepath.IsAbs(p) {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return os.Executable()
}

// startGuarded starts argv (program path) under a guard, in dir with env,
// its standard streams connected to stdin (nil: /dev/null), stdout and
// stderr. Unless release is called first, kill takes the whole group down.
// With tty, stdin is a terminal that becomes the controlling terminal of
// a new session led by the guard (its group is the session's).
func startGuarded(path string, argv, env []string, dir string, stdin io.Reader, stdout, stderr *os.File, tty bool) (*guarded, error) {
	exe, err := guardExe()
	if err != nil {
		return nil, fmt.Errorf("finding this executable to guard %s: %w", argv[0], err)
	}
	lr, lw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	sr, sw, err := os.Pipe()
	if err != nil {
		lr.Close()
		lw.Close()
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{GuardArg, path}, argv...)...)
	if self, err := os.Executable(); err == nil {
		cmd.Args[0] = self // ps shows the binary, not /proc/self/exe
	}
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{lr, sw} // guardLifelineFD, guardStatusFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if tty {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
	err = cmd.Start()
	lr.Close()
	sw.Close()
	if err != nil {
		lw.Close()
		sr.Close()
		return nil, err
	}
	g := &guarded{cmd: cmd, lifeline: lw, status: sr, reaped: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		g.state = cmd.ProcessState
		close(g.reaped)
		g.cut.Do(func() { g.lifeline.Close() })
	}()
	return g, nil
}

// kill kills the command's whole group (the command, what it forked, the
// guard), unless release was called.
func (g *guarded) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.released {
		g.cut.Do(func() { g.lifeline.Close() })
	}
}

// release ends kill's effect: what the command left running (a daemon it
// started) lives on, until it exits or this node dies.
func (g *guarded) release() {
	g.mu.Lock()
	g.released = true
	g.mu.Unlock()
}

// wait blocks until the command has exited and returns its exit status
// as a shell reports it (128+N for signal N). A command that could not
// start is a *notRunnable.
func (g *guarded) wait(name string) (int, error) {
	rec, err := io.ReadAll(g.status)
	g.status.Close()
	if err != nil {
		return 0, err
	}
	switch {
	case len(rec) == 5 && rec[0] == guardWaitStatus:
		ws := syscall.WaitStatus(binary.BigEndian.Uint32(rec[1:]))
		if ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ws.ExitStatus(), nil
	case len(rec) > 1 && rec[0] == guardStartError:
		return 0, &notRunnable{StatusCannotRun, fmt.Sprintf("cannot run %s: %s", name, rec[1:])}
	}
	// No report: the guard died with its group (killed on cancel, or by
	// someone else). Its own status says how.
	<-g.reaped
	return exitStatus(&exec.ExitError{ProcessState: g.state})
}
