package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Frame header layout (all integers big-endian):
//
//	0      2        3      4     8     12     16       20         24       28
//	+------+--------+------+-----+-----+------+--------+----------+--------+
//	| "AR" | version| flags| dst | src | auth | handle | reply_to | length |
//	+------+--------+------+-----+-----+------+--------+----------+--------+
const (
	// HeaderSize is the fixed size of a frame header in bytes.
	HeaderSize = 28
	// Magic0 and Magic1 open every frame ("AR").
	Magic0 = 'A'
	Magic1 = 'R'
	// Version is the link protocol version, carried by every frame header
	// (message and tunnel) and by the hello exchange; a peer speaking
	// another is refused. Version 1 ran the message stream inside a yamux
	// session; version 2 frames the link itself (PROTOCOL.md section 1).
	Version = 2
)

// Flags carried in a frame header.
const (
	// FlagDead marks a dead reply: the payload is a CBOR text string saying
	// why the original message could not be delivered. A dead message never
	// produces another dead reply.
	FlagDead uint8 = 1 << 0
	// FlagReply marks a reply to a request (informational; routing ignores it).
	FlagReply uint8 = 1 << 1

	knownFlags = FlagDead | FlagReply
)

// Header is a decoded frame header. Routers forward on it alone.
type Header struct {
	Flags   uint8
	Dst     uint32 // destination node ID
	Src     uint32 // originating node ID
	Auth    uint32 // node whose authority the message carries
	Handle  uint32 // receiver on the destination node
	ReplyTo uint32 // handle on Src that wants replies; 0 for none
	Length  uint32 // payload length in bytes
}

// IsDead reports whether the frame is a dead reply.
func (h Header) IsDead() bool { return h.Flags&FlagDead != 0 }

// String renders the header for logs.
func (h Header) String() string {
	return fmt.Sprintf("msg(dst=%d src=%d auth=%d handle=%d reply_to=%d flags=%#x len=%d)",
		h.Dst, h.Src, h.Auth, h.Handle, h.ReplyTo, h.Flags, h.Length)
}

// Put encodes h into b, which must be at least HeaderSize bytes long.
func (h Header) Put(b []byte) {
	_ = b[HeaderSize-1]
	b[0], b[1], b[2], b[3] = Magic0, Magic1, Version, h.Flags
	binary.BigEndian.PutUint32(b[4:], h.Dst)
	binary.BigEndian.PutUint32(b[8:], h.Src)
	binary.BigEndian.PutUint32(b[12:], h.Auth)
	binary.BigEndian.PutUint32(b[16:], h.Handle)
	binary.BigEndian.PutUint32(b[20:], h.ReplyTo)
	binary.BigEndian.PutUint32(b[24:], h.Length)
}

// ParseHeader decodes and validates a header. maxPayload is the largest
// payload the reader accepts; a header announcing more is refused here, before
// anything is allocated for it.
func ParseHeader(b []byte, maxPayload uint32) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrShortHeader, len(b))
	}
	if b[0] != Magic0 || b[1] != Magic1 {
		return Header{}, fmt.Errorf("%w: %#02x%02x", ErrBadMagic, b[0], b[1])
	}
	if b[2] != Version {
		return Header{}, fmt.Errorf("%w: got %d, want %d", ErrBadVersion, b[2], Version)
	}
	h := Header{
		Flags:   b[3],
		Dst:     binary.BigEndian.Uint32(b[4:]),
		Src:     binary.BigEndian.Uint32(b[8:]),
		Auth:    binary.BigEndian.Uint32(b[12:]),
		Handle:  binary.BigEndian.Uint32(b[16:]),
		ReplyTo: binary.BigEndian.Uint32(b[20:]),
		Length:  binary.BigEndian.Uint32(b[24:]),
	}
	if h.Flags&^knownFlags != 0 {
		return Header{}, fmt.Errorf("%w: %#x", ErrBadFlags, h.Flags)
	}
	if h.Length > maxPayload {
		return Header{}, &TooLargeError{Size: uint64(h.Length), Max: maxPayload}
	}
	return h, nil
}

// ReadFrame reads one frame from r. The header is validated, and its length
// checked against maxPayload, before the payload buffer is allocated.
// hdrBuf is scratch space of at least HeaderSize bytes, reused by the caller.
func ReadFrame(r io.Reader, hdrBuf []byte, maxPayload uint32) (Header, []byte, error) {
	if _, err := io.ReadFull(r, hdrBuf[:HeaderSize]); err != nil {
		return Header{}, nil, err
	}
	h, err := ParseHeader(hdrBuf, maxPayload)
	if err != nil {
		return Header{}, nil, err
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, nil, err
	}
	return h, payload, nil
}

// AppendFrame appends the encoded header and payload to dst. The header's
// Length is set from the payload.
func AppendFrame(dst []byte, h Header, payload []byte) []byte {
	h.Length = uint32(len(payload))
	var hb [HeaderSize]byte
	h.Put(hb[:])
	dst = append(dst, hb[:]...)
	return append(dst, payload...)
}
