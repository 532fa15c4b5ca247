package agent_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// livenessPatience guards against a hang in these tests; it is far longer
// than the thresholds they set, and shorter than the 30 s transport
// keepalive that once decided liveness on its own clock.
const livenessPatience = 25 * time.Second

// shortHeartbeat is what these tests run with.
var shortHeartbeat = agent.HeartbeatConfig{Interval: 50 * time.Millisecond, UnresponsiveAfter: 400 * time.Millisecond, DownAfter: time.Second}

// TestChildLeavesSilentParent: a node whose parent completes the hello and
// then says nothing (as across a partition that closes no socket) closes
// its parent link with a heartbeat-timeout cause and shuts down after the
// parent's DownAfter. Before, nothing but a transport keepalive on its own
// 30 s clock ever noticed, as "EOF".
func TestChildLeavesSilentParent(t *testing.T) {
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	hello := wire.Hello{ID: 1, Name: "silent-parent-child", ParentID: wire.RootID, Ancestors: []uint32{wire.RootID},
		HeartbeatInterval: shortHeartbeat.Interval, UnresponsiveAfter: shortHeartbeat.UnresponsiveAfter, DownAfter: shortHeartbeat.DownAfter}
	opened := make(chan *stream.Link, 1)
	go func() {
		l, _, err := stream.Open(pc, hello, nil)
		if err != nil {
			t.Error(err)
			pc.Close()
			close(opened)
			return
		}
		opened <- l // never started: it neither reads nor writes again
	}()
	n, err := agent.Attach(cc, agent.Options{Logger: hclog.NewNullLogger()}, livenessPatience)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if l := <-opened; l != nil {
		defer l.Close()
	}
	parent := n.Router.Parent()
	if parent == nil {
		t.Fatal("no parent link")
	}
	select {
	case <-parent.Link.Done():
	case <-time.After(livenessPatience):
		t.Fatalf("the node still holds its parent link %s after the parent went silent", livenessPatience)
	}
	if err := parent.Link.Err(); !errors.Is(err, agent.ErrHeartbeatTimeout) || !strings.Contains(err.Error(), "nothing from parent node 0") {
		t.Fatalf("parent link closed with %v, want a heartbeat timeout naming the parent", err)
	}
}

// TestSenderThatNeverAnswersIsDown: a child that keeps sending frames but
// never answers the heartbeat's probes is not alive: it goes UNRESPONSIVE
// and DOWN on the configured thresholds, with a heartbeat cause. Before,
// any frame counted as life and such a child stayed UP forever.
func TestSenderThatNeverAnswersIsDown(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger(), Heartbeat: shortHeartbeat})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ev := watchTree(t, root)

	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	const id = 77
	type accepted struct {
		l   *stream.Link
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		l, _, err := stream.Accept(cc, nil, os.Getpid())
		acc <- accepted{l, err}
	}()
	pl, _, err := stream.Open(pc, root.ChildHello(id, "chatty"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := <-acc
	if a.err != nil {
		t.Fatal(a.err)
	}
	child := a.l
	defer child.Close()
	// The child reads (so nothing backs up) but answers nothing.
	child.Start(func(wire.Header, []byte) {}, nil)
	if _, err := root.Router.AttachChild(pl); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-child.Done():
				return
			case <-t.C:
				// A message to the root on a handle nobody serves: traffic,
				// but not an answer to a probe.
				_ = child.Send(wire.Header{Dst: wire.RootID, Src: id, Auth: id, Handle: 999}, nil)
			}
		}
	}()
	ev.wait(t, agent.StateUnresponsive, id)
	down := ev.wait(t, agent.StateDown, id)
	if !strings.Contains(down.Cause, "heartbeat timeout") {
		t.Fatalf("DOWN cause %q, want heartbeat timeout", down.Cause)
	}
	select {
	case <-pl.Done():
	case <-time.After(livenessPatience):
		t.Fatal("the root kept the link of a child that never answered")
	}
}
