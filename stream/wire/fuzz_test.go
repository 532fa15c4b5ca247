package wire_test

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/arbor-project/arbor/stream/wire"
)

// Fuzz targets for every decoder in this package. Each must never panic,
// and whatever decodes must re-encode to bytes that decode to the same
// value. The seeds (f.Add) run as part of the normal `go test`; run one
// target for longer with
//
//	go test -run='^$' -fuzz=FuzzReadFrame -fuzztime=30s ./stream/wire/

// fuzzMaxPayload bounds what a fuzzed header may make ReadFrame allocate.
const fuzzMaxPayload = 1 << 16

func FuzzReadFrame(f *testing.F) {
	seeds := [][]byte{
		nil,
		wire.AppendFrame(nil, wire.Header{Dst: 1, Handle: wire.HandlePing}, nil),
		wire.AppendFrame(nil, wire.Header{Dst: 7, Src: 3, Auth: 0, Handle: wire.HandleCall, ReplyTo: 1000}, []byte{0xa0}),
		wire.AppendFrame(nil, wire.Header{Flags: wire.FlagDead, Dst: 3, Src: 7, Auth: 7, Handle: 1000}, wire.EncodeDeadReason("invalid handle")),
		wire.AppendFrame(nil, wire.Header{Flags: wire.FlagReply, Dst: 3, Src: 0, Auth: 0, Handle: 1001}, bytes.Repeat([]byte{1}, 300)),
		// Two frames back to back.
		wire.AppendFrame(wire.AppendFrame(nil, wire.Header{Dst: 1}, []byte("a")), wire.Header{Dst: 2}, []byte("b")),
		frame(0xFFFFFFFF, nil, nil),                   // 4 GiB announced
		frame(fuzzMaxPayload+1, nil, nil),             // one over
		frame(0, func(b []byte) { b[0] = 0 }, nil),    // bad magic
		frame(0, func(b []byte) { b[2] = 1 }, nil),    // bad version
		frame(0, func(b []byte) { b[3] = 0xff }, nil), // unknown flags
		frame(10, nil, []byte("12345")),               // truncated payload
		frame(0, nil, nil)[:wire.HeaderSize-1],        // short header
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var hb [wire.HeaderSize]byte
		r := bytes.NewReader(data)
		h, payload, err := wire.ReadFrame(r, hb[:], fuzzMaxPayload)
		if err != nil {
			switch {
			case err == io.EOF && len(data) == 0:
			case err == io.ErrUnexpectedEOF && len(data) > 0:
			case errors.Is(err, wire.ErrBadMagic), errors.Is(err, wire.ErrBadVersion),
				errors.Is(err, wire.ErrBadFlags), errors.Is(err, wire.ErrTooLarge):
				if len(data) < wire.HeaderSize {
					t.Fatalf("header error %v from %d bytes", err, len(data))
				}
			default:
				t.Fatalf("unexpected error %v (%T) for %d bytes", err, err, len(data))
			}
			if h != (wire.Header{}) || payload != nil {
				t.Fatalf("failed read returned %v and %d bytes", h, len(payload))
			}
			return
		}
		if h.Length > fuzzMaxPayload || int(h.Length) != len(payload) {
			t.Fatalf("header %v with %d payload bytes (max %d)", h, len(payload), fuzzMaxPayload)
		}
		// The frame re-encodes to exactly the bytes it was read from.
		enc := wire.AppendFrame(nil, h, payload)
		if !bytes.Equal(enc, data[:len(enc)]) {
			t.Fatalf("re-encoded frame differs:\n got %x\nwant %x", enc, data[:len(enc)])
		}
		if r.Len() != len(data)-len(enc) {
			t.Fatalf("ReadFrame consumed %d bytes of a %d-byte frame", len(data)-r.Len(), len(enc))
		}
		h2, p2, err := wire.ReadFrame(bytes.NewReader(enc), hb[:], fuzzMaxPayload)
		if err != nil || h2 != h || !bytes.Equal(p2, payload) {
			t.Fatalf("second decode: %v, %d bytes, %v; want %v", h2, len(p2), err, h)
		}
	})
}

// hostilePayloads are seeds every payload fuzzer starts from, beside the
// valid encodings of its own type.
var hostilePayloads = [][]byte{
	nil,
	{0xa0},                         // empty map
	{0xbf, 0x01, 0x07, 0xff},       // indefinite map
	{0xa2, 0x01, 0x07, 0x01, 0x08}, // duplicate key
	{0xd9, 0xd9, 0xf7, 0xa0},       // tagged
	{0xa1, 0x18, 0x63, 0x00},       // unknown field
	{0xa1, 0x01, 0x07, 0x00},       // trailing byte
	{0x9a, 0xff, 0xff, 0xff, 0xff}, // 4 G-element array
	{0xa1, 0x05, 0x9a, 0x00, 0x10, 0x00, 0x01},       // array field over the limit
	{0xa1, 0x03, 0x62, 0xc3, 0x28},                   // invalid UTF-8 in a text field
	{0xa1, 0x01, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0},       // overflowing integer
	{0xa1, 0x02, 0xf6},                               // null field
	{0xa1, 0x02, 0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, // float in an integer field
	nested(wire.MaxNesting + 1),
}

// fuzzPayload fuzzes the decoder of payload type T: no panics, every
// failure matches ErrBadPayload, and decode → encode → decode is stable.
// normalize maps values the encoding cannot tell apart (an empty slice and
// a nil one, both omitted) to one form before they are compared.
func fuzzPayload[T any](f *testing.F, normalize func(*T), seeds ...T) {
	for _, s := range seeds {
		b, err := wire.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range hostilePayloads {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v T
		if err := wire.Unmarshal(data, &v); err != nil {
			if !errors.Is(err, wire.ErrBadPayload) {
				t.Fatalf("error %v does not match ErrBadPayload", err)
			}
			return
		}
		b, err := wire.Marshal(v)
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", v, err)
		}
		var w T
		if err := wire.Unmarshal(b, &w); err != nil {
			t.Fatalf("re-encoding %x of %+v does not decode: %v", b, v, err)
		}
		if normalize != nil {
			normalize(&v)
			normalize(&w)
		}
		if !reflect.DeepEqual(v, w) {
			t.Fatalf("round trip changed the value:\n got %+v\nwant %+v", w, v)
		}
		b2, err := wire.Marshal(w)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("encoding is not stable: %x then %x (%v)", b, b2, err)
		}
	})
}

func FuzzHello(f *testing.F) {
	fuzzPayload(f, func(h *wire.Hello) {
		if len(h.Ancestors) == 0 {
			h.Ancestors = nil // omitempty: [] and absent are the same on the wire
		}
	},
		wire.Hello{Version: 1, ID: 7, Name: "ssh:bastion/ssh:db1", ParentID: 3, Ancestors: []uint32{3, 0}, MaxMessage: wire.DefaultMaxMessage},
		wire.Hello{Version: 1, ID: 1, Name: "local", MaxMessage: 1, AllowSiblingRoutes: true},
		wire.Hello{Version: 255, ID: ^uint32(0), Name: "ünïcödé", ParentID: ^uint32(0), Ancestors: []uint32{^uint32(0)}, MaxMessage: ^uint32(0)},
	)
}

func FuzzHelloAck(f *testing.F) {
	fuzzPayload[wire.HelloAck](f, nil,
		wire.HelloAck{Version: 1, ID: 7, PID: 4242},
		wire.HelloAck{Version: 1, ID: 7, PID: -1},
		wire.HelloAck{},
	)
}

func FuzzAddRoute(f *testing.F) {
	fuzzPayload[wire.AddRoute](f, nil,
		wire.AddRoute{ID: 1000, Name: "ssh:db1/sudo:postgres"},
		wire.AddRoute{ID: 1},
	)
}

func FuzzDelRoute(f *testing.F) {
	fuzzPayload[wire.DelRoute](f, nil,
		wire.DelRoute{ID: 9, Cause: "link from node 2 to node 9 (local) lost: EOF"},
		wire.DelRoute{ID: 9},
	)
}

func FuzzAllocateIDRequest(f *testing.F) {
	fuzzPayload[wire.AllocateIDRequest](f, nil,
		wire.AllocateIDRequest{Count: wire.IDBlockSize},
		wire.AllocateIDRequest{},
	)
}

func FuzzIDBlock(f *testing.F) {
	fuzzPayload[wire.IDBlock](f, nil,
		wire.IDBlock{Start: 1001, Count: 1000},
		wire.IDBlock{Start: ^uint32(0), Count: ^uint32(0)},
	)
}

// FuzzDeadReason fuzzes both directions of a dead reply's payload: any
// bytes decode to a valid reason or fail cleanly, and any reason a router
// encodes decodes back, valid UTF-8 or not.
func FuzzDeadReason(f *testing.F) {
	for _, s := range []string{
		"invalid handle",
		"refused by policy",
		"no route to 12, my ID is 3",
		"message too large (max 67108864 bytes)",
		"routing mode prevents forwarding from node 4 to node 5 (between child links to 4 and 5), my ID is 1",
		"",
	} {
		f.Add(wire.EncodeDeadReason(s))
		f.Add([]byte(s))
	}
	for _, b := range hostilePayloads {
		f.Add(b)
	}
	f.Add([]byte{0x7f, 0x61, 0x61, 0xff}) // indefinite text
	f.Add([]byte{0x62, 0xc3, 0x28})       // invalid UTF-8
	f.Add([]byte("a\xffb"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Decode direction.
		if s, err := wire.DecodeDeadReason(data); err != nil {
			if !errors.Is(err, wire.ErrBadPayload) {
				t.Fatalf("error %v does not match ErrBadPayload", err)
			}
		} else {
			if !utf8.ValidString(s) {
				t.Fatalf("decoded invalid UTF-8 %q", s)
			}
			enc := wire.EncodeDeadReason(s)
			if got, err := wire.DecodeDeadReason(enc); err != nil || got != s {
				t.Fatalf("reason %q re-encoded as %x decodes to %q, %v", s, enc, got, err)
			}
		}
		// Encode direction: the payload bytes used as a reason.
		reason := string(data)
		enc := wire.EncodeDeadReason(reason)
		got, err := wire.DecodeDeadReason(enc)
		if err != nil {
			t.Fatalf("reason %q encodes as %x, which does not decode: %v", reason, enc, err)
		}
		if utf8.ValidString(reason) && got != reason {
			t.Fatalf("reason %q decodes as %q", reason, got)
		}
	})
}

// The payloads of calls, cancels and log records (calls.go). Args and
// Result are raw CBOR carried through unchanged; the decoder still applies
// its limits to them.

func FuzzCallRequest(f *testing.F) {
	args, _ := wire.Marshal(map[string]any{"argv": []string{"uname", "-a"}, "dir": "/"})
	fuzzPayload[wire.CallRequest](f, nil,
		wire.CallRequest{Fn: "exec", Args: args, DeadlineUnixNano: 1_700_000_000_000_000_000},
		wire.CallRequest{Fn: "ping"},
	)
}

func FuzzCallReply(f *testing.F) {
	result, _ := wire.Marshal([]any{uint64(0), []byte("out"), "err"})
	fuzzPayload[wire.CallReply](f, nil,
		wire.CallReply{Result: result},
		wire.CallReply{Error: &wire.CallError{NodeID: 7, Node: "ssh:db1", Fn: "exec", Message: "exit status 1", Kind: "error"}},
		wire.CallReply{},
	)
}

func FuzzCancel(f *testing.F) {
	fuzzPayload[wire.Cancel](f, nil, wire.Cancel{ReplyTo: 1000}, wire.Cancel{})
}

func FuzzLogRecord(f *testing.F) {
	fuzzPayload[wire.LogRecord](f, nil,
		wire.LogRecord{NodeID: 5, Node: "local", Line: []byte(`{"@level":"info","@message":"hi"}`)},
		wire.LogRecord{},
	)
}
