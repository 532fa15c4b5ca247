package stream

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pipe capacity for bulk data.
//
// A Linux pipe holds 64 KiB, so bulk data through a process's pipes wakes
// the writer and the reader every 64 KiB; a 1 MiB pipe lets both run
// longer between switches (W5, 256 MiB two hops up: 450–475 MB/s with
// 64 KiB pipes, 745–796 MB/s with 1 MiB, on a 2-core EPYC). Pipe capacity
// is charged to the user who made the pipe, and once that user's pipes
// hold /proc/sys/fs/pipe-user-pages-soft pages (64 MiB by default) every
// pipe the user makes next gets a single page, other programs' too. So a
// link grows its pipes only while it carries bulk data, back to the
// default once its last channel ends, and a process grows the pipes of
// at most bulkPipeLinks links at once (16 MiB of capacity). Only the
// process that made the pipes grows them (the parent, spawn's connection),
// so that bound holds for every pipe it made.

const (
	// bulkPipeSize is a grown pipe's capacity: Linux's default
	// /proc/sys/fs/pipe-max-size, the most an unprivileged process may set.
	bulkPipeSize = 1 << 20
	// basePipeSize is a pipe's default capacity, restored when bulk ends.
	basePipeSize = 64 << 10
	// bulkPipeLinks is how many links of a process may have grown pipes
	// at once.
	bulkPipeLinks = 8
)

// PipeSizer is implemented by a link's connection when it is a pair of
// pipes this process made, whose capacity it may change (F_SETPIPE_SZ).
type PipeSizer interface {
	// SetPipeSize sets the capacity of both pipes to n bytes.
	SetPipeSize(n int) error
}

// bulkPipes counts the links of this process whose pipes are grown.
var bulkPipes atomic.Int32

// shrinkRetry is how long a link waits to shrink its pipes again when
// they still held more than the default as its last channel ended.
const shrinkRetry = 200 * time.Millisecond

// pipeState is a link's pipe capacity: grown while channel data flows.
type pipeState struct {
	grown   atomic.Bool
	mu      sync.Mutex
	closed  bool // the link closed: never grow again
	refused bool // growing failed: not again until the channels end
	retry   *time.Timer
}

// bulkFlowing is called for each big tunnel frame in or out: the link
// carries bulk data. It grows the link's pipes if it may. It never
// blocks.
func (l *Link) bulkFlowing() {
	if l.pipes.grown.Load() {
		return
	}
	ps, ok := l.conn.(PipeSizer)
	if !ok {
		return
	}
	l.pipes.mu.Lock()
	defer l.pipes.mu.Unlock()
	if l.pipes.grown.Load() || l.pipes.closed || l.pipes.refused {
		return
	}
	if bulkPipes.Add(1) > bulkPipeLinks {
		bulkPipes.Add(-1)
		return
	}
	if err := ps.SetPipeSize(bulkPipeSize); err != nil {
		// Not a pipe after all, or the user's pipes are at their
		// limit: the link goes on with default pipes (one of the two
		// may have grown) and tries again after its channels end.
		_ = ps.SetPipeSize(basePipeSize)
		l.pipes.refused = true
		bulkPipes.Add(-1)
		return
	}
	l.pipes.grown.Store(true)
}

// bulkEnded is called when the link's last channel has ended, and when
// the link closes (closing): its pipes go back to the default capacity and
// free their place among the bulkPipeLinks. A pipe still holding more
// than the default cannot shrink yet; it is tried again every
// shrinkRetry while no channel is open.
func (l *Link) bulkEnded(closing bool) {
	l.pipes.mu.Lock()
	defer l.pipes.mu.Unlock()
	l.pipes.refused = false
	if closing {
		l.pipes.closed = true
		if l.pipes.retry != nil {
			l.pipes.retry.Stop()
		}
	}
	if !l.pipes.grown.Load() {
		return
	}
	if !l.pipes.closed {
		if err := l.conn.(PipeSizer).SetPipeSize(basePipeSize); err != nil {
			// Bytes of the last channel still in a pipe (EBUSY):
			// again shortly, unless a channel has opened since.
			if l.pipes.retry == nil {
				l.pipes.retry = time.AfterFunc(shrinkRetry, l.retryShrink)
			} else {
				l.pipes.retry.Reset(shrinkRetry)
			}
			return
		}
	}
	l.pipes.grown.Store(false)
	bulkPipes.Add(-1)
}

// retryShrink shrinks the pipes of a link whose last channel ended while
// they still held its bytes, if no channel is open now.
func (l *Link) retryShrink() {
	if in, out := l.Channels(); in+out == 0 {
		l.bulkEnded(false)
	}
}
