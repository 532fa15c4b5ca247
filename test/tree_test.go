package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
)

// patience is how long a test waits for an event (a reply, a process
// exit, a log line) before failing instead of hanging. It only stops a
// hang: nothing a test does is bounded by it, and the slowest step on a
// loaded machine is far below it.
const patience = 2 * time.Minute

// TestAgentInfoChain builds local/local/local from a root in this process
// and calls agent.info on each node: three distinct PIDs, each node's
// parent the node before it (the first one's is this process), and the
// IDs and names the root's route table shows.
func TestAgentInfoChain(t *testing.T) {
	root, _ := newRoot(t, agent.Options{}, "info")
	chain, infos := spawnChain(t, root, 3)

	seen := map[int]bool{os.Getpid(): true}
	for i, in := range infos {
		if seen[in.PID] {
			t.Fatalf("hop %d: pid %d is not distinct", i+1, in.PID)
		}
		seen[in.PID] = true
		wantPPID := os.Getpid()
		if i > 0 {
			wantPPID = infos[i-1].PID
		}
		if in.PPID != wantPPID {
			t.Fatalf("hop %d: ppid %d, want %d", i+1, in.PPID, wantPPID)
		}
		if in.ID != chain[i].ID() || in.Name != chain[i].Name() {
			t.Fatalf("hop %d reports %d %q, its handle says %d %q", i+1, in.ID, in.Name, chain[i].ID(), chain[i].Name())
		}
		if got := pidsFromName(t, in.Name); len(got) != i+1 || got[i] != in.PID {
			t.Fatalf("hop %d: name %q does not end in its pid %d", i+1, in.Name, in.PID)
		}
		if i > 0 && !strings.HasPrefix(in.Name, infos[i-1].Name+"/") {
			t.Fatalf("hop %d: name %q is not below %q", i+1, in.Name, infos[i-1].Name)
		}
	}

	table := root.Router.Table()
	if table.ID != 0 || table.Parent != nil {
		t.Fatalf("root table is node %d with parent %v", table.ID, table.Parent)
	}
	if len(table.Routes) != 3 {
		t.Fatalf("root routes %+v, want the three hops", table.Routes)
	}
	routed := map[uint32]router.RouteEntry{}
	for _, r := range table.Routes {
		routed[r.ID] = r
	}
	for i, in := range infos {
		r, ok := routed[in.ID]
		if !ok || r.Name != in.Name || r.Via != infos[0].ID {
			t.Fatalf("hop %d (%d %q): root route %+v, want it via %d", i+1, in.ID, in.Name, r, infos[0].ID)
		}
	}

	// Each node's own table: the nodes below it, via the next hop.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for i, rm := range chain {
		var tb router.Table
		if err := rm.Call(ctx, "agent.routes", nil, &tb); err != nil {
			t.Fatal(err)
		}
		if tb.ID != infos[i].ID || tb.Parent == nil || (i > 0 && *tb.Parent != infos[i-1].ID) || (i == 0 && *tb.Parent != 0) {
			t.Fatalf("hop %d table header %d parent %v", i+1, tb.ID, tb.Parent)
		}
		below := infos[i+1:]
		if len(tb.Routes) != len(below) {
			t.Fatalf("hop %d routes %+v, want %d", i+1, tb.Routes, len(below))
		}
		for _, r := range tb.Routes {
			if r.Via != below[0].ID {
				t.Fatalf("hop %d route %+v not via %d", i+1, r, below[0].ID)
			}
		}
	}

	procs := make([]proc, len(infos))
	for i, in := range infos {
		procs[i] = procOf(t, in.PID)
	}
	root.Close()
	requireExited(t, "agents after root.Close", procs, patience)
}

// TestKillMiddleNode kills the middle node of local/local/local with
// SIGKILL while a 60 s agent.sleep is running on the last node: the call
// fails with a disconnect naming the lost node (not the safety
// deadline), the first node stays reachable, and the two lost agents exit.
func TestKillMiddleNode(t *testing.T) {
	root, logs := newRoot(t, agent.Options{}, "info")
	chain, infos := spawnChain(t, root, 3)
	procs := make([]proc, 3)
	for i, in := range infos {
		procs[i] = procOf(t, in.PID)
	}

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	pc, err := chain[2].Start(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	// The sleep is running on the last node once its record reaches us.
	logs.waitLine(t, regexp.MustCompile(`agent\.sleep started: .*node=`+regexp.QuoteMeta(infos[2].Name)+`( |$)`), patience)

	if err := syscall.Kill(infos[1].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = pc.Wait(nil)
	if ctx.Err() != nil {
		t.Fatalf("the call only ended at the safety deadline: %v", err)
	}
	if !errors.Is(err, router.ErrDisconnected) {
		t.Fatalf("call error %v, want a disconnect", err)
	}
	var de *router.DisconnectError
	if !errors.As(err, &de) || de.ID != infos[2].ID {
		t.Fatalf("call error %#v does not name node %d", err, infos[2].ID)
	}
	msg := err.Error()
	for _, want := range []string{infos[2].Name, infos[1].Name} {
		if !strings.Contains(msg, want) {
			t.Fatalf("call error %q does not name %q", msg, want)
		}
	}

	// Both lost nodes' handles report the disconnect; the first node is
	// still up and the root routes only it.
	for _, i := range []int{1, 2} {
		select {
		case <-chain[i].Done():
		case <-ctx.Done():
			t.Fatalf("hop %d handle not disconnected", i+1)
		}
		if !errors.Is(chain[i].Err(), router.ErrDisconnected) {
			t.Fatalf("hop %d Err() = %v", i+1, chain[i].Err())
		}
	}
	if err := chain[0].Call(ctx, "agent.ping", nil, nil); err != nil {
		t.Fatalf("first hop unreachable after its child died: %v", err)
	}
	if rs := root.Router.Table().Routes; len(rs) != 1 || rs[0].ID != infos[0].ID {
		t.Fatalf("root routes %+v, want only %d", rs, infos[0].ID)
	}

	requireExited(t, "middle and last agents", procs[1:], patience)
	if !procs[0].running() {
		t.Fatalf("first agent %v exited", procs[0])
	}
	root.Close()
	requireExited(t, "first agent after root.Close", procs[:1], patience)
}

// TestCancelStopsRemoteSleep cancels the caller's context while agent.sleep
// runs two hops down: the remote function sees the cancel (it logs so,
// and the record is forwarded to the root), and the node keeps serving.
func TestCancelStopsRemoteSleep(t *testing.T) {
	root, logs := newRoot(t, agent.Options{}, "info")
	chain, infos := spawnChain(t, root, 2)
	last := regexp.QuoteMeta(infos[1].Name)

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	pc, err := chain[1].Start(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, regexp.MustCompile(`agent\.sleep started: .*node=`+last+`( |$)`), patience)
	cancel()
	if err := pc.Wait(nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
	}
	logs.waitLine(t, regexp.MustCompile(`\[INFO\] .*agent\.sleep cancelled: .*node=`+last+`( |$).*cause="?context canceled`), patience)

	ctx2, cancel2 := context.WithTimeout(context.Background(), patience)
	defer cancel2()
	var res builtin.SleepResult
	if err := chain[1].Call(ctx2, "agent.sleep", builtin.SleepArgs{Seconds: 0}, &res); err != nil {
		t.Fatalf("node not serving after a cancel: %v", err)
	}
}

// TestLogForwarding checks a record logged on the third node of a chain
// is printed by the root, at its level, with that node's name.
func TestLogForwarding(t *testing.T) {
	root, logs := newRoot(t, agent.Options{}, "info")
	chain, infos := spawnChain(t, root, 3)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	var res builtin.SleepResult
	if err := chain[2].Call(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 0}, &res); err != nil {
		t.Fatal(err)
	}
	m := logs.waitLine(t, regexp.MustCompile(`^\S+ \[INFO\]  root: agent\.sleep started: (.*)$`), patience)
	if want := fmt.Sprintf("node=%s node_id=%d seconds=0", infos[2].Name, infos[2].ID); m[1] != want {
		t.Fatalf("forwarded record %q: fields %q, want %q", m[0], m[1], want)
	}
}

// TestSpawnFailures checks the errors of children that never come up.
func TestSpawnFailures(t *testing.T) {
	t.Run("exits at once", func(t *testing.T) {
		exe := writeScript(t, "boom", "echo starting >&2\necho boom >&2\nexit 3\n")
		root, _ := newRoot(t, agent.Options{Exe: exe}, "info")
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		_, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
		if err == nil {
			t.Fatal("spawn succeeded")
		}
		if ctx.Err() != nil {
			t.Fatalf("spawn only failed at the deadline: %v", err)
		}
		for _, want := range []string{"exit status 3", "starting\nboom"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("spawn error %q does not contain %q", err, want)
			}
		}
		if errors.Is(err, spawn.ErrConnectTimeout) {
			t.Fatalf("spawn error %q claims a timeout", err)
		}
	})
	t.Run("never answers", func(t *testing.T) {
		exe := writeScript(t, "mute", "echo waiting >&2\nexec sleep 60\n")
		root, _ := newRoot(t, agent.Options{Exe: exe, ConnectTimeout: 300 * time.Millisecond}, "info")
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		_, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
		if ctx.Err() != nil {
			t.Fatalf("spawn only failed at the safety deadline: %v", err)
		}
		if !errors.Is(err, spawn.ErrConnectTimeout) || !strings.Contains(err.Error(), "connection timed out") {
			t.Fatalf("spawn error %v, want connection timed out", err)
		}
		if !strings.Contains(err.Error(), "waiting") {
			t.Fatalf("spawn error %q does not carry the child's stderr", err)
		}
		if kids := descendants(os.Getpid()); len(kids) != 0 {
			t.Fatalf("processes left after the failed spawn: %v", kids)
		}
	})
	t.Run("unsupported method", func(t *testing.T) {
		root, _ := newRoot(t, agent.Options{}, "info")
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		_, err := root.Spawn(ctx, spawn.Hop{Method: "telnet", Target: "db1"}, "")
		if !errors.Is(err, spawn.ErrUnsupported) || !strings.Contains(err.Error(), "telnet") {
			t.Fatalf("spawn error %v, want telnet: connection method not supported", err)
		}
	})
}
