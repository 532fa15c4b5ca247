package wire

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest node name a route may carry, in bytes: a host
// name's limit, far above any hop label a user types.
const MaxNameLen = 255

// CheckName reports why name cannot name a node: longer than MaxNameLen,
// not UTF-8, or holding a control or formatting character (a newline that
// would forge a log line, an escape that would drive a terminal, a bidi
// override that would reorder what an operator reads). Names travel in
// ADD_ROUTE and NODE_STATE from nodes that may be hostile, and end up in
// logs, tree listings and error messages.
func CheckName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("arbor: node name of %d bytes is longer than %d", len(name), MaxNameLen)
	}
	for i, c := range name {
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
