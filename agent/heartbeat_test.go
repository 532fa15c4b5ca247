package agent_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
)

func TestHeartbeatConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg agent.HeartbeatConfig
		ok  bool
	}{
		{agent.HeartbeatConfig{}, true},
		{agent.DefaultHeartbeat(), true},
		{agent.HeartbeatConfig{Interval: time.Second, UnresponsiveAfter: 2 * time.Second, DownAfter: 3 * time.Second}, true},
		{agent.HeartbeatConfig{Interval: time.Second, UnresponsiveAfter: 500 * time.Millisecond, DownAfter: 3 * time.Second}, false},
		{agent.HeartbeatConfig{Interval: time.Second, UnresponsiveAfter: 2 * time.Second, DownAfter: 2 * time.Second}, false},
		{agent.HeartbeatConfig{Interval: -time.Second}, false},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok %v", c.cfg, err, c.ok)
		}
	}
}

// events collects the root's tree events.
type events struct{ ch chan agent.TreeEvent }

// watchTree collects root's tree events until the test ends.
func watchTree(t *testing.T, root *agent.Node) *events {
	ev := &events{ch: make(chan agent.TreeEvent, 1024)}
	unsub := root.Tree.Subscribe(func(e agent.TreeEvent) {
		select {
		case ev.ch <- e:
		default:
		}
	})
	t.Cleanup(unsub)
	return ev
}

func (e *events) wait(t *testing.T, kind string, id uint32) agent.TreeEvent {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == kind && ev.ID == id {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event for node %d", kind, id)
		}
	}
}

// TestHeartbeatStates runs a chain root → a → b with short thresholds set
// at the root only: a judges b with them, so they were inherited. SIGSTOP
// on b makes it UNRESPONSIVE at the root; SIGCONT brings it UP; a stop held
// past DownAfter makes it DOWN, withdraws it, and fails a call pending on
// it with "heartbeat timeout" naming it.
func TestHeartbeatStates(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hb := agent.HeartbeatConfig{Interval: 50 * time.Millisecond, UnresponsiveAfter: 500 * time.Millisecond, DownAfter: 3 * time.Second}
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger(), Heartbeat: hb})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ev := watchTree(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	defer cancel()
	chain, err := root.SpawnPath(ctx, []spawn.Hop{{Method: "local"}, {Method: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	b := chain[1]
	var info builtin.Info
	if err := b.Call(ctx, "agent.info", nil, &info); err != nil {
		t.Fatal(err)
	}
	meta, ok := root.Tree.Node(b.ID())
	if !ok || meta.Parent != chain[0].ID() || meta.PID != info.PID || meta.Method != "local" || meta.State != agent.StateUp {
		t.Fatalf("tree's view of b: %+v (known %v), want parent %d pid %d local up", meta, ok, chain[0].ID(), info.PID)
	}
	defer syscall.Kill(info.PID, syscall.SIGCONT)

	if err := syscall.Kill(info.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, agent.StateUnresponsive, b.ID())
	if m, _ := root.Tree.Node(b.ID()); m.State != agent.StateUnresponsive {
		t.Errorf("state during SIGSTOP: %q", m.State)
	}
	if err := syscall.Kill(info.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, agent.StateUp, b.ID())

	pending, err := b.Start(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	// A round trip after the call: b has it before it stops.
	if err := b.Call(ctx, "agent.ping", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(info.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	down := ev.wait(t, agent.StateDown, b.ID())
	if !strings.Contains(down.Cause, "heartbeat timeout") {
		t.Errorf("down cause %q", down.Cause)
	}
	ev.wait(t, "del_route", b.ID())
	err = pending.Wait(nil)
	if !errors.Is(err, router.ErrDisconnected) || !strings.Contains(err.Error(), "heartbeat timeout") || !strings.Contains(err.Error(), b.Name()) {
		t.Fatalf("pending call: %v; want a disconnect for heartbeat timeout naming %s", err, b.Name())
	}
	if _, ok := root.Tree.Node(b.ID()); ok {
		t.Error("b still in the tree after DOWN")
	}
	// a is fine and still UP.
	if err := chain[0].Call(ctx, "agent.ping", nil, nil); err != nil {
		t.Fatalf("a after b went down: %v", err)
	}
}

// TestTreeRTTFollows: the root's figure of a child's RTT follows small
// changes too (within the refresh, ten probes), not only changes by half.
func TestTreeRTTFollows(t *testing.T) {
	root := newRoot(t, agent.HeartbeatConfig{Interval: 10 * time.Millisecond, UnresponsiveAfter: 5 * time.Second, DownAfter: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	chain, err := root.SpawnPath(ctx, []spawn.Hop{{Method: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	c := chain[0]
	// Count the changes of the root's figure by under a millisecond: the
	// old rule (a change by half, at least 5 ms) never made one.
	small, last := 0, time.Duration(0)
	deadline := time.Now().Add(patience) // guards a hang only
	for small < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the root's RTT of the child changed by under 1ms %d times in %s", small, patience)
		}
		if m, ok := root.Tree.Node(c.ID()); ok && m.RTT > 0 && m.RTT != last {
			if last != 0 && (m.RTT-last).Abs() < time.Millisecond {
				small++
			}
			last = m.RTT
		}
		time.Sleep(2 * time.Millisecond)
	}
}
