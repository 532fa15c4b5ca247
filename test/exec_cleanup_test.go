package test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
)

// groupScript is a command that forks a grandchild and reports both PIDs,
// "SHELL SLEEP", on one line to where "$0" names (stdout: /dev/stdout),
// then waits for it: nothing ends on its own within a test.
const groupScript = `sleep 60 & echo "$$ $!" > "$0"; wait`

// parsePIDs reads the processes of a "PID PID ..." line, which must all be
// running.
func parsePIDs(t *testing.T, line string) []proc {
	t.Helper()
	var procs []proc
	for _, f := range strings.Fields(line) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid line %q: %v", line, err)
		}
		procs = append(procs, procOf(t, pid))
	}
	if len(procs) == 0 {
		t.Fatalf("pid line %q names no process", line)
	}
	return procs
}

// readFIFO reads what a command writes to the FIFO (it blocks until the
// command opens it, then until the command closes it), or fails the test
// after timeout.
func readFIFO(t *testing.T, fifo string, timeout time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		b, _ := os.ReadFile(fifo)
		got <- string(b)
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(timeout):
		// A writer of our own unblocks the reader.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		<-got
		t.Fatalf("nothing written to %s within %s", fifo, timeout)
	}
	return ""
}

// TestExecServeCancelKillsCommand: SIGINT or SIGTERM on `arbor exec NODE
// -- CMD` against arbor serve cancels CMD on the node: the command and the
// process it forked are gone, and the node stays up.
func TestExecServeCancelKillsCommand(t *testing.T) {
	s := startServe(t)
	id, _ := s.spawnID(t, "local")
	node := strconv.Itoa(int(id))
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			e := s.start(t, "exec", node, "--", "sh", "-c", groupScript, "/dev/stdout")
			line := e.stdout.waitLine(t, regexp.MustCompile(`^\d+ \d+$`), cliTimeout)
			procs := parsePIDs(t, line[0])
			if err := e.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := e.wait(t, cliTimeout); code != exitUnreachableCode {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitUnreachableCode, e.stderr)
			}
			if !regexp.MustCompile(`(?m)^arbor: .*context canceled$`).MatchString(e.stderr.String()) {
				t.Fatalf("stderr does not say the command was cancelled:\n%s", e.stderr)
			}
			requireExited(t, "command after arbor exec got "+sig.String(), procs, 20*time.Second)
			// The node is still there and runs the next command.
			if out := s.must(t, "exec", node, "--", "echo", "still up"); out != "still up\n" {
				t.Fatalf("next exec printed %q", out)
			}
		})
	}
}

// exitUnreachableCode is arbor's exit status when it did not get a result
// from the node (a cancel included).
const exitUnreachableCode = 255

// TestAgentKilledTakesCommandsDown: a SIGKILLed agent leaves nothing of
// the commands it ran behind: not the command, not what the command
// forked, whether it ran buffered (sys.exec) or streamed.
func TestAgentKilledTakesCommandsDown(t *testing.T) {
	run := func(t *testing.T, start func(ctx context.Context, t *testing.T, n *agent.Node) (agentPID int, procs []proc)) {
		root, _ := newRoot(t, agent.Options{}, "warn")
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		defer cancel()
		agentPID, procs := start(ctx, t, root)
		// Everything below the agent now: the command's guard and more.
		procs = append(procs, descendants(agentPID)...)
		if err := syscall.Kill(agentPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		requireExited(t, "command after its agent was killed", procs, 20*time.Second)
	}

	t.Run("sys.exec", func(t *testing.T) {
		run(t, func(ctx context.Context, t *testing.T, root *agent.Node) (int, []proc) {
			chain, infos := spawnChain(t, root, 1)
			fifo := filepath.Join(t.TempDir(), "pids")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				done <- chain[0].Call(ctx, "sys.exec", builtin.ExecArgs{Argv: []string{"sh", "-c", groupScript, fifo}}, nil)
			}()
			t.Cleanup(func() { <-done })
			return infos[0].PID, parsePIDs(t, readFIFO(t, fifo, 20*time.Second))
		})
	})

	t.Run("sys.exec.stream", func(t *testing.T) {
		run(t, func(ctx context.Context, t *testing.T, root *agent.Node) (int, []proc) {
			chain, infos := spawnChain(t, root, 2) // the command runs on the second node
			out := newLogBuffer()
			done := make(chan error, 1)
			go func() {
				_, err := builtin.ExecStream(ctx, chain[1], builtin.ExecStreamArgs{Argv: []string{"sh", "-c", groupScript, "/dev/stdout"}}, nil, out, io.Discard)
				done <- err
			}()
			t.Cleanup(func() { <-done })
			line := out.waitLine(t, regexp.MustCompile(`^\d+ \d+$`), 20*time.Second)
			return infos[1].PID, parsePIDs(t, line[0])
		})
	})
}

// TestCallServeCancelReachesNode: SIGINT on `arbor call NODE agent.sleep`
// against arbor serve cancels the function on the node: the cancel goes
// out before the client's link to the server closes.
func TestCallServeCancelReachesNode(t *testing.T) {
	s := startServe(t, "--log-level", "info")
	id, _ := s.spawnID(t, "local")
	c := s.start(t, "--log-level", "info", "call", strconv.Itoa(int(id)), "agent.sleep", `{"seconds":60}`)
	s.r.stderr.waitLine(t, regexp.MustCompile(`agent\.sleep started: .*node_id=`+strconv.Itoa(int(id))+` `), cliTimeout)
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, cliTimeout); code != exitUnreachableCode {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitUnreachableCode, c.stderr)
	}
	s.r.stderr.waitLine(t, regexp.MustCompile(`agent\.sleep cancelled: .*node_id=`+strconv.Itoa(int(id))+` `), 20*time.Second)
}
