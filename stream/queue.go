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
//     into a reserve of MaxControlQueue frames beyond the data bound, so a
//     congested link still carries them.
//   - urgent (SendUrgent): heartbeat probes and their answers only. Never
//     blocks, and written before anything queued, so liveness is judged on
//     the peer, not on the length of our own queue.
//
// A peer that has not taken the whole reserve is a peer that stopped
// reading: the link is closed with ErrSlowPeer instead of growing a queue
// without bound (nats-server's slow-consumer rule).

// MaxControlQueue is how many control (or urgent) frames may wait beyond
// the data bound: room for the route updates of a very large subtree that
// is lost at once.
const MaxControlQueue = 1 << 16

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
	limit int // data bound (Config.SendQueue)

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
}

func newSendQueue(limit int) *sendQueue {
	return &sendQueue{limit: limit, room: make(chan struct{}), ready: make(chan struct{}, 1)}
}

// put admits f by class without blocking. It reports whether f was
// admitted, and for a refusal whether the reserve is exhausted (the peer
// stopped reading) rather than the data bound reached.
func (q *sendQueue) put(f outFrame, c frameClass) (ok, slow bool) {
	q.mu.Lock()
	switch {
	case c == classUrgent && len(q.urgent) < MaxControlQueue:
		q.urgent = append(q.urgent, f)
		q.nurgent.Store(int32(len(q.urgent)))
	case c == classData && len(q.frames) < q.limit,
		c == classControl && len(q.frames) < q.limit+MaxControlQueue:
		q.frames = append(q.frames, f)
	default:
		q.mu.Unlock()
		return false, c != classData
	}
	q.mu.Unlock()
	q.wake()
	return true, false
}

// putWait admits a data frame, waiting for room until ctx or done ends.
func (q *sendQueue) putWait(ctx context.Context, done <-chan struct{}, f outFrame) error {
	for {
		q.mu.Lock()
		if len(q.frames) < q.limit {
			q.frames = append(q.frames, f)
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
			return ErrLinkClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (q *sendQueue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take moves every waiting frame, urgent ones first, onto dst and returns
// it. Waiting senders are woken.
func (q *sendQueue) take(dst []outFrame) []outFrame {
	q.mu.Lock()
	dst = append(dst, q.urgent...)
	dst = append(dst, q.frames...)
	clear(q.urgent)
	clear(q.frames)
	q.urgent, q.frames = q.urgent[:0], q.frames[:0]
	q.nurgent.Store(0)
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
