package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// A link's byte stream is a sequence of frames of two kinds, told apart by
// their first two bytes: message frames ("AR", the 28-byte Header above)
// and tunnel frames ("AT"), which carry the bytes of the link's yamux
// session (bulk channels) in pieces of at most MaxTunnelPayload bytes.
//
// Tunnel frame header layout (integers big-endian):
//
//	0      2        3        4        8
//	+------+--------+--------+--------+
//	| "AT" | version| flags  | length |
//	+------+--------+--------+--------+
//
// flags must be 0. length bytes of the yamux byte stream follow.
const (
	// TunnelMagic1 is the second byte of a tunnel frame ("AT").
	TunnelMagic1 = 'T'
	// TunnelHeaderSize is the size of a tunnel frame header in bytes.
	TunnelHeaderSize = 8
	// MaxTunnelPayload is the most bytes one tunnel frame carries: a
	// channel write of a few hundred KiB (a splice buffer, a transfer
	// record) goes out in one frame, and a message frame waits behind at
	// most this much bulk data.
	MaxTunnelPayload = 1 << 20
)

// FrameKind is what a frame on a link is.
type FrameKind uint8

const (
	// KindMessage is a routed message frame: Header and payload.
	KindMessage FrameKind = 1
	// KindTunnel is a tunnel frame: Header.Length bytes of the link's yamux
	// session follow; the other Header fields are zero.
	KindTunnel FrameKind = 2
)

// PutTunnelHeader encodes the header of a tunnel frame carrying n bytes
// into b, which must be at least TunnelHeaderSize bytes long.
func PutTunnelHeader(b []byte, n int) {
	_ = b[TunnelHeaderSize-1]
	b[0], b[1], b[2], b[3] = Magic0, TunnelMagic1, Version, 0
	binary.BigEndian.PutUint32(b[4:], uint32(n))
}

// AppendTunnelFrame appends a tunnel frame carrying payload (at most
// MaxTunnelPayload bytes) to dst.
func AppendTunnelFrame(dst []byte, payload []byte) []byte {
	var hb [TunnelHeaderSize]byte
	PutTunnelHeader(hb[:], len(payload))
	return append(append(dst, hb[:]...), payload...)
}

// ReadLinkHeader reads the header of the next frame on a link from r: a
// tunnel frame's 8 bytes, or a message frame's 28. hdrBuf is scratch space
// of at least HeaderSize bytes. The magic, version and flags are checked
// from the first 8 bytes, before anything more is read; a message header's
// length is checked against maxPayload and a tunnel frame's against
// MaxTunnelPayload. The payload is left in r for the caller. A stream that
// ends before the first byte gives io.EOF; inside a header,
// io.ErrUnexpectedEOF.
func ReadLinkHeader(r io.Reader, hdrBuf []byte, maxPayload uint32) (FrameKind, Header, error) {
	b := hdrBuf[:HeaderSize]
	if _, err := io.ReadFull(r, b[:TunnelHeaderSize]); err != nil {
		return 0, Header{}, err
	}
	if b[0] != Magic0 || (b[1] != Magic1 && b[1] != TunnelMagic1) {
		return 0, Header{}, fmt.Errorf("%w: %#02x%02x", ErrBadMagic, b[0], b[1])
	}
	if b[2] != Version {
		return 0, Header{}, fmt.Errorf("%w: got %d, want %d", ErrBadVersion, b[2], Version)
	}
	if b[1] == TunnelMagic1 {
		if b[3] != 0 {
			return 0, Header{}, fmt.Errorf("%w: tunnel frame %#x", ErrBadFlags, b[3])
		}
		n := binary.BigEndian.Uint32(b[4:])
		if n > MaxTunnelPayload {
			return 0, Header{}, &TooLargeError{Size: uint64(n), Max: MaxTunnelPayload}
		}
		return KindTunnel, Header{Length: n}, nil
	}
	if b[3]&^knownFlags != 0 {
		return 0, Header{}, fmt.Errorf("%w: %#x", ErrBadFlags, b[3])
	}
	if _, err := io.ReadFull(r, b[TunnelHeaderSize:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, Header{}, err
	}
	h, err := ParseHeader(b, maxPayload)
	if err != nil {
		return 0, Header{}, err
	}
	return KindMessage, h, nil
}
