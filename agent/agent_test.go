package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
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
		if err := agent.RunChildWith(reg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

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
	deadline := time.After(20 * time.Second)
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
