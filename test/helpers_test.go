package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// cliTimeout bounds every arbor command a test runs.
const cliTimeout = patience

// result is what one arbor command did.
type result struct {
	stdout, stderr []byte
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %.500q\nstderr: %.2000q", r.code, r.stdout, r.stderr)
}

// runArbor runs the built binary with args to completion (bounded by
// cliTimeout) and returns its output and exit status.
func runArbor(t *testing.T, args ...string) result {
	t.Helper()
	return runArborStdin(t, nil, args...)
}

// runArborStdin is runArbor with stdin fed from a pipe (nil: /dev/null).
func runArborStdin(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	return runBinary(t, arborBin, stdin, args...)
}

// runBinary is runArborStdin with another arbor binary.
func runBinary(t *testing.T, bin string, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("arbor %q: no exit within %s (stderr: %q)", args, cliTimeout, stderr.String())
	}
	res := result{stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		res.code = ee.ExitCode()
	default:
		t.Fatalf("arbor %q: %v (stderr: %q)", args, err, stderr.String())
	}
	return res
}

// running is an arbor command started with startArbor.
type running struct {
	cmd    *exec.Cmd
	stdout *bytes.Buffer // read only after exited is closed
	stderr *logBuffer
	exited chan struct{} // closed when the process has exited and its output is in
	err    error         // cmd.Wait's, once exited is closed
}

// startArbor starts the built binary with args and returns at once. The
// process is killed (and waited for) at the end of the test if it is still
// running.
func startArbor(t *testing.T, args ...string) *running {
	t.Helper()
	return startBinary(t, arborBin, args...)
}

// startBinary is startArbor for a command that runs arbor under another
// (ip netns exec NS arbor ...), or another build of it.
func startBinary(t *testing.T, bin string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(bin, args...), stdout: new(bytes.Buffer), stderr: newLogBuffer(), exited: make(chan struct{})}
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting arbor %q: %v", args, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		select {
		case <-r.exited:
		case <-time.After(patience):
			t.Errorf("arbor %q did not exit after SIGKILL", args)
		}
	})
	return r
}

// wait waits up to timeout for the process to exit and returns its exit
// status (-1 when killed by a signal).
func (r *running) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(timeout):
		t.Fatalf("arbor did not exit within %s; stderr:\n%s", timeout, r.stderr)
	}
	var ee *exec.ExitError
	switch {
	case r.err == nil:
		return 0
	case errors.As(r.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("arbor: %v", r.err)
	return 0
}

// logBuffer is a thread-safe buffer whose readers can wait for what they
// expect to be written.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed (and replaced) on every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLine blocks until a line matching re has been written, up to
// timeout, and returns the line's submatches.
func (b *logBuffer) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		text, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		for _, line := range strings.Split(text, "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no line matching %q within %s; output so far:\n%s", re, timeout, text)
		}
	}
}

// newRoot starts a root node in the test process whose local children run
// the built binary and whose log output (its own and every forwarded
// record) goes to the returned buffer at level. The root is closed at the
// end of the test.
func newRoot(t *testing.T, o agent.Options, level string) (*agent.Node, *logBuffer) {
	t.Helper()
	logs := newLogBuffer()
	o.Logger = hclog.New(&hclog.LoggerOptions{Name: "root", Level: hclog.LevelFromString(level), Output: logs})
	o.LogLevel = level
	if o.Exe == "" {
		o.Exe = arborBin
	}
	n, err := agent.NewRoot(o)
	if err != nil {
		t.Fatalf("NewRoot: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n, logs
}

// localHops is a path of n local hops.
func localHops(n int) []spawn.Hop {
	hops := make([]spawn.Hop, n)
	for i := range hops {
		hops[i] = spawn.Hop{Method: "local"}
	}
	return hops
}

// localPath is "local/local/..." with n hops.
func localPath(n int) string {
	return strings.TrimSuffix(strings.Repeat("local/", n), "/")
}

// spawnChain builds a chain of n local hops under root and returns each
// node's handle and agent.info, first hop first.
func spawnChain(t *testing.T, root *agent.Node, n int) ([]*arborctx.Remote, []builtin.Info) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	chain, err := root.SpawnPath(ctx, localHops(n))
	if err != nil {
		t.Fatalf("SpawnPath(%d hops): %v", n, err)
	}
	infos := make([]builtin.Info, n)
	for i, rm := range chain {
		if err := rm.Call(ctx, "agent.info", nil, &infos[i]); err != nil {
			t.Fatalf("agent.info on hop %d: %v", i+1, err)
		}
	}
	return chain, infos
}

// proc is one process as /proc/PID/stat describes it.
type proc struct {
	PID, PPID int
	State     byte
	Start     uint64 // start time in clock ticks since boot: tells a reused PID apart
}

func (p proc) String() string {
	return fmt.Sprintf("pid %d (ppid %d, state %c)", p.PID, p.PPID, p.State)
}

// readProc reads /proc/PID/stat; ok is false when there is no such process.
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may contain spaces and parens
	if i < 0 || i+2 > len(s) {
		return proc{}, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 20 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return proc{PID: pid, PPID: ppid, State: f[0][0], Start: start}, true
}

// procOf reads a process that the test knows is running now.
func procOf(t *testing.T, pid int) proc {
	t.Helper()
	p, ok := readProc(pid)
	if !ok || !p.running() {
		t.Fatalf("process %d is not running", pid)
	}
	return p
}

// running reports whether p is still the same live (not zombie) process.
func (p proc) running() bool {
	now, ok := readProc(p.PID)
	return ok && now.Start == p.Start && now.State != 'Z' && now.State != 'X'
}

// allProcs lists every process on the machine.
func allProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// descendants lists the live processes below pid (children, their
// children, and so on).
func descendants(pid int) []proc {
	kids := map[int][]proc{}
	for _, p := range allProcs() {
		kids[p.PPID] = append(kids[p.PPID], p)
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, c := range kids[next] {
			if c.State == 'Z' || c.State == 'X' {
				continue
			}
			out = append(out, c)
			queue = append(queue, c.PID)
		}
	}
	return out
}

// argv is a process's command line, nil when it is gone.
func argv(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// waitExited waits, up to timeout in all, until every process in procs
// has exited (a zombie counts as exited: it runs nothing). It watches each
// through a pidfd, which becomes readable when the process exits, and
// returns the processes still running at the deadline.
func waitExited(procs []proc, timeout time.Duration) []proc {
	deadline := time.Now().Add(timeout)
	var alive []proc
	for _, p := range procs {
		fd, err := unix.PidfdOpen(p.PID, 0)
		if err != nil {
			continue // ESRCH: gone already
		}
		// The pidfd pins whatever holds the PID now; make sure it is p.
		if !p.running() {
			unix.Close(fd)
			continue
		}
		for {
			ms := int(time.Until(deadline).Milliseconds())
			if ms < 0 {
				ms = 0
			}
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err == nil && n == 0 {
				alive = append(alive, p)
			}
			break
		}
		unix.Close(fd)
	}
	return alive
}

// requireExited fails the test unless every process in procs exits
// within timeout.
func requireExited(t *testing.T, what string, procs []proc, timeout time.Duration) {
	t.Helper()
	if alive := waitExited(procs, timeout); len(alive) > 0 {
		t.Fatalf("%s: still running %s later: %v", what, timeout, alive)
	}
}

// leftoverAgents lists processes running bin, waiting up to timeout for
// them to go first.
func leftoverAgents(bin string, timeout time.Duration) []proc {
	var found []proc
	for _, p := range allProcs() {
		if a := argv(p.PID); len(a) > 0 && filepath.Clean(a[0]) == bin && p.State != 'Z' {
			found = append(found, p)
		}
	}
	return waitExited(found, timeout)
}

// pidsFromName reads the PIDs out of a node name such as
// "local.4711/local.4712".
func pidsFromName(t *testing.T, name string) []int {
	t.Helper()
	var pids []int
	for _, hop := range strings.Split(name, "/") {
		s, ok := strings.CutPrefix(hop, "local.")
		pid, err := strconv.Atoi(s)
		if !ok || err != nil {
			t.Fatalf("node name %q: hop %q is not local.PID", name, hop)
		}
		pids = append(pids, pid)
	}
	return pids
}

// writeScript writes an executable shell script into a temp dir.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
