package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Log records travel to the root hop by hop. A node sends its own records,
// and the ones it accepts from its children, to its parent as FORWARD_LOG;
// every node that receives them (the root, and every node with children)
// takes them in through a logIntake, which trusts nothing a record says
// about itself:
//
//   - A record is accepted only from the direct child at the other end of
//     the link it arrived on (Src is that link's peer), and the node it is
//     from must be that child or routed through that link. The node's name
//     printed at the root is the one in the root's route table (the
//     Port's PeerName for a direct child), never the name the record
//     carries; node and module fields inside the record that disagree are
//     shown as claimed_node, claimed_node_id, claimed_module.
//   - Each child link has a token bucket of logRate records a second with
//     a burst of logBurst. Records over it are dropped and counted, and a
//     summary "dropped N log records from node X (rate limit)" is logged at
//     most once every logDropEvery per link. Records that fail the checks
//     above are dropped the same way, with their own summary. Neither the
//     bucket nor the summary ever blocks the link's read loop.
//   - At the root every message, attribute key and value is escaped
//     (logsafe.Clip: control characters, ESC, invalid UTF-8 become visible
//     escapes) and clipped: the message at maxLogMessage bytes, keys at
//     maxLogKey, values at maxLogValue, at most maxLogAttrs attributes and
//     maxLogAttrBytes of them. A record longer than maxRelayLine is
//     re-encoded the same way before it is sent on, by the node that
//     logged it and by every node that relays it (clipping twice changes
//     nothing).
//
// The budget: 200 records a second is far above what a healthy node logs
// at info (a handful a second; a busy debug run a few dozen), and a burst
// of 1000 lets a node report a whole failure — a stack of errors, a
// subtree going down — without loss. At the root the bucket caps a
// subtree at 200 lines a second: 60 KB/s of typical 300-byte records, and
// about 3 MB/s if every record is as large as the clipping allows, against
// the 19 MB/s a hostile leaf reached before. A subtree shares its
// link's budget at each hop, so one noisy node can crowd out its siblings'
// records, never the rest of the tree's.
const (
	logRate      = 200
	logBurst     = 1000
	logDropEvery = time.Second

	maxLogMessage   = 4 << 10
	maxLogKey       = 128
	maxLogValue     = 1 << 10
	maxLogAttrs     = 32
	maxLogAttrBytes = 4 << 10
	// maxLogParse is the longest line parsed as JSON; a longer one is shown
	// as clipped text.
	maxLogParse = 64 << 10
	// maxRelayLine is the longest record a node relays as it came.
	maxRelayLine = 16 << 10
	// logPrintQueue bounds the root's records waiting to be printed.
	logPrintQueue = 4096
)

// fwdRecord is one record queued for the parent.
type fwdRecord struct {
	id   uint32 // the node it is from
	name string // that node's name, from this node's route table
	line []byte // hclog JSON
}

// logForwarder is the io.Writer behind a non-root node's logger. Each JSON
// record hclog writes, and each record relayed from a child, is queued
// (bounded, never blocking the writer or a read loop) and a single
// goroutine sends it to the parent as FORWARD_LOG. Records that find the
// queue full are dropped and counted.
type logForwarder struct {
	q       chan fwdRecord
	dropped atomic.Uint64
	mu      sync.Mutex
	r       *router.Router // nil until the node's router exists
	parent  uint32         // set with r
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
	return &logForwarder{q: make(chan fwdRecord, 1024), early: early, stop: make(chan struct{}), done: make(chan struct{}),
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
	if len(line) > maxRelayLine {
		// The node's own record (a long stray stdout line): clipped here
		// as the next hop would, so it arrives as a record, not as text.
		line = parseLogLine(line, r.ID(), len(line)).encode()
	}
	f.enqueue(fwdRecord{id: r.ID(), name: r.Name(), line: line})
	return len(p), nil
}

// relay queues a record a child sent (see logIntake), re-encoding one
// longer than maxRelayLine. It never blocks: it runs on the child link's
// read loop.
func (f *logForwarder) relay(id uint32, name string, line []byte) {
	if len(line) > maxRelayLine {
		line = parseLogLine(line, id, maxLogParse).encode()
	}
	f.enqueue(fwdRecord{id: id, name: name, line: line})
}

func (f *logForwarder) enqueue(rec fwdRecord) {
	select {
	case f.q <- rec:
	default:
		f.dropped.Add(1)
	}
}

// start begins forwarding through r, to r's parent, and takes in the
// records r's children send.
func (f *logForwarder) start(r *router.Router) {
	in := newLogIntake(r, r.Logger(), f.relay)
	r.Handle(wire.HandleForwardLog, in.handle, router.Descendants(r))
	f.mu.Lock()
	f.r = r
	if a := r.Ancestors(); len(a) > 0 {
		f.parent = a[0]
	}
	f.mu.Unlock()
	go func() {
		defer close(f.done)
		var reported uint64
		for {
			select {
			case rec := <-f.q:
				f.send(f.ctx, r, rec)
				if d := f.dropped.Load(); d != reported {
					reported = d
					note, _ := json.Marshal(map[string]any{"@level": "warn", "@message": "log records dropped: queue full", "dropped": d})
					f.send(f.ctx, r, fwdRecord{id: r.ID(), name: r.Name(), line: note})
				}
			case <-f.stop:
				return
			}
		}
	}()
}

// send forwards one record, waiting for room in the parent link's queue
// (this is the forwarder's own goroutine) until ctx ends.
func (f *logForwarder) send(ctx context.Context, r *router.Router, rec fwdRecord) {
	body, err := wire.Marshal(wire.LogRecord{NodeID: rec.id, Node: rec.name, Line: rec.line})
	if err != nil {
		return
	}
	if err := r.SendContext(ctx, wire.Header{Dst: f.parent, Handle: wire.HandleForwardLog}, body); err != nil {
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
		case rec := <-f.q:
			f.send(ctx, f.r, rec)
			continue
		default:
		}
		break
	}
	f.cancel()
	close(f.stop)
	<-f.done
}

// logIntake takes in the FORWARD_LOG records a node's children send (see
// the comment at the top of this file) and hands each accepted one to
// sink: the root prints it, any other node relays it to its parent. It is
// safe for concurrent use.
type logIntake struct {
	r    *router.Router
	log  hclog.Logger // this node's own: the drop summaries go there
	sink func(id uint32, name string, line []byte)

	mu    sync.Mutex
	links map[*router.Port]*linkLogs
}

// linkLogs is one child link's budget and drop counts.
type linkLogs struct {
	limit   *logsafe.Limiter // records over the budget
	refused *logsafe.Drops   // records malformed or not from the link's subtree
}

func newLogIntake(r *router.Router, log hclog.Logger, sink func(id uint32, name string, line []byte)) *logIntake {
	return &logIntake{r: r, log: log, sink: sink, links: make(map[*router.Port]*linkLogs)}
}

// handle is the FORWARD_LOG handler. It runs on the read loop of the link
// the record came on and never blocks.
func (in *logIntake) handle(m *router.Message) {
	p := m.Port
	if p == nil || p.IsParent {
		return // records come up from children only
	}
	ll := in.link(p)
	if !ll.limit.Allow() {
		return
	}
	var rec wire.LogRecord
	if m.Src != p.PeerID || wire.Unmarshal(m.Payload, &rec) != nil {
		ll.refused.Add(1)
		return
	}
	name := p.PeerName
	if rec.NodeID != p.PeerID {
		via, n, ok := in.r.Lookup(rec.NodeID)
		if !ok || via != p {
			ll.refused.Add(1)
			return
		}
		name = n
	}
	in.sink(rec.NodeID, name, rec.Line)
}

// link returns p's budget, made on p's first record and dropped (its
// pending summaries logged) when p's link closes.
func (in *logIntake) link(p *router.Port) *linkLogs {
	in.mu.Lock()
	defer in.mu.Unlock()
	if ll := in.links[p]; ll != nil {
		return ll
	}
	name := logsafe.Clip(p.PeerName, maxLogKey)
	summary := func(why string) func(uint64) {
		return func(n uint64) {
			in.log.Warn(fmt.Sprintf("dropped %d log records from node %s (%s)", n, name, why), "child_id", p.PeerID)
		}
	}
	ll := &linkLogs{
		limit:   logsafe.NewLimiter(logRate, logBurst, logDropEvery, summary("rate limit")),
		refused: logsafe.NewDrops(logDropEvery, summary("malformed, or not from its subtree")),
	}
	in.links[p] = ll
	go func() {
		<-p.Link.Done()
		in.mu.Lock()
		delete(in.links, p)
		in.mu.Unlock()
		ll.limit.Close()
		ll.refused.Close()
	}()
	return ll
}

// rootPrinter prints the records the root's intake accepts, through the
// logger the root was given (Options.Logger), not n.Log, which carries the
// root's own "node" field. Records wait in a bounded queue for its one
// goroutine, so a stalled stderr never stalls a link's read loop; records
// that find the queue full are dropped and counted. A record is parsed and
// clipped before it is queued, so the queue holds at most logPrintQueue
// records of the clipped size (see parseLogLine), never raw lines of up to
// the largest message.
type rootPrinter struct {
	out     hclog.Logger
	q       chan printRecord
	dropped *logsafe.Drops
}

// printRecord is one record queued for printing at the root, already made
// safe: escaped and clipped.
type printRecord struct {
	id   uint32
	name string // escaped and clipped
	l    logLine
}

// onForwardLog is the root's FORWARD_LOG handler.
func (n *Node) onForwardLog(m *router.Message) { n.logIntake().handle(m) }

// logIntake is the root's intake of forwarded records, made on the first
// record, with the printer that runs until the router closes.
func (n *Node) logIntake() *logIntake {
	n.intakeOnce.Do(func() {
		pr := &rootPrinter{out: n.opts.Logger, q: make(chan printRecord, logPrintQueue)}
		pr.dropped = logsafe.NewDrops(logDropEvery, func(k uint64) {
			n.Log.Warn(fmt.Sprintf("dropped %d log records: printing them fell behind", k))
		})
		n.intake = newLogIntake(n.Router, n.Log, pr.enqueue)
		go pr.run(n.Router.Done())
	})
	return n.intake
}

// enqueue parses and clips one record and queues it for printing, without
// blocking: it runs on the read loop of the link the record came on.
func (pr *rootPrinter) enqueue(id uint32, name string, line []byte) {
	if len(pr.q) == cap(pr.q) {
		pr.dropped.Add(1) // full: not worth parsing
		return
	}
	rec := printRecord{id: id, name: logsafe.Clip(name, maxLogKey), l: parseLogLine(line, id, maxLogParse)}
	select {
	case pr.q <- rec:
	default:
		pr.dropped.Add(1)
	}
}

// run prints queued records until done is closed, then what is left.
func (pr *rootPrinter) run(done <-chan struct{}) {
	defer pr.dropped.Close()
	for {
		select {
		case rec := <-pr.q:
			pr.print(rec)
		case <-done:
			for {
				select {
				case rec := <-pr.q:
					pr.print(rec)
				default:
					return
				}
			}
		}
	}
}

// print writes one record, tagged with its node's name and ID.
func (pr *rootPrinter) print(rec printRecord) {
	l, name := rec.l, rec.name
	args := make([]any, 0, 6+len(l.attrs))
	args = append(args, "node", name, "node_id", rec.id)
	if l.module != "" && l.module != name {
		key := "claimed_module"
		if strings.HasPrefix(l.module, name+".") {
			key = "module" // a named logger of that node
		}
		args = append(args, key, l.module)
	}
	args = append(args, l.attrs...)
	pr.out.Log(l.level, l.msg, args...)
}

// logLine is a record as a remote node sent it, made safe to print.
type logLine struct {
	level  hclog.Level
	msg    string
	module string
	attrs  []any // key, value pairs: keys escaped strings, values escaped strings, bools or nil
}

// reservedLogKeys name the node a record is from, which the root sets
// itself; a record's own attributes of these names are shown as
// claimed_<name>.
var reservedLogKeys = map[string]bool{"node": true, "node_id": true, "module": true}

// parseLogLine reads an hclog JSON record from node id. A line that is not
// JSON, or longer than parseMax, is the message of an info record. The
// record's "node" and "node_id" fields are dropped when they name id (the
// sender's router adds "node"), and shown as claimed_node, claimed_node_id
// otherwise. Clipping is idempotent, so a record parsed and encoded by a
// relaying node parses the same at the next hop.
func parseLogLine(line []byte, id uint32, parseMax int) logLine {
	l := logLine{level: hclog.Info}
	var fields map[string]any
	if len(line) <= parseMax {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		if dec.Decode(&fields) != nil {
			fields = nil
		}
	}
	if fields == nil {
		l.msg = logsafe.ClipBytes(bytes.TrimRight(line, "\n"), maxLogMessage)
		return l
	}
	if lv := hclog.LevelFromString(str(fields["@level"])); lv >= hclog.Trace && lv <= hclog.Error {
		l.level = lv
	}
	l.msg = logsafe.Clip(str(fields["@message"]), maxLogMessage)
	l.module = logsafe.Clip(str(fields["@module"]), maxLogKey)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if len(k) > 0 && k[0] == '@' {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	self := strconv.FormatUint(uint64(id), 10)
	used := 0
	for i, k := range keys {
		v := fields[k]
		if (k == "node" || k == "node_id") && fmt.Sprint(v) == self {
			continue
		}
		if len(l.attrs)/2 >= maxLogAttrs || used >= maxLogAttrBytes {
			l.attrs = append(l.attrs, "attrs_cut", len(keys)-i)
			break
		}
		key := logsafe.Clip(k, maxLogKey)
		if reservedLogKeys[key] {
			key = "claimed_" + key
		}
		val := logValue(v)
		used += len(key)
		if s, ok := val.(string); ok {
			used += len(s)
		}
		l.attrs = append(l.attrs, key, val)
	}
	return l
}

// logValue makes one decoded JSON value safe to print.
func logValue(v any) any {
	switch v := v.(type) {
	case nil, bool:
		return v
	case string:
		return logsafe.Clip(v, maxLogValue)
	case json.Number:
		return logsafe.Clip(string(v), maxLogValue)
	default: // objects and arrays, as compact JSON (which escapes controls as \u001b)
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return "?"
		}
		return logsafe.ClipBytes(bytes.TrimSuffix(b.Bytes(), []byte("\n")), maxLogValue)
	}
}

// encode writes l back as an hclog JSON record, for relaying.
func (l logLine) encode() []byte {
	fields := map[string]any{"@level": l.level.String(), "@message": l.msg}
	if l.module != "" {
		fields["@module"] = l.module
	}
	for i := 0; i+1 < len(l.attrs); i += 2 {
		fields[l.attrs[i].(string)] = l.attrs[i+1]
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return nil
	}
	return b
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
