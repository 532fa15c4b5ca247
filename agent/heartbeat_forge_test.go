package agent_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// TestForgedHeartbeatAnswersAreDown: a child answers the root's first
// probe properly, learning the heartbeat reply handle and a probe's token,
// then stops reading its link and "answers" on a timer: with an empty
// payload, with the token it read (again and again), and with made-up
// bytes, on that handle. None of it is an answer to a probe it read, so it
// goes DOWN with a heartbeat cause and its link is closed. Before, any
// frame on the reply handle counted as life and it stayed UP forever.
func TestForgedHeartbeatAnswersAreDown(t *testing.T) {
	root := newRoot(t, shortHeartbeat)
	ev := watchTree(t, root)

	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	const id = 79
	type accepted struct {
		l   *stream.Link
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		l, _, err := stream.Accept(cc, nil, os.Getpid())
		acc <- accepted{l, err}
	}()
	pl, _, err := stream.Open(pc, root.ChildHello(id, "forger"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := <-acc
	if a.err != nil {
		t.Fatal(a.err)
	}
	child := a.l
	defer child.Close()
	stop := make(chan struct{})
	defer close(stop) // before child.Close: it unblocks the read loop

	type ping struct {
		replyTo uint32
		payload []byte
	}
	first := make(chan ping, 1)
	answered := false
	child.Start(func(h wire.Header, payload []byte) {
		if h.Handle != wire.HandlePing || answered {
			return
		}
		answered = true
		p := bytes.Clone(payload)
		// The one honest answer.
		_ = child.SendUrgent(wire.Header{Dst: h.Src, Src: id, Auth: id, Handle: h.ReplyTo, Flags: wire.FlagReply}, p)
		first <- ping{h.ReplyTo, p}
		<-stop // and it reads nothing more
	}, nil)
	if _, err := root.Router.AttachChild(pl); err != nil {
		t.Fatal(err)
	}
	var pg ping
	select {
	case pg = <-first:
	case <-time.After(livenessPatience):
		t.Fatal("no heartbeat probe reached the child")
	}
	go func() {
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		forged := [][]byte{nil, pg.payload, bytes.Repeat([]byte{0xa5}, len(pg.payload)), []byte("alive")}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-child.Done():
				return
			case <-tk.C:
				_ = child.SendUrgent(wire.Header{Dst: wire.RootID, Src: id, Auth: id, Handle: pg.replyTo, Flags: wire.FlagReply},
					forged[i%len(forged)])
			}
		}
	}()
	down := ev.wait(t, agent.StateDown, id)
	if !strings.Contains(down.Cause, "heartbeat timeout") {
		t.Fatalf("DOWN cause %q, want heartbeat timeout", down.Cause)
	}
	select {
	case <-pl.Done():
	case <-time.After(livenessPatience):
		t.Fatal("the root kept the link of a child that only forged answers")
	}
	if err := pl.Err(); !errors.Is(err, agent.ErrHeartbeatTimeout) {
		t.Fatalf("link closed with %v, want a heartbeat timeout", err)
	}
}

// TestPingEchoesProbe: a node answers PING with the probe's payload, and a
// plain ping with an empty one.
func TestPingEchoesProbe(t *testing.T) {
	root := newRoot(t, shortHeartbeat)
	child := attachChild(t, root, "echo", nil)
	ctx := t.Context()
	for _, p := range [][]byte{nil, []byte("0123456789abcdef")} {
		reply, err := root.Router.Request(ctx, child.Router.ID(), wire.HandlePing, p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(reply.Payload, p) {
			t.Errorf("PING %q answered with %q", p, reply.Payload)
		}
	}
}
