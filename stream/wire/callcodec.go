package wire

import (
	"math"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// The two payloads of every call, CALL's request and its answer, have
// codecs of their own beside Marshal and Unmarshal: the library's
// reflection took 40 % of a child's CPU in pipelined no-op calls (bench/run
// W4). Encoding writes, byte for byte, what Marshal writes (core
// deterministic CBOR: a definite map, keys in order, shortest heads; the
// raw values verbatim). Decoding lets the library check the payload's
// well-formedness with the same limits as Unmarshal (nesting, lengths, no
// tags, no indefinite lengths, nothing after the item) and then reads the
// shape Arbor's encoder makes by hand; any other shape, and every payload
// that is not well-formed, goes to Unmarshal, so what is accepted, refused
// and returned is Unmarshal's (FuzzCallCodec holds both to that).

const (
	majorUint   = 0 << 5
	majorNegInt = 1 << 5
	majorText   = 3 << 5
	majorMap    = 5 << 5
)

// EncodeCallRequest is Marshal(r).
func EncodeCallRequest(r CallRequest) ([]byte, error) {
	if !utf8.ValidString(r.Fn) || len(r.Args) > 0 && decMode.Wellformed(r.Args) != nil {
		return Marshal(r)
	}
	n := 1
	if len(r.Args) > 0 {
		n++
	}
	if r.DeadlineUnixNano != 0 {
		n++
	}
	b := make([]byte, 0, 1+1+9+len(r.Fn)+1+len(r.Args)+1+9)
	b = append(b, majorMap|byte(n), 1)
	b = appendHead(b, majorText, uint64(len(r.Fn)))
	b = append(b, r.Fn...)
	if len(r.Args) > 0 {
		b = append(b, 2)
		b = append(b, r.Args...)
	}
	if d := r.DeadlineUnixNano; d > 0 {
		b = appendHead(append(b, 3), majorUint, uint64(d))
	} else if d < 0 {
		b = appendHead(append(b, 3), majorNegInt, uint64(-1-d))
	}
	return b, nil
}

// EncodeCallResult is Marshal(CallReply{Result: res}).
func EncodeCallResult(res cbor.RawMessage) ([]byte, error) {
	if len(res) == 0 {
		return []byte{majorMap}, nil
	}
	if decMode.Wellformed(res) != nil {
		return Marshal(CallReply{Result: res})
	}
	return append([]byte{majorMap | 1, 1}, res...), nil
}

// DecodeCallRequest is Unmarshal into a CallRequest. Args may share b.
func DecodeCallRequest(b []byte) (CallRequest, error) {
	if r, ok := fastCallRequest(b); ok {
		return r, nil
	}
	var r CallRequest
	err := Unmarshal(b, &r)
	return r, err
}

// DecodeCallReply is Unmarshal into a CallReply. Result may share b.
func DecodeCallReply(b []byte) (CallReply, error) {
	if r, ok := fastCallReply(b); ok {
		return r, nil
	}
	var r CallReply
	err := Unmarshal(b, &r)
	return r, err
}

// fastCallRequest reads a well-formed map of keys 1 (Fn, valid UTF-8), 2
// (Args, neither null nor undefined) and 3 (a deadline that fits an
// int64), each at most once and in that order; ok is false for anything
// else.
func fastCallRequest(b []byte) (r CallRequest, ok bool) {
	if len(b) == 0 || b[0] < majorMap|1 || b[0] > majorMap|3 || decMode.Wellformed(b) != nil {
		return r, false
	}
	p, last := b[1:], byte(0)
	for range int(b[0] & 0x1f) {
		if len(p) < 2 || p[0] <= last || p[0] > 3 {
			return r, false
		}
		last = p[0]
		p = p[1:]
		switch last {
		case 1:
			if p[0]&0xe0 != majorText {
				return r, false
			}
			n, h, ok := head(p)
			if !ok || n > uint64(len(p)-h) || !utf8.Valid(p[h:h+int(n)]) {
				return r, false
			}
			r.Fn = string(p[h : h+int(n)])
			p = p[h+int(n):]
		case 2:
			end, ok := itemEnd(p, 0)
			if !ok || p[0] == 0xf6 || p[0] == 0xf7 {
				return r, false
			}
			r.Args = cbor.RawMessage(p[:end:end])
			p = p[end:]
		case 3:
			n, h, ok := head(p)
			if !ok || n > math.MaxInt64 {
				return r, false
			}
			switch p[0] & 0xe0 {
			case majorUint:
				r.DeadlineUnixNano = int64(n)
			case majorNegInt:
				r.DeadlineUnixNano = -1 - int64(n)
			default:
				return r, false
			}
			p = p[h:]
		}
	}
	return r, len(p) == 0
}

// fastCallReply reads a well-formed empty map, or a map whose one key is
// 1 (Result, neither null nor undefined); ok is false for anything else.
func fastCallReply(b []byte) (r CallReply, ok bool) {
	if len(b) == 1 && b[0] == majorMap {
		return r, true
	}
	if len(b) < 3 || b[0] != majorMap|1 || b[1] != 1 || b[2] == 0xf6 || b[2] == 0xf7 || decMode.Wellformed(b) != nil {
		return r, false
	}
	r.Result = cbor.RawMessage(b[2:len(b):len(b)])
	return r, true
}

// appendHead appends a CBOR head of major type major (shifted) and
// argument v, in its shortest form.
func appendHead(b []byte, major byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(b, major|byte(v))
	case v <= math.MaxUint8:
		return append(b, major|24, byte(v))
	case v <= math.MaxUint16:
		return append(b, major|25, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(b, major|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, major|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
		byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// head reads the argument of the CBOR head at p[0] and the head's length.
// ok is false for an indefinite or reserved length, or a short p.
func head(p []byte) (v uint64, n int, ok bool) {
	if len(p) == 0 {
		return 0, 0, false
	}
	ai := p[0] & 0x1f
	switch {
	case ai < 24:
		return uint64(ai), 1, true
	case ai > 27:
		return 0, 0, false
	}
	n = 1 << (ai - 24) // 1, 2, 4 or 8 bytes
	if len(p) < 1+n {
		return 0, 0, false
	}
	for _, c := range p[1 : 1+n] {
		v = v<<8 | uint64(c)
	}
	return v, 1 + n, true
}

// itemEnd is the length of the CBOR item at the start of p, which the
// caller knows to be well-formed (so depth stays within MaxNesting).
func itemEnd(p []byte, depth int) (int, bool) {
	v, n, ok := head(p)
	if !ok || depth > MaxNesting {
		return 0, false
	}
	switch p[0] >> 5 {
	case 0, 1, 7: // integers, simple values and floats: the head alone
		return n, true
	case 2, 3: // strings
		if v > uint64(len(p)-n) {
			return 0, false
		}
		return n + int(v), true
	case 4, 5: // arrays and maps
		items := v
		if p[0]>>5 == 5 {
			if items > math.MaxUint64/2 {
				return 0, false
			}
			items *= 2
		}
		off := n
		for i := uint64(0); i < items; i++ {
			k, ok := itemEnd(p[off:], depth+1)
			if !ok {
				return 0, false
			}
			off += k
		}
		return off, true
	}
	return 0, false // tags: refused by the decoder's options
}
