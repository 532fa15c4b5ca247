package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/arbor-project/arbor/agent"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// forgeArgs asks test.forgelog, run on a hostile node, to send crafted
// FORWARD_LOG frames.
type forgeArgs struct {
	Line   []byte // the record (hclog JSON or anything else)
	Node   string // the name the record claims
	NodeID uint32 // the node the record claims to be from (0: the sender's real ID)
	Claim0 bool   // claim node 0, the root, whatever NodeID says
	Count  int    // how many times to send it (0: once)
	ToRoot bool   // address node 0 instead of the parent
}

// registerHostile adds test.forgelog to the agent the test binary runs: a
// compromised node that sends FORWARD_LOG frames of its own making with
// its router, as fast as its parent link takes them.
func registerHostile(reg *funcs.Registry) {
	funcs.Register(reg, "test.forgelog", func(ctx context.Context, c *funcs.Call, a forgeArgs) (int, error) {
		r := c.Router
		id := r.ID()
		if a.NodeID != 0 {
			id = a.NodeID
		}
		if a.Claim0 {
			id = wire.RootID
		}
		body, err := wire.Marshal(wire.LogRecord{NodeID: id, Node: a.Node, Line: a.Line})
		if err != nil {
			return 0, err
		}
		dst := r.Ancestors()[0]
		if a.ToRoot {
			dst = wire.RootID
		}
		n := max(a.Count, 1)
		for i := range n {
			if err := r.SendContext(ctx, wire.Header{Dst: dst, Handle: wire.HandleForwardLog}, body); err != nil {
				return i, err
			}
		}
		return n, nil
	})
}

// hostileTree starts a root whose log (hclog's text format, as on a
// terminal) is captured, and a chain of local agents below it; the last
// one is the hostile node.
func hostileTree(t *testing.T, depth int) (*syncBuf, []*arborctx.Remote, context.Context) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := newSyncBuf()
	log := hclog.New(&hclog.LoggerOptions{Name: "arbor", Output: logs, Level: hclog.Info})
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: log, LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	hops := make([]spawn.Hop, depth)
	for i := range hops {
		hops[i] = spawn.Hop{Method: "local"}
	}
	chain, err := root.SpawnPath(ctx, hops)
	if err != nil {
		t.Fatal(err)
	}
	return logs, chain, ctx
}

func forge(t *testing.T, ctx context.Context, node *arborctx.Remote, a forgeArgs) {
	t.Helper()
	var sent int
	if err := node.Call(ctx, "test.forgelog", a, &sent); err != nil {
		t.Fatalf("test.forgelog on %s: %v (sent %d)", node.Name(), err, sent)
	}
}

func record(t *testing.T, fields map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// linesWith returns the lines of s that contain marker.
func linesWith(s, marker string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, marker) {
			out = append(out, l)
		}
	}
	return out
}

// checkPrintable fails t if the root's log holds anything a terminal would
// act on: control bytes other than the newline ending each line, C1
// controls, invalid UTF-8.
func checkPrintable(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("the root's log is not valid UTF-8:\n%q", s)
	}
	for i, r := range s {
		if r < 0x20 && r != '\n' || r == 0x7f || 0x80 <= r && r <= 0x9f {
			t.Errorf("the root's log holds control %U at byte %d:\n%q", r, i, s)
			return
		}
	}
}

// TestForwardedLogCannotLie: a compromised node's FORWARD_LOG records
// cannot name another node, start a line of their own, or reach the
// root's terminal with escape sequences. Each record is sent by a real
// agent with its router, as raw frames.
func TestForwardedLogCannotLie(t *testing.T) {
	logs, chain, ctx := hostileTree(t, 1)
	leaf := chain[0]
	real := fmt.Sprintf("node=%s node_id=%d", leaf.Name(), leaf.ID())

	t.Run("forged node", func(t *testing.T) {
		forge(t, ctx, leaf, forgeArgs{Node: "root", Line: record(t, map[string]any{
			"@level": "error", "@message": "marker-node", "@module": "root", "node": "root", "node_id": 0,
		})})
		logs.waitFor(t, "marker-node")
		got := linesWith(logs.String(), "marker-node")
		if len(got) != 1 {
			t.Fatalf("want one line, got %q", got)
		}
		line := got[0]
		if !strings.Contains(line, real) {
			t.Errorf("record not tagged with the sender's real name and ID (%s):\n%s", real, line)
		}
		if regexp.MustCompile(`(^|[^_])node=root\b`).MatchString(line) || strings.Contains(line, " node_id=0") {
			t.Errorf("a forged node name reached the root's log unlabelled:\n%s", line)
		}
		for _, want := range []string{"claimed_node=root", "claimed_node_id=0", "claimed_module=root"} {
			if !strings.Contains(line, want) {
				t.Errorf("the record's own claim is not shown as %s:\n%s", want, line)
			}
		}
	})

	t.Run("newline", func(t *testing.T) {
		forge(t, ctx, leaf, forgeArgs{Line: record(t, map[string]any{
			"@level":                         "info",
			"@message":                       "marker-newline\n[ERROR] arbor: forged message\r\n",
			"key\n[ERROR] arbor: forged key": "value\n[ERROR] arbor: forged value",
		})})
		logs.waitFor(t, "marker-newline")
		s := logs.String()
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "forged") && !strings.Contains(l, "marker-newline") {
				t.Errorf("a newline in a record forged a line of its own:\n%s", l)
			}
			if strings.Contains(l, "  | ") {
				t.Errorf("a value was printed over several lines:\n%s", s)
			}
		}
		got := linesWith(s, "marker-newline")
		if len(got) != 1 {
			t.Fatalf("want one line, got %q", got)
		}
		for _, want := range []string{
			`marker-newline\n[ERROR] arbor: forged message\r\n`,
			`key\n[ERROR] arbor: forged key=`,
			`value\n[ERROR] arbor: forged value`,
		} {
			if !strings.Contains(got[0], want) {
				t.Errorf("line lacks %s:\n%s", want, got[0])
			}
		}
		checkPrintable(t, s)
	})

	t.Run("escape sequences", func(t *testing.T) {
		forge(t, ctx, leaf, forgeArgs{Line: record(t, map[string]any{
			"@level":                  "warn",
			"@message":                "marker-esc \x1b[2J\x1b[H\x1b]0;owned\x07 \u009b31m \u202eevil",
			"\x1b[31mkey":             "\x1b[8mhidden\x1b[0m",
			"nested":                  map[string]any{"deep": "\x1b[2J", "list": []any{"\x1bc", 1}},
			"tab\tand del\x7f in key": true,
		})})
		// Text that is not JSON is printed too: here with bytes that are not UTF-8.
		forge(t, ctx, leaf, forgeArgs{Line: []byte("marker-raw \x1b[2J\xff\xfe\x9b2J\n")})
		logs.waitFor(t, "marker-esc", "marker-raw")
		s := logs.String()
		checkPrintable(t, s)
		for _, want := range []string{
			`marker-esc \x1b[2J\x1b[H\x1b]0;owned\x07 \u009b31m \u202eevil`,
			`\x1b[31mkey=`, `\x1b[8mhidden\x1b[0m`, `tab\tand del\x7f in key=true`,
			`nested="{\"deep\":\"\u001b[2J\",\"list\":[\"\u001bc\",1]}"`, // JSON's own escapes
			`marker-raw \x1b[2J\xff\xfe\x9b2J`,
		} {
			if !strings.Contains(s, want) {
				t.Errorf("log lacks the escaped text %s:\n%s", want, s)
			}
		}
		for _, marker := range []string{"marker-esc", "marker-raw"} {
			if got := linesWith(s, marker); len(got) != 1 || !strings.Contains(got[0], real) {
				t.Errorf("want one line tagged %s, got %q", real, got)
			}
		}
	})

	t.Run("long message", func(t *testing.T) {
		forge(t, ctx, leaf, forgeArgs{Line: record(t, map[string]any{
			"@message": "marker-long " + strings.Repeat("x", 1<<20),
		})})
		logs.waitFor(t, "marker-long")
		got := linesWith(logs.String(), "marker-long")
		if len(got) != 1 {
			t.Fatalf("want one line, got %d", len(got))
		}
		if len(got[0]) > 8<<10 || !regexp.MustCompile(`…\[\d+ bytes cut\]`).MatchString(got[0]) {
			t.Errorf("a 1 MiB message printed as %d bytes, want it clipped with a marker: %.200q…", len(got[0]), got[0])
		}
	})
}

// summaries sums the N of every "dropped N log records from node <name>
// (<why>)" line in s that node from logged.
func summaries(s, from, name, why string) uint64 {
	re := regexp.MustCompile(`dropped (\d+) log records from node ` + regexp.QuoteMeta(name) + ` \(` + regexp.QuoteMeta(why) + `\)`)
	var sum uint64
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, from) {
			continue
		}
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			sum += n
		}
	}
	return sum
}

const floodRecords = 100_000

// TestForwardedLogFloodIsLimited: a node sending 100k records as fast as
// its link takes them gets a bounded number printed; every other record
// is counted in "dropped N log records from node X (rate limit)"
// summaries, at the root, so nothing is lost without a count.
func TestForwardedLogFloodIsLimited(t *testing.T) {
	logs, chain, ctx := hostileTree(t, 1)
	leaf := chain[0]
	forge(t, ctx, leaf, forgeArgs{Count: floodRecords, Line: record(t, map[string]any{"@message": "marker-flood"})})
	rootSays := "node=0"
	var printed, dropped int
	logs.until(t, "every flooded record printed or counted", func(s string) bool {
		printed = len(linesWith(s, "marker-flood"))
		dropped = int(summaries(s, rootSays, leaf.Name(), "rate limit"))
		return printed+dropped >= floodRecords
	})
	t.Logf("%d records printed, %d dropped and counted", printed, dropped)
	if printed >= floodRecords/2 {
		t.Errorf("%d of %d flooded records printed: the link's budget did not hold", printed, floodRecords)
	}
	if dropped == 0 {
		t.Errorf("no drop summary")
	}
}

// TestRelayingNodeLimitsItsChildren: the budget holds at every node that
// relays records, not only at the root: a leaf flooding its parent is cut
// down there, and the parent's summary reaches the root tagged with the
// parent's name.
func TestRelayingNodeLimitsItsChildren(t *testing.T) {
	logs, chain, ctx := hostileTree(t, 2)
	mid, leaf := chain[0], chain[1]
	forge(t, ctx, leaf, forgeArgs{Count: floodRecords, Line: record(t, map[string]any{"@message": "marker-flood"})})
	midSays := fmt.Sprintf("node=%s node_id=%d", mid.Name(), mid.ID())
	queueFull := regexp.MustCompile(`log records dropped: queue full: .*dropped=(\d+)`)
	var printed, atMid, atRoot, queued int
	logs.until(t, "every flooded record printed or counted", func(s string) bool {
		printed = len(linesWith(s, "marker-flood"))
		atMid = int(summaries(s, midSays, leaf.Name(), "rate limit"))
		atRoot = int(summaries(s, "node=0", mid.Name(), "rate limit"))
		queued = 0
		for _, m := range queueFull.FindAllStringSubmatch(s, -1) {
			n, _ := strconv.Atoi(m[1])
			queued = max(queued, n)
		}
		return printed+atMid+atRoot+queued >= floodRecords
	})
	t.Logf("%d records printed; dropped: %d by %s, %d by the root, %d in %s's queue", printed, atMid, mid.Name(), atRoot, queued, mid.Name())
	if atMid == 0 {
		t.Errorf("no drop summary from the relaying node %s", mid.Name())
	}
	if printed >= floodRecords/2 {
		t.Errorf("%d of %d flooded records printed", printed, floodRecords)
	}
}

// TestForwardedLogFromOutsideSubtree: a record is accepted only from the
// child at the other end of the link, about a node in its own subtree. A
// leaf claiming to be the root, or addressing the root past its parent,
// gets nothing printed, and the drop is counted.
func TestForwardedLogFromOutsideSubtree(t *testing.T) {
	logs, chain, ctx := hostileTree(t, 2)
	mid, leaf := chain[0], chain[1]
	const why = "malformed, or not from its subtree"
	forge(t, ctx, leaf, forgeArgs{Claim0: true, Line: record(t, map[string]any{"@message": "marker-claims-root"})})
	forge(t, ctx, leaf, forgeArgs{NodeID: mid.ID(), Line: record(t, map[string]any{"@message": "marker-claims-parent"})})
	forge(t, ctx, leaf, forgeArgs{ToRoot: true, Line: record(t, map[string]any{"@message": "marker-past-parent"})})
	midSays := fmt.Sprintf("node=%s node_id=%d", mid.Name(), mid.ID())
	logs.until(t, "the drops counted", func(s string) bool {
		return summaries(s, midSays, leaf.Name(), why) >= 2 && summaries(s, "node=0", mid.Name(), why) >= 1
	})
	if s := logs.String(); strings.Contains(s, "marker-") {
		t.Errorf("a record from outside its sender's subtree was printed:\n%s", s)
	}
}

// until waits until cond holds for the buffer's text, looking again at
// most every 50 ms while writes come (a flood's log is long: scanning it
// on every write would cost more than the flood). It fails only when
// nothing was written for patience: the wait guards against a hang and
// never bounds how much a slow machine takes to get through a flood.
func (b *syncBuf) until(t *testing.T, what string, cond func(string) bool) {
	t.Helper()
	idle := time.NewTimer(patience)
	defer idle.Stop()
	for !cond(b.String()) {
		select {
		case <-b.ch:
			idle.Reset(patience)
			time.Sleep(50 * time.Millisecond)
		case <-idle.C:
			s := b.String()
			t.Fatalf("nothing logged for %s while waiting for %s; the log ends:\n%s", patience, what, s[max(0, len(s)-4000):])
		}
	}
}
