package wire_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/arbor-project/arbor/stream/wire"
)

// TestHeaderLayout pins the 28-byte header byte by byte, as PROTOCOL.md
// describes it.
func TestHeaderLayout(t *testing.T) {
	h := wire.Header{
		Flags:   wire.FlagDead | wire.FlagReply,
		Dst:     0x01020304,
		Src:     0x05060708,
		Auth:    0x090a0b0c,
		Handle:  0x0d0e0f10,
		ReplyTo: 0x11121314,
		Length:  0x15161718,
	}
	var b [wire.HeaderSize]byte
	h.Put(b[:])
	want := "4152" + "02" + "03" + // "AR", version 2, flags
		"01020304" + "05060708" + "090a0b0c" + // dst, src, auth
		"0d0e0f10" + "11121314" + "15161718" // handle, reply_to, length
	if got := hex.EncodeToString(b[:]); got != want {
		t.Fatalf("header bytes\n got %s\nwant %s", got, want)
	}
	if wire.HeaderSize != 28 {
		t.Fatalf("HeaderSize = %d, want 28", wire.HeaderSize)
	}
	got, err := wire.ParseHeader(b[:], 0xFFFFFFFF)
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("ParseHeader = %+v, want %+v", got, h)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xA5}, 1<<20)
	tests := []struct {
		name    string
		h       wire.Header
		payload []byte
	}{
		{"empty payload", wire.Header{Dst: 1, Src: 0, Auth: 0, Handle: wire.HandlePing}, nil},
		{"small", wire.Header{Dst: 7, Src: 3, Auth: 0, Handle: wire.HandleCall, ReplyTo: 1000}, []byte("hello")},
		{"dead reply", wire.Header{Flags: wire.FlagDead, Dst: 3, Src: 7, Auth: 7, Handle: 1000}, wire.EncodeDeadReason("invalid handle")},
		{"reply flag", wire.Header{Flags: wire.FlagReply, Dst: 3, Src: 7, Auth: 7, Handle: 1001}, []byte{0xf6}},
		{"all fields max", wire.Header{Flags: wire.FlagDead | wire.FlagReply, Dst: ^uint32(0), Src: ^uint32(0), Auth: ^uint32(0), Handle: ^uint32(0), ReplyTo: ^uint32(0)}, []byte{1, 2, 3}},
		{"1 MiB", wire.Header{Dst: 2, Src: 1, Auth: 0, Handle: 5000}, big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Length in the caller's header is ignored: AppendFrame sets it.
			h := tt.h
			h.Length = 12345
			b := wire.AppendFrame([]byte("prefix"), h, tt.payload)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendFrame did not append")
			}
			b = b[len("prefix"):]
			if len(b) != wire.HeaderSize+len(tt.payload) {
				t.Fatalf("frame is %d bytes, want %d", len(b), wire.HeaderSize+len(tt.payload))
			}
			var hb [wire.HeaderSize]byte
			got, payload, err := wire.ReadFrame(bytes.NewReader(b), hb[:], uint32(len(tt.payload)))
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			want := tt.h
			want.Length = uint32(len(tt.payload))
			if got != want {
				t.Errorf("header = %+v, want %+v", got, want)
			}
			if !bytes.Equal(payload, tt.payload) {
				t.Errorf("payload differs (%d bytes, want %d)", len(payload), len(tt.payload))
			}
			if got.IsDead() != (tt.h.Flags&wire.FlagDead != 0) {
				t.Errorf("IsDead = %v", got.IsDead())
			}
		})
	}

	// Back to back on one stream, then a clean EOF between frames.
	var stream []byte
	for _, tt := range tests {
		stream = wire.AppendFrame(stream, tt.h, tt.payload)
	}
	r := bytes.NewReader(stream)
	var hb [wire.HeaderSize]byte
	for _, tt := range tests {
		h, p, err := wire.ReadFrame(r, hb[:], wire.DefaultMaxMessage)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if h.Handle != tt.h.Handle || !bytes.Equal(p, tt.payload) {
			t.Fatalf("%s: got handle %d and %d bytes", tt.name, h.Handle, len(p))
		}
	}
	if _, _, err := wire.ReadFrame(r, hb[:], wire.DefaultMaxMessage); err != io.EOF {
		t.Fatalf("after the last frame: err = %v, want io.EOF", err)
	}
}

// frame builds a raw frame: a valid header for length n, patched by edit,
// followed by body.
func frame(n uint32, edit func(b []byte), body []byte) []byte {
	b := make([]byte, wire.HeaderSize)
	wire.Header{Dst: 1, Src: 0, Auth: 0, Handle: wire.HandleCall, Length: n}.Put(b)
	if edit != nil {
		edit(b)
	}
	return append(b, body...)
}

func TestReadFrameErrors(t *testing.T) {
	const max = 1024
	tests := []struct {
		name    string
		in      []byte
		wantErr error
		tooBig  uint64 // for *TooLargeError: the announced size
	}{
		{"empty input", nil, io.EOF, 0},
		{"short header", frame(0, nil, nil)[:10], io.ErrUnexpectedEOF, 0},
		{"one byte short", frame(0, nil, nil)[:wire.HeaderSize-1], io.ErrUnexpectedEOF, 0},
		{"bad magic first byte", frame(0, func(b []byte) { b[0] = 'X' }, nil), wire.ErrBadMagic, 0},
		{"bad magic second byte", frame(0, func(b []byte) { b[1] = 'X' }, nil), wire.ErrBadMagic, 0},
		{"zero magic", frame(0, func(b []byte) { b[0], b[1] = 0, 0 }, nil), wire.ErrBadMagic, 0},
		{"version 0", frame(0, func(b []byte) { b[2] = 0 }, nil), wire.ErrBadVersion, 0},
		{"version 1", frame(0, func(b []byte) { b[2] = 1 }, nil), wire.ErrBadVersion, 0},
		{"version 3", frame(0, func(b []byte) { b[2] = 3 }, nil), wire.ErrBadVersion, 0},
		{"version 255", frame(0, func(b []byte) { b[2] = 255 }, nil), wire.ErrBadVersion, 0},
		{"unknown flag bit 2", frame(0, func(b []byte) { b[3] = 0x04 }, nil), wire.ErrBadFlags, 0},
		{"unknown flag bit 7", frame(0, func(b []byte) { b[3] = 0x80 }, nil), wire.ErrBadFlags, 0},
		{"known and unknown flags", frame(0, func(b []byte) { b[3] = wire.FlagDead | 0x10 }, nil), wire.ErrBadFlags, 0},
		{"truncated payload", frame(10, nil, []byte("12345")), io.ErrUnexpectedEOF, 0},
		{"header only, payload missing", frame(10, nil, nil), io.ErrUnexpectedEOF, 0},
		{"length max+1", frame(max+1, nil, nil), wire.ErrTooLarge, max + 1},
		{"length 4 GiB", frame(0xFFFFFFFF, nil, nil), wire.ErrTooLarge, 0xFFFFFFFF},
		// The header is judged before the length: a bad magic with a huge
		// length is a bad magic.
		{"bad magic and huge length", frame(0xFFFFFFFF, func(b []byte) { b[0] = 0 }, nil), wire.ErrBadMagic, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hb [wire.HeaderSize]byte
			h, payload, err := wire.ReadFrame(bytes.NewReader(tt.in), hb[:], max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if h != (wire.Header{}) || payload != nil {
				t.Errorf("failed read returned header %+v and %d payload bytes", h, len(payload))
			}
			var tl *wire.TooLargeError
			if errors.As(err, &tl) != (tt.tooBig != 0) {
				t.Fatalf("err = %v (%T): TooLargeError expected: %v", err, err, tt.tooBig != 0)
			}
			if tl != nil && (tl.Size != tt.tooBig || tl.Max != max) {
				t.Errorf("TooLargeError = %+v, want size %d max %d", *tl, tt.tooBig, max)
			}
		})
	}
}

func TestReadFrameLengthAtMax(t *testing.T) {
	const max = 64
	body := bytes.Repeat([]byte{'x'}, max)
	var hb [wire.HeaderSize]byte
	_, p, err := wire.ReadFrame(bytes.NewReader(frame(max, nil, body)), hb[:], max)
	if err != nil || len(p) != max {
		t.Fatalf("frame of exactly max: %d bytes, err %v", len(p), err)
	}
}

func TestParseHeaderShort(t *testing.T) {
	for _, n := range []int{0, 1, wire.HeaderSize - 1} {
		_, err := wire.ParseHeader(make([]byte, n), wire.DefaultMaxMessage)
		if !errors.Is(err, wire.ErrShortHeader) {
			t.Errorf("%d bytes: err = %v, want ErrShortHeader", n, err)
		}
	}
}

// countingReader records how many bytes ReadFrame asked for.
type countingReader struct {
	r         io.Reader
	requested int // sum of len(p) over all Read calls
	largest   int // largest single len(p)
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.requested += len(p)
	if len(p) > c.largest {
		c.largest = len(p)
	}
	return c.r.Read(p)
}

// TestReadFrame4GiBNotAllocated: a header announcing 0xFFFFFFFF bytes is
// refused from the header alone: nothing beyond the header is read or
// allocated.
func TestReadFrame4GiBNotAllocated(t *testing.T) {
	hostile := frame(0xFFFFFFFF, nil, []byte("the peer would stream 4 GiB from here"))
	var hb [wire.HeaderSize]byte

	cr := &countingReader{r: bytes.NewReader(hostile)}
	_, p, err := wire.ReadFrame(cr, hb[:], wire.DefaultMaxMessage)
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) || tl.Size != 0xFFFFFFFF || tl.Max != wire.DefaultMaxMessage {
		t.Fatalf("err = %v, want *TooLargeError{Size: 4294967295, Max: %d}", err, wire.DefaultMaxMessage)
	}
	if p != nil {
		t.Fatal("a payload was returned")
	}
	if cr.requested != wire.HeaderSize || cr.largest != wire.HeaderSize {
		t.Fatalf("ReadFrame asked for %d bytes (largest read %d); want only the %d-byte header",
			cr.requested, cr.largest, wire.HeaderSize)
	}

	r := bytes.NewReader(hostile)
	read := func() {
		r.Reset(hostile)
		if _, _, err := wire.ReadFrame(r, hb[:], wire.DefaultMaxMessage); err == nil {
			t.Fatal("hostile frame accepted")
		}
	}
	// One small allocation at most: the *TooLargeError itself.
	if n := testing.AllocsPerRun(100, read); n > 1 {
		t.Errorf("%v allocations per rejected frame, want at most 1", n)
	}
	// And few bytes: a 4 GiB (or even a 64 MiB) buffer would show here.
	const runs = 100
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		read()
	}
	runtime.ReadMemStats(&after)
	if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 1024 {
		t.Errorf("%d bytes allocated per rejected frame, want under 1 KiB", perRun)
	}
}

func TestTooLargeError(t *testing.T) {
	err := error(&wire.TooLargeError{Size: 70 << 20, Max: wire.DefaultMaxMessage})
	if !errors.Is(err, wire.ErrTooLarge) {
		t.Error("TooLargeError does not match ErrTooLarge")
	}
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) {
		t.Fatal("errors.As failed")
	}
	if got, want := tl.Reason(), "message too large (max 67108864 bytes)"; got != want {
		t.Errorf("Reason() = %q, want %q", got, want)
	}
	if got, want := err.Error(), "arbor: message too large (max 67108864 bytes): 73400320 bytes"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestHeaderString(t *testing.T) {
	h := wire.Header{Flags: wire.FlagDead, Dst: 1, Src: 2, Auth: 3, Handle: 4, ReplyTo: 5, Length: 6}
	if got, want := h.String(), "msg(dst=1 src=2 auth=3 handle=4 reply_to=5 flags=0x1 len=6)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestWellKnownHandles(t *testing.T) {
	handles := map[uint32]string{
		wire.HandleHello:      "HELLO",
		wire.HandleCall:       "CALL",
		wire.HandleAddRoute:   "ADD_ROUTE",
		wire.HandleDelRoute:   "DEL_ROUTE",
		wire.HandleAllocateID: "ALLOCATE_ID",
		wire.HandleForwardLog: "FORWARD_LOG",
		wire.HandleShutdown:   "SHUTDOWN",
		wire.HandleCancel:     "CANCEL",
		wire.HandlePing:       "PING",
		wire.HandleSpawn:      "SPAWN",
		wire.HandleChannel:    "CHANNEL",
	}
	if len(handles) != 11 {
		t.Fatalf("two well-known handles share a number")
	}
	for h, name := range handles {
		if h == wire.HandleNone || h >= wire.FirstDynamicHandle {
			t.Errorf("%s = %d is outside the well-known range", name, h)
		}
		if got := wire.HandleName(h); got != name {
			t.Errorf("HandleName(%d) = %q, want %q", h, got, name)
		}
	}
	for _, h := range []uint32{wire.HandleNone, 99, wire.FirstDynamicHandle, ^uint32(0)} {
		if got := wire.HandleName(h); got != "" {
			t.Errorf("HandleName(%d) = %q, want \"\"", h, got)
		}
	}
}

// TestDeadReplyExample is the worked example in PROTOCOL.md, section 3.1.
func TestDeadReplyExample(t *testing.T) {
	h := wire.Header{Flags: wire.FlagDead, Dst: 0, Src: 7, Auth: 7, Handle: 1000, ReplyTo: wire.HandleNone}
	got := hex.EncodeToString(wire.AppendFrame(nil, h, wire.EncodeDeadReason("invalid handle")))
	want := "41520201" + "00000000" + "00000007" + "00000007" +
		"000003e8" + "00000000" + "0000000f" +
		"6e" + hex.EncodeToString([]byte("invalid handle"))
	if got != want {
		t.Fatalf("dead reply frame\n got %s\nwant %s", got, want)
	}
}
