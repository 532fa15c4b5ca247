package logsafe

import (
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// Escape returns s as one printable line (see the package comment). The
// result is valid UTF-8 and holds no control character; text that needs
// no escape comes back unchanged.
func Escape(s string) string { return Clip(s, -1) }

// Clip is Escape keeping at most max bytes (no limit when max < 0). When
// the escaped text does not fit, it is cut at a rune or escape boundary
// and a marker saying how many bytes of s were left out ("…[N bytes cut]")
// takes the last bytes of the budget, so the result is at most max bytes
// (only a max too small for the marker, under 36, can be exceeded), and
// clipping a clipped text again changes nothing. It reads no more of s
// than it keeps, so a huge s costs no more than max.
func Clip(s string, max int) string { return clip(s, len(s), max) }

// ClipBytes is Clip for a byte slice. It converts only the part it may
// keep, so a huge b costs no more than max.
func ClipBytes(b []byte, max int) string { return ClipPart(b, len(b), max) }

// ClipPart is ClipBytes of a text of total bytes of which only part, its
// start, was kept (a reader skipped the rest of an over-long line): the
// marker counts the bytes of the whole text left out.
func ClipPart(part []byte, total, max int) string {
	if total < len(part) {
		total = len(part)
	}
	if max >= 0 && len(part) > max+utf8.UTFMax {
		// Escapes never shrink text, so the cut falls within the first
		// max bytes, and the rune that straddles it within UTFMax more.
		part = part[:max+utf8.UTFMax]
	}
	return clip(string(part), total, max)
}

const (
	markerStart = "…["
	markerEnd   = " bytes cut]"
)

// clip is Clip of a text of total bytes of which s is the start.
func clip(s string, total, max int) string {
	if (max < 0 || total <= max) && len(s) == total && safe(s) {
		return s
	}
	// The marker's length is at most this: it counts at most total bytes.
	reserve := len(markerStart) + len(strconv.Itoa(total)) + len(markerEnd)
	var out []byte
	if max >= 0 {
		out = make([]byte, 0, min(len(s), max)+len(markerEnd))
	} else {
		out = make([]byte, 0, len(s)+16)
	}
	// keepOut, keepIn: the last boundary (in out, in s) that leaves room
	// for the marker.
	keepOut, keepIn := 0, 0
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		n := len(out)
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, '\\', 'x', hexDigits[s[i]>>4], hexDigits[s[i]&0xf])
		case needsEscape(r):
			out = appendEscape(out, r)
		default:
			out = append(out, s[i:i+size]...)
		}
		if max >= 0 && len(out) > max {
			out = out[:n]
			break
		}
		i += size
		if max < 0 || len(out) <= max-reserve {
			keepOut, keepIn = len(out), i
		}
	}
	if i == total {
		return string(out)
	}
	out = append(out[:keepOut], markerStart...)
	out = strconv.AppendInt(out, int64(total-keepIn), 10)
	out = append(out, markerEnd...)
	return string(out)
}

// safe reports whether s is valid UTF-8 with nothing to escape.
func safe(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || needsEscape(r) {
			return false
		}
		i += size
	}
	return true
}

// needsEscape reports whether a valid rune could move the cursor, change
// the terminal's state, start a new line in a viewer, or reorder the text
// around it.
func needsEscape(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, 0x80 <= r && r <= 0x9f: // C0, DEL, C1
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, // bidirectional marks
		0x202a <= r && r <= 0x202e, // embeddings and overrides
		0x2066 <= r && r <= 0x2069: // isolates
		return true
	}
	return false
}

// appendEscape appends the visible form of a rune needsEscape reported.
func appendEscape(b []byte, r rune) []byte {
	switch r {
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	if r < utf8.RuneSelf {
		return append(b, '\\', 'x', hexDigits[r>>4], hexDigits[r&0xf])
	}
	return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}
