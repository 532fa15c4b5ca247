package wire_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/arbor-project/arbor/stream/wire"
)

// TestTunnelHeaderLayout pins the 8-byte tunnel frame header, as
// PROTOCOL.md section 1.2 describes it.
func TestTunnelHeaderLayout(t *testing.T) {
	got := hex.EncodeToString(wire.AppendTunnelFrame(nil, []byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}))
	want := "4154" + "02" + "00" + "0000000c" + // "AT", version 2, flags 0, length 12
		"000100010000000100000000" // a yamux window update with SYN for stream 1
	if got != want {
		t.Fatalf("tunnel frame\n got %s\nwant %s", got, want)
	}
	if wire.TunnelHeaderSize != 8 || wire.MaxTunnelPayload != 1<<20 {
		t.Fatalf("TunnelHeaderSize %d, MaxTunnelPayload %d; want 8 and 1048576", wire.TunnelHeaderSize, wire.MaxTunnelPayload)
	}
}

// tunnel returns a tunnel header announcing n bytes, edited, then body.
func tunnel(n uint32, edit func(b []byte), body []byte) []byte {
	b := make([]byte, wire.TunnelHeaderSize)
	wire.PutTunnelHeader(b, int(n))
	if edit != nil {
		edit(b)
	}
	return append(b, body...)
}

func TestReadLinkHeader(t *testing.T) {
	const max = 1024
	msg := wire.Header{Flags: wire.FlagReply, Dst: 7, Src: 3, Auth: 3, Handle: 1000, ReplyTo: 9}
	tests := []struct {
		name    string
		in      []byte
		kind    wire.FrameKind
		h       wire.Header
		wantErr error
		consume int // bytes the header takes from the input
	}{
		{"message", wire.AppendFrame(nil, msg, []byte("abc")), wire.KindMessage, wire.Header{Flags: wire.FlagReply, Dst: 7, Src: 3, Auth: 3, Handle: 1000, ReplyTo: 9, Length: 3}, nil, wire.HeaderSize},
		{"tunnel", tunnel(5, nil, []byte("yamux")), wire.KindTunnel, wire.Header{Length: 5}, nil, wire.TunnelHeaderSize},
		{"empty tunnel", tunnel(0, nil, nil), wire.KindTunnel, wire.Header{}, nil, wire.TunnelHeaderSize},
		{"largest tunnel", tunnel(wire.MaxTunnelPayload, nil, nil), wire.KindTunnel, wire.Header{Length: wire.MaxTunnelPayload}, nil, wire.TunnelHeaderSize},
		{"empty input", nil, 0, wire.Header{}, io.EOF, 0},
		{"short tunnel header", tunnel(1, nil, nil)[:5], 0, wire.Header{}, io.ErrUnexpectedEOF, 5},
		{"short message header", frame(0, nil, nil)[:20], 0, wire.Header{}, io.ErrUnexpectedEOF, 20},
		{"message header of 8 bytes", frame(0, nil, nil)[:8], 0, wire.Header{}, io.ErrUnexpectedEOF, 8},
		{"tunnel too long", tunnel(wire.MaxTunnelPayload+1, nil, nil), 0, wire.Header{}, wire.ErrTooLarge, 8},
		{"tunnel 4 GiB", tunnel(0xFFFFFFFF, nil, nil), 0, wire.Header{}, wire.ErrTooLarge, 8},
		{"tunnel flags", tunnel(1, func(b []byte) { b[3] = 1 }, []byte("x")), 0, wire.Header{}, wire.ErrBadFlags, 8},
		{"tunnel version 1", tunnel(1, func(b []byte) { b[2] = 1 }, []byte("x")), 0, wire.Header{}, wire.ErrBadVersion, 8},
		{"message version 1", frame(0, func(b []byte) { b[2] = 1 }, nil), 0, wire.Header{}, wire.ErrBadVersion, 8},
		{"message flags", frame(0, func(b []byte) { b[3] = 0x80 }, nil), 0, wire.Header{}, wire.ErrBadFlags, 8},
		{"message too large", frame(max+1, nil, nil), 0, wire.Header{}, wire.ErrTooLarge, wire.HeaderSize},
		{"bad magic", frame(0, func(b []byte) { b[1] = 'X' }, nil), 0, wire.Header{}, wire.ErrBadMagic, 8},
		// A version 1 peer's first bytes: a yamux header.
		{"yamux header", []byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, 0, wire.Header{}, wire.ErrBadMagic, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hb [wire.HeaderSize]byte
			r := bytes.NewReader(tt.in)
			kind, h, err := wire.ReadLinkHeader(r, hb[:], max)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if kind != tt.kind || h != tt.h {
				t.Fatalf("got %d %+v, want %d %+v", kind, h, tt.kind, tt.h)
			}
			if used := len(tt.in) - r.Len(); used != tt.consume {
				t.Fatalf("read %d bytes, want %d", used, tt.consume)
			}
		})
	}
}

// FuzzReadLink reads a link's byte stream frame by frame, as a link's
// read loop does: it must never panic or read past a frame, every failure
// is one of the codec's errors, and what reads re-encodes to exactly the
// bytes it was read from.
func FuzzReadLink(f *testing.F) {
	msg := wire.AppendFrame(nil, wire.Header{Dst: 7, Src: 3, Auth: 3, Handle: wire.HandleCall, ReplyTo: 1000}, []byte{0xa0})
	seeds := [][]byte{
		nil,
		msg,
		tunnel(12, nil, []byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}),
		append(append(tunnel(3, nil, []byte("abc")), msg...), tunnel(0, nil, nil)...),
		tunnel(fuzzMaxPayload, nil, bytes.Repeat([]byte{7}, 100)), // truncated
		tunnel(wire.MaxTunnelPayload+1, nil, nil),
		tunnel(2, func(b []byte) { b[3] = 4 }, []byte("zz")),
		tunnel(2, func(b []byte) { b[2] = 1 }, []byte("zz")),
		tunnel(0, nil, nil)[:3],
		frame(0xFFFFFFFF, nil, nil),
		{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0},
		append(msg, 'A'),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var out []byte
		var hb [wire.HeaderSize]byte
		for {
			before := r.Len()
			kind, h, err := wire.ReadLinkHeader(r, hb[:], fuzzMaxPayload)
			if err != nil {
				switch {
				case err == io.EOF && before == 0:
				case err == io.ErrUnexpectedEOF && before > 0:
				case errors.Is(err, wire.ErrBadMagic), errors.Is(err, wire.ErrBadVersion),
					errors.Is(err, wire.ErrBadFlags), errors.Is(err, wire.ErrTooLarge):
					if before-r.Len() < wire.TunnelHeaderSize {
						t.Fatalf("header error %v after %d bytes", err, before-r.Len())
					}
				default:
					t.Fatalf("unexpected error %v (%T)", err, err)
				}
				if kind != 0 || h != (wire.Header{}) {
					t.Fatalf("failed read returned %d %v", kind, h)
				}
				break
			}
			var limit uint32 = fuzzMaxPayload
			if kind == wire.KindTunnel {
				limit = wire.MaxTunnelPayload
				if h != (wire.Header{Length: h.Length}) {
					t.Fatalf("tunnel header with message fields: %v", h)
				}
			}
			if h.Length > limit {
				t.Fatalf("%d-byte payload past the limit %d", h.Length, limit)
			}
			if int(h.Length) > r.Len() {
				break // truncated payload: the link reads io.ErrUnexpectedEOF
			}
			payload := make([]byte, h.Length)
			_, _ = io.ReadFull(r, payload)
			if kind == wire.KindTunnel {
				out = wire.AppendTunnelFrame(out, payload)
			} else {
				out = wire.AppendFrame(out, h, payload)
			}
		}
		if !bytes.Equal(out, data[:len(out)]) {
			t.Fatalf("re-encoded frames differ:\n got %x\nwant %x", out, data[:len(out)])
		}
	})
}
