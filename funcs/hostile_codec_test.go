package funcs_test

import (
	"encoding/hex"
	"strings"
	"sync/atomic"
	"testing"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// hostilePayloads are CALL bodies a compromised node may send: not CBOR,
// CBOR of the wrong shape, and shapes next to the ones the call codec
// reads by hand (stream/wire/callcodec.go).
var hostilePayloads = []string{
	"",                              // nothing
	"ff",                            // a break with no container
	"a1",                            // a map cut short
	"a101",                          // a key without its value
	"a10101",                        // Fn an integer
	"a1016261ff",                    // Fn not UTF-8
	"a101c06161",                    // a tag
	"a1019f00ff",                    // an indefinite array
	"a201616101616a",                // a key twice
	"a1017bffffffffffffffff",        // a string longer than anything
	"a1033bffffffffffffffff",        // a deadline below int64
	"a10161610000",                  // bytes after the map
	strings.Repeat("81", 40) + "00", // nesting past the limit
}

// TestHostileCallPayloads: a node that completed the handshake sends
// CALLs whose bodies are garbage; each is answered with a bad-arguments
// error naming the payload, the node's link stays up, and an honest node
// is still served.
func TestHostileCallPayloads(t *testing.T) {
	q := newQuotaTree(t)
	for _, s := range hostilePayloads {
		body, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		m, err := q.hostile.R.Request(ctx(t), 0, wire.HandleCall, body)
		if err != nil {
			t.Fatalf("CALL %q: %v", s, err)
		}
		rep, err := wire.DecodeCallReply(m.Payload)
		if err != nil || rep.Error == nil || rep.Error.Kind != funcs.KindBadArgs || !strings.Contains(rep.Error.Message, "bad CALL payload") {
			t.Fatalf("CALL %q answered %+v (%v), want a bad-arguments error", s, rep.Error, err)
		}
	}
	q.honestStillServed(t)
}

// TestHostileCallReplies: a node answers calls with garbage or lies; the
// caller gets an error naming the node it called and the function, never
// a result, and never the node or function the answer claims.
func TestHostileCallReplies(t *testing.T) {
	q := newQuotaTree(t)
	var next atomic.Value // the hex of the next reply
	q.hostile.R.Handle(wire.HandleCall, func(m *router.Message) {
		body, _ := hex.DecodeString(next.Load().(string))
		_ = q.hostile.R.Reply(m, body)
	}, router.Anyone)
	rm := arborctx.New(q.root.R, q.root.M, q.hostile.ID(), "hostile")
	// Besides garbage: an empty error and an
	// error that claims another node and function.
	lie, _ := wire.Marshal(wire.CallReply{Error: &wire.CallError{NodeID: 1, Node: "honest", Fn: "t.block", Message: "x"}})
	for _, s := range append(hostilePayloads, "a102a0", hex.EncodeToString(lie)) {
		next.Store(s)
		var out string
		err := rm.Call(ctx(t), "t.echo", "x", &out)
		if err == nil {
			t.Fatalf("reply %q: call returned %q and no error", s, out)
		}
		if !strings.Contains(err.Error(), "hostile") || !strings.Contains(err.Error(), "t.echo") || strings.Contains(err.Error(), "t.block") {
			t.Fatalf("reply %q: error %q does not name the node and the function", s, err)
		}
	}
	q.honestStillServed(t)
}
