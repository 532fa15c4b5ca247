package router_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// goroutineDump fails t with every goroutine's stack, so a deadlock shows
// who waits on whom.
func goroutineDump(t *testing.T, what string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	t.Fatalf("%s\n\ngoroutines:\n%s", what, buf[:n])
}

// TestSlowConsumerDoesNotStallSiblings: a node behind m stops reading (its
// handler blocks its read loop), so m's queue toward it fills. m must go
// on reading from its parent: messages for the stuck node come back as dead
// replies naming the congested link, and traffic between the root and m's
// other child, both ways, is not held up.
func TestSlowConsumerDoesNotStallSiblings(t *testing.T) {
	o := testtree.Options{SendQueue: 4, StreamWindow: 256 << 10}
	root := testtree.Root(t, o)
	m := root.Spawn(t, o, "m")
	stuckNode := m.Spawn(t, o, "stuck")
	b := m.Spawn(t, o, "b")
	root.WaitRoute(t, stuckNode.ID())
	root.WaitRoute(t, b.ID())
	bEcho, rootEcho := newEcho(b), newEcho(root)
	deadReplies := newSink(root)

	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the routers close
	stuck := make(chan struct{}, 1)
	block := stuckNode.R.AddHandler(func(*router.Message) {
		stuck <- struct{}{}
		<-release
	}, router.Anyone)
	ignore := stuckNode.R.AddHandler(func(*router.Message) {}, router.Anyone)
	if err := root.R.Send(wire.Header{Dst: stuckNode.ID(), Handle: block}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
	case <-time.After(patience):
		t.Fatal("the stuck node's handler never ran")
	}

	// Flood the stuck node. Each message asks for a reply, so the first
	// one m cannot queue comes back as a dead reply. The flood runs on its
	// own goroutine: before the fix m's read loop blocked, the root's
	// queue filled behind it and the root's Send blocked too.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		payload := make([]byte, 64<<10)
		for i := 0; i < 4096; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// The root's own queue toward m may be full for a moment:
			// that refusal is not the one this test waits for.
			_ = root.R.Send(wire.Header{Dst: stuckNode.ID(), Handle: ignore, ReplyTo: deadReplies.handle}, payload)
		}
	}()
	dead := deadReplies.next(t)
	reason, err := wire.DecodeDeadReason(dead.Payload)
	if err != nil || !dead.IsDead() || dead.Src != m.ID() || !strings.Contains(reason, "congested") ||
		!strings.Contains(reason, "node "+itoa(stuckNode.ID())) {
		t.Fatalf("got %s %q (%v), want a dead reply from m naming the congested link to node %d",
			dead.Header, reason, err, stuckNode.ID())
	}
	if m.R.Congested() == 0 {
		t.Fatal("m did not count the congested message")
	}

	done := make(chan error, 2)
	go func() {
		_, err := root.R.Request(ctxPatience(t), b.ID(), bEcho.handle, []byte{0x40})
		done <- err
	}()
	go func() {
		_, err := b.R.Request(ctxPatience(t), root.ID(), rootEcho.handle, []byte{0x40})
		done <- err
	}()
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if err != nil {
				goroutineDump(t, "a round trip between the root and b failed while a sibling was congested: "+err.Error())
			}
		case <-time.After(patience):
			goroutineDump(t, "a round trip between the root and b is stuck behind the congested sibling")
		}
	}
}

func itoa(v uint32) string {
	const digits = "0123456789"
	if v == 0 {
		return "0"
	}
	var b []byte
	for ; v > 0; v /= 10 {
		b = append([]byte{digits[v%10]}, b...)
	}
	return string(b)
}

// TestFullRateBothWaysNoDeadlock: two nodes call each other as fast as they
// can in both directions over a link with one-frame queues and the
// smallest window, answering from their read loops. Before the fix each
// read loop waited on its own full queue to send a reply while the other
// side did the same, and both stopped for good (2 runs of 3 hung, the
// third failed). Every call must be answered: replies are owed and never
// refused.
func TestFullRateBothWaysNoDeadlock(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			o := testtree.Options{SendQueue: 1, StreamWindow: 256 << 10, Transport: tr}
			root := testtree.Root(t, o)
			a := root.Spawn(t, o, "a")
			root.WaitRoute(t, a.ID())
			rootEcho, aEcho := newEcho(root), newEcho(a)

			const callers, calls = 32, 10
			payload := make([]byte, 256<<10)
			errs := make(chan error, 2*callers)
			var wg sync.WaitGroup
			run := func(from *testtree.Node, to uint32, handle uint32) {
				defer wg.Done()
				for i := 0; i < calls; i++ {
					// A hang guard only: a deadlock never ends, a busy
					// machine only slows the calls down.
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					_, err := from.R.Request(ctx, to, handle, payload)
					cancel()
					if err != nil {
						errs <- err
						return
					}
				}
			}
			for i := 0; i < callers; i++ {
				wg.Add(2)
				go run(root, a.ID(), aEcho.handle)
				go run(a, root.ID(), rootEcho.handle)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if errors.Is(err, context.DeadlineExceeded) {
					goroutineDump(t, "calls in both directions stopped: "+err.Error())
				}
				t.Fatalf("call failed: %v", err)
			}
		})
	}
}

// TestAllocateIDWaitersGiveUp: while one spawn waits for an ID block from
// a root that does not answer, another can still give up on its own
// context; before the fix it waited for the allocator's mutex, held across
// the first one's round trip. Both share the one block once it comes.
func TestAllocateIDWaitersGiveUp(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	a := root.Spawn(t, testtree.Options{}, "a")
	held := make(chan *router.Message, 4)
	root.R.Handle(wire.HandleAllocateID, func(m *router.Message) { held <- m }, router.Descendants(root.R))

	first := make(chan uint32, 1)
	firstErr := make(chan error, 1)
	go func() {
		id, err := a.R.AllocateID(context.Background())
		if err != nil {
			firstErr <- err
			return
		}
		first <- id
	}()
	var req *router.Message
	select {
	case req = <-held:
	case <-time.After(patience):
		t.Fatal("no ALLOCATE_ID reached the root")
	}

	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() {
		_, err := a.R.AllocateID(ctx)
		second <- err
	}()
	cancel()
	select {
	case err := <-second:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled AllocateID returned %v, want context.Canceled", err)
		}
	case <-time.After(patience):
		goroutineDump(t, "a cancelled AllocateID waits behind another one's round trip")
	}

	body, err := wire.Marshal(wire.IDBlock{Start: 5000, Count: 16}) // a node's first block
	if err != nil {
		t.Fatal(err)
	}
	if err := root.R.Reply(req, body); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-first:
		if id != 5000 {
			t.Fatalf("first ID of the block: %d, want 5000", id)
		}
	case err := <-firstErr:
		t.Fatal(err)
	case <-time.After(patience):
		t.Fatal("the first AllocateID never got its block")
	}
	id, err := a.R.AllocateID(ctxPatience(t))
	if err != nil || id != 5001 {
		t.Fatalf("next ID: %d, %v; want 5001 from the same block", id, err)
	}
	select {
	case m := <-held:
		t.Fatalf("a second block was requested: %s", m.Header)
	default:
	}
}

// TestFloodingGrandchildCannotCutItsParent: a grandchild c floods the root
// with requests (ALLOCATE_ID, which descendants may send) through m while m
// is not reading from the root, so the root's answers pile up on its link
// to m. Answers past the queue and its control reserve are refused (c's
// requests go unanswered: c's loss); the link to m stays up and works again
// as soon as m reads. Before, the root closed its link to m as a peer that
// stopped reading, and m's whole subtree was lost with it.
func TestFloodingGrandchildCannotCutItsParent(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	m := root.Spawn(t, testtree.Options{ControlReserve: 64}, "m")
	c := m.Spawn(t, testtree.Options{}, "c")
	root.WaitRoute(t, c.ID())
	mEcho := newEcho(m)

	// m's read loop on its parent link stops until release.
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	stuck := make(chan struct{}, 1)
	block := m.R.AddHandler(func(*router.Message) {
		stuck <- struct{}{}
		<-release
	}, router.Anyone)
	if err := root.R.Send(wire.Header{Dst: m.ID(), Handle: block}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
	case <-time.After(patience):
		t.Fatal("m's handler never ran")
	}

	body, err := wire.Marshal(wire.AllocateIDRequest{Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	ignore := c.R.AddHandler(func(*router.Message) {}, router.Anyone)
	// Flood until the root refuses an answer toward m: past m's 256 KiB
	// window, the queue and the reserve. m may refuse some requests as
	// congested on its way up (a busy machine), so the flood is bounded by
	// a count far above what it takes, not by a clock.
	const most = 1 << 20
	sent := 0
	for ; sent < most && m.Up.Link.QueueFull() == 0; sent++ {
		h := wire.Header{Dst: root.ID(), Src: c.ID(), Auth: c.ID(), Handle: wire.HandleAllocateID, ReplyTo: ignore}
		if err := c.Down.Link.SendWait(ctxPatience(t), h, body); err != nil {
			t.Fatalf("request %d: %v", sent, err)
		}
	}
	if sent == most {
		t.Fatalf("%d requests and no answer refused: the flood never filled the root's queue toward m", most)
	}
	// A marker behind the requests: when it arrives, the root has handled
	// them all. m may refuse it as congested toward the root (a dead reply
	// to c says so): then it goes again.
	marker, refused := newSink(root), newSink(c)
	for arrived := false; !arrived; {
		h := wire.Header{Dst: root.ID(), Src: c.ID(), Auth: c.ID(), Handle: marker.handle, ReplyTo: refused.handle}
		if err := c.Down.Link.SendWait(ctxPatience(t), h, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-marker.ch:
			arrived = true
		case <-refused.ch:
		case <-time.After(patience):
			goroutineDump(t, "the marker neither arrived nor was refused")
		}
	}
	if err := m.Up.Link.Err(); err != nil {
		t.Fatalf("the root closed its link to m: %v", err)
	}
	unblock()
	barrier(t, root, m, mEcho)
}
