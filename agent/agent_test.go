package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
)

// The test binary doubles as the agent: started with spawn.AgentArg it
// serves the built-ins plus a function that writes straight to fds 1 and 2.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spawn.AgentArg {
		reg := funcs.NewRegistry()
		builtin.Register(reg)
		funcs.Register(reg, "test.stray", func(ctx context.Context, c *funcs.Call, s string) (string, error) {
			fmt.Println(s)                  // fd 1: must not corrupt the link
			os.Stdout.WriteString("AR\x01") // bytes that look like a frame header
			fmt.Fprintln(os.Stderr, "stderr "+s)
			return "ok", nil
		})
		registerHostile(reg)
		registerHijack(reg)
		if err := agent.RunChildWith(reg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// patience only stops a hang: nothing a test does is bounded by it.
const patience = time.Minute

type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan struct{}
}

func newSyncBuf() *syncBuf { return &syncBuf{ch: make(chan struct{}, 1)} }

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.ch <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until every want string is in the buffer, woken by writes.
func (b *syncBuf) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.After(patience)
	for {
		s := b.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-b.ch:
		case <-deadline:
			t.Fatalf("log never showed %q; log:\n%s", missing, s)
		}
	}
}

func TestStrayOutputCannotCorruptLink(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := newSyncBuf()
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: log, LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	chain, err := root.SpawnPath(ctx, []spawn.Hop{{Method: "local"}, {Method: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	last := chain[1]
	var got string
	if err := last.Call(ctx, "test.stray", "hello from fd 1", &got); err != nil {
		t.Fatal(err)
	}
	if got != "ok" {
		t.Fatalf("result %q", got)
	}
	// The link still works after the stray writes.
	var info builtin.Info
	if err := last.Call(ctx, "agent.info", nil, &info); err != nil {
		t.Fatalf("link broken after stray output: %v", err)
	}
	if info.ID != last.ID() {
		t.Fatalf("agent.info id %d, want %d", info.ID, last.ID())
	}
	// Both writes reached the root's log, tagged with the node's name.
	logs.waitFor(t, "stray stdout: hello from fd 1", "stderr hello from fd 1", last.Name())
}

func TestUnknownFunctionNamesNode(t *testing.T) {
	exe, _ := os.Executable()
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	chain, err := root.SpawnPath(ctx, []spawn.Hop{{Method: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	err = chain[0].Call(ctx, "no.such", nil, nil)
	want := fmt.Sprintf("unknown function no.such on node %s", chain[0].Name())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
}

// TestCloseDuringAttach: Close reads the children a spawn has listed while
// that spawn attaches the child's link; the spawn must not write to a
// listed child (under -race it used to: c.port = port without the lock).
func TestCloseDuringAttach(t *testing.T) {
	exe, _ := os.Executable()
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	up := make(chan struct{}, 1)
	unsub := root.Monitor.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.AddRoute {
			select {
			case up <- struct{}{}:
			default:
			}
		}
	})
	defer unsub()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	spawned := make(chan error, 1)
	go func() {
		_, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
		spawned <- err
	}()
	select {
	case <-up: // the link is attached; Spawn may not have returned
	case err := <-spawned:
		t.Fatalf("spawn returned before its route came up: %v", err)
	case <-ctx.Done():
		t.Fatal("the child's route never came up")
	}
	root.Close()
	<-spawned
}

// TestSpawnDuringClose: a child whose start began before its node's Close
// and ended after it is not left running: the spawn fails and the child
// is killed (it used to be attached to the closed router and reported a
// success, its process never killed).
func TestSpawnDuringClose(t *testing.T) {
	exe, _ := os.Executable()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	// The agent's wrapper says its pid, then waits on the gate before it
	// becomes the agent (exec keeps the pid).
	wrapper := filepath.Join(dir, "agent.sh")
	script := fmt.Sprintf("#!/bin/sh\necho $$ > %s/pid\nread line < %s\nexec %s \"$@\"\n", dir, gate, exe)
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	root, err := agent.NewRoot(agent.Options{Exe: wrapper, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	spawned := make(chan error, 1)
	go func() {
		_, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
		spawned <- err
	}()
	// Opening the gate for writing returns once the wrapper waits on it.
	g, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(raw), &pid); err != nil {
		t.Fatalf("pid file %q: %v", raw, err)
	}
	root.Close()
	g.WriteString("go\n")
	g.Close()
	select {
	case err = <-spawned:
	case <-ctx.Done():
		t.Fatal("spawn never returned")
	}
	if err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("spawn finished after Close: %v, want a refusal: shutting down", err)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		syscall.Kill(-pid, syscall.SIGKILL)
		t.Errorf("the child (pid %d) outlived a spawn that ended after its node closed (kill 0: %v)", pid, err)
	}
}
