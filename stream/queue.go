package stream

import (
	"context"
	"sync"
	"sync/atomic"
)

// The send rule of every link: a receive loop never waits on a send.
//
// A link has one ordered queue of frames for its write loop and, beside it,
// a short lane for heartbeats. Frames enter by class:
//
//   - data (Send, SendWait): messages the router forwards, replies, dead
//     replies, calls. Admitted while fewer than Config.SendQueue frames
//     wait. Send never blocks and refuses a frame past that with
//     ErrQueueFull (the router turns it into a dead reply naming the
//     congested link); SendWait, for a goroutine that originates traffic,
//     waits for room until its context ends.
//   - control (SendControl): route updates, node states, cancels and
//     shutdowns. Never blocks, ordered with data (DEL_ROUTE must not
//     overtake the last messages of the node it withdraws), and admitted
//     into a reserve (Config.ControlReserve) beyond the data bound, so a
//     congested link still carries them.
//   - urgent (SendUrgent): heartbeat probes and their answers only. Never
//     blocks, and written before anything queued (at the latest after the
//     batch or big payload being written), so liveness is judged on the
//     peer, not on the length of our own queue.
//
// Past the reserve a control or urgent frame is refused too (ErrQueueFull),
// and the link stays up: closing it would let whoever fills the reserve
// (a child flooding requests whose answers, or route changes whose
// updates, queue on another link) cut that link for everyone. A peer that
// really stopped reading stops answering heartbeats, and the heartbeat,
// the one liveness mechanism, closes its link and names why.

// DefaultControlReserve is how many control (or urgent) frames may wait
// beyond the data bound by default (Config.ControlReserve): room for the
// route updates of a very large subtree that is lost at once, and for the
// answers owed to many callers.
const DefaultControlReserve = 1 << 16

// keepQueueCap is the most room the queue keeps once drained. The queue
// starts empty and grows by append as frames wait; room past this (a
// burst of control frames into the reserve, up to about 3.6 MiB) is
// dropped when the write loop takes the frames, and grows again on demand.
const keepQueueCap = 1024

// frameClass is how a frame enters the queue.
type frameClass int

const (
	classData frameClass = iota
	classControl
	classUrgent
)

// sendQueue is a link's outbound queue. It is safe for concurrent use; the
// write loop is its one consumer.
type sendQueue struct {
	limit   int // data bound (Config.SendQueue)
	reserve int // control and urgent frames beyond it (Config.ControlReserve)

	mu     sync.Mutex
	frames []outFrame
	urgent []outFrame
	// room is closed and replaced when the write loop takes frames while
	// SendWait callers sleep on it (waiting > 0).
	room    chan struct{}
	waiting int
	// nurgent mirrors len(urgent), so the write loop can look between big
	// writes without the lock.
	nurgent atomic.Int32

	// ready wakes the write loop (buffered 1: a wake is never lost).
	ready chan struct{}
	// unwritten counts the frames admitted and not yet written: queued,
	// or taken by the write loop and not yet out. A sender may write a
	// frame itself only while it is zero (inline.go), so no frame
	// overtakes another.
	unwritten atomic.Int64
}

func newSendQueue(limit, reserve int) *sendQueue {
	return &sendQueue{limit: limit, reserve: reserve, room: make(chan struct{}), ready: make(chan struct{}, 1)}
}

// put admits f by class without blocking. For a refusal it reports how
// many frames the bound that refused it allows.
func (q *sendQueue) put(f outFrame, c frameClass) (bound int, ok bool) {
	q.mu.Lock()
	q.unwritten.Add(1)
	switch {
	case c == classUrgent && len(q.urgent) < q.reserve:
		q.urgent = append(q.urgent, f)
		q.nurgent.Store(int32(len(q.urgent)))
	case c == classData && len(q.frames) < q.limit,
		c == classControl && len(q.frames) < q.limit+q.reserve:
		q.frames = append(q.frames, f)
	default:
		q.unwritten.Add(-1)
		q.mu.Unlock()
		switch c {
		case classUrgent:
			return q.reserve, false
		case classControl:
			return q.limit + q.reserve, false
		}
		return q.limit, false
	}
	q.mu.Unlock()
	q.wake()
	return 0, true
}

// putWait admits a data frame, waiting for room until ctx or done ends.
func (q *sendQueue) putWait(ctx context.Context, done <-chan struct{}, f outFrame) error {
	for {
		q.mu.Lock()
		if len(q.frames) < q.limit {
			q.frames = append(q.frames, f)
			q.unwritten.Add(1)
			q.mu.Unlock()
			q.wake()
			return nil
		}
		room := q.room
		q.waiting++
		q.mu.Unlock()
		select {
		case <-room:
		case <-done:
			q.leave(room)
			return ErrLinkClosed
		case <-ctx.Done():
			q.leave(room)
			return ctx.Err()
		}
	}
}

// leave takes back a waiter that gave up on room before it was closed.
func (q *sendQueue) leave(room chan struct{}) {
	q.mu.Lock()
	if q.room == room && q.waiting > 0 {
		q.waiting--
	}
	q.mu.Unlock()
}

func (q *sendQueue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take moves every waiting data and control frame onto dst and returns it.
// Waiting senders are woken. Urgent frames are taken by takeUrgent, just
// before each write.
func (q *sendQueue) take(dst []outFrame) []outFrame {
	q.mu.Lock()
	dst = append(dst, q.frames...)
	if cap(q.frames) > keepQueueCap {
		// A burst past the data bound grew the queue: give the room
		// back.
		q.frames = nil
	} else {
		clear(q.frames)
		q.frames = q.frames[:0]
	}
	if q.waiting > 0 {
		close(q.room)
		q.room = make(chan struct{})
		q.waiting = 0
	}
	q.mu.Unlock()
	return dst
}

// takeUrgent moves the waiting urgent frames onto dst.
func (q *sendQueue) takeUrgent(dst []outFrame) []outFrame {
	q.mu.Lock()
	dst = append(dst, q.urgent...)
	clear(q.urgent)
	q.urgent = q.urgent[:0]
	q.nurgent.Store(0)
	q.mu.Unlock()
	return dst
}
