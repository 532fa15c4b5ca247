package agent

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// logForwarder is the io.Writer behind a non-root node's logger. Each JSON
// record hclog writes is queued (bounded, never blocking the writer) and a
// single goroutine sends it to the root as FORWARD_LOG. Records that find
// the queue full are dropped and counted.
type logForwarder struct {
	q       chan []byte
	dropped atomic.Uint64
	mu      sync.Mutex
	r       *router.Router // nil until the node's router exists
	early   func([]byte)   // where records go before that (stderr)
	stop    chan struct{}
	done    chan struct{}
	// ctx ends when the forwarder closes: a send waiting for room in the
	// parent link's queue gives up then.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
}

func newLogForwarder(early func([]byte)) *logForwarder {
	ctx, cancel := context.WithCancel(context.Background())
	return &logForwarder{q: make(chan []byte, 1024), early: early, stop: make(chan struct{}), done: make(chan struct{}),
		ctx: ctx, cancel: cancel}
}

func (f *logForwarder) Write(p []byte) (int, error) {
	f.mu.Lock()
	r := f.r
	f.mu.Unlock()
	if r == nil {
		f.early(p)
		return len(p), nil
	}
	line := append([]byte(nil), p...)
	select {
	case f.q <- line:
	default:
		f.dropped.Add(1)
	}
	return len(p), nil
}

// start begins forwarding through r.
func (f *logForwarder) start(r *router.Router) {
	f.mu.Lock()
	f.r = r
	f.mu.Unlock()
	go func() {
		defer close(f.done)
		var reported uint64
		for {
			select {
			case line := <-f.q:
				f.send(f.ctx, r, line)
				if d := f.dropped.Load(); d != reported {
					reported = d
					note, _ := json.Marshal(map[string]any{"@level": "warn", "@message": "log records dropped: queue full", "dropped": d})
					f.send(f.ctx, r, note)
				}
			case <-f.stop:
				return
			}
		}
	}()
}

// send forwards one record, waiting for room in the parent link's queue
// (this is the forwarder's own goroutine) until ctx ends.
func (f *logForwarder) send(ctx context.Context, r *router.Router, line []byte) {
	body, err := wire.Marshal(wire.LogRecord{NodeID: r.ID(), Node: r.Name(), Line: line})
	if err != nil {
		return
	}
	if err := r.SendContext(ctx, wire.Header{Dst: wire.RootID, Handle: wire.HandleForwardLog}, body); err != nil {
		f.dropped.Add(1)
	}
}

// closeGrace bounds how long close waits to send the records still queued.
const closeGrace = time.Second

// close stops the forwarder after sending what is queued, best effort. It
// is idempotent.
func (f *logForwarder) close() { f.closeOnce.Do(f.close1) }

func (f *logForwarder) close1() {
	f.mu.Lock()
	started := f.r != nil
	f.mu.Unlock()
	if !started {
		f.cancel()
		return
	}
	ctx, cancel := context.WithTimeout(f.ctx, closeGrace)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case line := <-f.q:
			f.send(ctx, f.r, line)
			continue
		default:
		}
		break
	}
	f.cancel()
	close(f.stop)
	<-f.done
}

// onForwardLog runs at the root: it prints a descendant's record through
// the root's logger, tagged with the node's name. It prints through the
// logger the root was given (Options.Logger), not n.Log, which carries the
// root's own "node" field and would attribute the record to node 0.
func (n *Node) onForwardLog(m *router.Message) {
	var rec wire.LogRecord
	if err := wire.Unmarshal(m.Payload, &rec); err != nil {
		n.Log.Warn("bad FORWARD_LOG payload", "src", m.Src, "error", err)
		return
	}
	if rec.NodeID != m.Src {
		n.Log.Warn("FORWARD_LOG names another node", "src", m.Src, "claims", rec.NodeID)
		return
	}
	var fields map[string]any
	out := n.opts.Logger
	if err := json.Unmarshal(rec.Line, &fields); err != nil {
		out.Info(string(rec.Line), "node", rec.Node)
		return
	}
	level := hclog.LevelFromString(str(fields["@level"]))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	msg := str(fields["@message"])
	keys := make([]string, 0, len(fields))
	for k := range fields {
		// "node" is the sender's numeric ID (its router's field); the
		// record is tagged with the name and node_id below instead.
		if len(k) > 0 && k[0] == '@' || k == "node" || k == "node_id" {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []any{"node", rec.Node, "node_id", rec.NodeID}
	if mod := str(fields["@module"]); mod != "" && mod != rec.Node {
		args = append(args, "module", mod)
	}
	for _, k := range keys {
		args = append(args, k, fields[k])
	}
	out.Log(level, msg, args...)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
