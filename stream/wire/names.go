package wire

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest node name a route may carry, in bytes. A name
// is a path of hops (parent/hop), so it holds a few hops of MaxHopNameLen.
const MaxNameLen = 1024

// MaxHopNameLen is the longest one hop of a name may be, in bytes: a host
// name's limit, far above any hop label a user types.
const MaxHopNameLen = 255

// CheckName reports why name cannot name a node: longer than MaxNameLen, a
// hop (the text between slashes) longer than MaxHopNameLen, not UTF-8, or holding a control or formatting character (a newline that
// would forge a log line, an escape that would drive a terminal, a bidi
// override that would reorder what an operator reads). Names travel in
// ADD_ROUTE and NODE_STATE from nodes that may be hostile, and end up in
// logs, tree listings and error messages.
func CheckName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("arbor: node name of %d bytes is longer than %d", len(name), MaxNameLen)
	}
	hop := 0
	for i, c := range name {
		if c == '/' {
			hop = i + 1
		} else if i+utf8.RuneLen(c)-hop > MaxHopNameLen {
			return fmt.Errorf("arbor: node name has a hop longer than %d bytes at byte %d", MaxHopNameLen, hop)
		}
		switch {
		case c == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(name[i:]); size <= 1 {
				return fmt.Errorf("arbor: node name %q is not UTF-8 (byte %d)", name, i)
			}
		case unicode.IsControl(c) || unicode.Is(unicode.Cf, c):
			return fmt.Errorf("arbor: node name %q holds control character %U at byte %d", name, c, i)
		}
	}
	return nil
}
