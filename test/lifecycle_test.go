package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// agentTree finds the processes below the arbor CLI process pid: exactly
// a chain of hops agents, each the parent of the next, plus extra
// processes (commands) below the last agent. It returns all of them.
func agentTree(t *testing.T, pid, hops, extra int) []proc {
	t.Helper()
	all := descendants(pid)
	parent := pid
	byPPID := map[int][]proc{}
	for _, p := range all {
		byPPID[p.PPID] = append(byPPID[p.PPID], p)
	}
	for i := 0; i < hops; i++ {
		kids := byPPID[parent]
		if len(kids) != 1 {
			t.Fatalf("hop %d: %d processes under %d, want one agent; tree: %v", i+1, len(kids), parent, all)
		}
		if a := argv(kids[0].PID); len(a) != 2 || a[0] != arborBin || a[1] != "__agent" {
			t.Fatalf("hop %d: process %d runs %q, want the arbor agent", i+1, kids[0].PID, a)
		}
		parent = kids[0].PID
	}
	if len(all) != hops+extra {
		t.Fatalf("%d processes under arbor, want %d agents and %d more: %v", len(all), hops, extra, all)
	}
	return all
}

// fifoCommand makes a FIFO and a shell command that blocks in a child
// process (head) reading one line from it, then prints it and "done": three
// processes below the agent that runs it, with the command's guard
// (execExtra).
func fifoCommand(t *testing.T) (fifo string, argv []string) {
	t.Helper()
	fifo = filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	return fifo, []string{"sh", "-c", `head -n 1 "$0"; echo done`, fifo}
}

// execExtra is the number of processes below the agent that runs the
// command of fifoCommand: the guard (builtin.GuardArg), sh and head.
const execExtra = 3

// openFIFO opens fifo for writing, which blocks until the remote command
// has opened it for reading: the event that says the command is running.
func openFIFO(t *testing.T, r *running, fifo string) *os.File {
	t.Helper()
	ch := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			f = nil
		}
		ch <- f
	}()
	fail := func(why string) {
		// Unblock the open with a reader of our own.
		if rd, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			if f := <-ch; f != nil {
				f.Close()
			}
			rd.Close()
		}
		t.Fatalf("%s; stderr:\n%s", why, r.stderr)
	}
	select {
	case f := <-ch:
		if f == nil {
			t.Fatal("opening the FIFO failed")
		}
		return f
	case <-r.exited:
		fail("arbor exited before the remote command started")
	case <-time.After(patience):
		fail(fmt.Sprintf("the remote command did not open the FIFO within %s", patience))
	}
	return nil
}

// TestRootExitTakesTreeDown checks that every process below the arbor CLI
// is gone once it exits: normally, on SIGTERM, and when it is killed with
// SIGKILL, with a function or a command running three hops down.
func TestRootExitTakesTreeDown(t *testing.T) {
	t.Run("normal exit", func(t *testing.T) {
		fifo, cmd := fifoCommand(t)
		r := startArbor(t, append([]string{"exec", "--to", "local/local/local", "--"}, cmd...)...)
		w := openFIFO(t, r, fifo)
		tree := agentTree(t, r.cmd.Process.Pid, 3, execExtra)
		if _, err := w.WriteString("hello\n"); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if code := r.wait(t, patience); code != 0 {
			t.Fatalf("exit status %d; stderr:\n%s", code, r.stderr)
		}
		if got := r.stdout.String(); got != "hello\ndone\n" {
			t.Fatalf("stdout %q", got)
		}
		requireExited(t, "tree after arbor exited", tree, patience)
	})

	t.Run("SIGTERM", func(t *testing.T) {
		fifo, cmd := fifoCommand(t)
		r := startArbor(t, append([]string{"exec", "--to", "local/local/local", "--"}, cmd...)...)
		w := openFIFO(t, r, fifo)
		defer w.Close() // the command never gets its line
		tree := agentTree(t, r.cmd.Process.Pid, 3, execExtra)
		if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := r.wait(t, patience); code != 255 {
			t.Fatalf("exit status %d, want 255; stderr:\n%s", code, r.stderr)
		}
		if !regexp.MustCompile(`(?m)^arbor: .*context canceled$`).MatchString(r.stderr.String()) {
			t.Fatalf("stderr does not say the call was cancelled:\n%s", r.stderr)
		}
		requireExited(t, "tree after arbor exited on SIGTERM", tree, patience)
	})

	t.Run("SIGKILL during agent.sleep", func(t *testing.T) {
		r := startArbor(t, "--log-level", "info", "call", "--to", "local/local/local", "agent.sleep", `{"seconds":60}`)
		// The third node's record says the call is running there, and
		// shows the root prints it with the node's name.
		r.stderr.waitLine(t, regexp.MustCompile(`\[INFO\]  arbor: agent\.sleep started: node=local\.\d+/local\.\d+/local\.\d+ node_id=\d+ seconds=60$`), patience)
		tree := agentTree(t, r.cmd.Process.Pid, 3, 0)
		if err := r.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		r.wait(t, patience)
		requireExited(t, "tree after arbor was killed", tree, patience)
	})

	t.Run("SIGKILL during exec", func(t *testing.T) {
		fifo, cmd := fifoCommand(t)
		r := startArbor(t, append([]string{"exec", "--to", "local/local/local", "--"}, cmd...)...)
		w := openFIFO(t, r, fifo)
		defer w.Close()
		tree := agentTree(t, r.cmd.Process.Pid, 3, execExtra)
		if err := r.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		r.wait(t, patience)
		requireExited(t, "tree after arbor was killed", tree, patience)
	})
}
