package targets

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/arbor-project/arbor/internal/errs"
)

// MaxExpansion bounds how many paths one set may expand to, so a typo such
// as "h[1-999999999]" is an error rather than an exhausted machine.
const MaxExpansion = 1 << 20

// ErrEmpty is the error of a set that expands to nothing.
var ErrEmpty = errors.New(errs.Prefix + "target set is empty")

// SyntaxError is a malformed set: Offset is the byte offset in Input of
// the offending character.
type SyntaxError struct {
	Input  string
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%sbad target set %q: %s at character %d\n  %s\n  %s^",
		errs.Prefix, e.Input, e.Msg, e.Offset+1, e.Input, strings.Repeat(" ", e.Offset))
}

func syntaxErr(in string, off int, format string, a ...any) error {
	return &SyntaxError{Input: in, Offset: off, Msg: fmt.Sprintf(format, a...)}
}

// Parse expands set into its paths, in the order written, each once (a
// path named twice is kept at its first place). It checks the syntax of
// sets and ranges only; a path's hops are checked by spawn.ParsePath when
// it is used. An empty set is ErrEmpty.
func Parse(set string) ([]string, error) {
	items, err := split(set)
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	for _, it := range items {
		paths, err := expand(set, it.text, it.off)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
			if len(out) > MaxExpansion {
				return nil, syntaxErr(set, it.off, "expands to more than %d targets", MaxExpansion)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrEmpty, set)
	}
	return out, nil
}

// Exclude returns paths without those in excl, in order.
func Exclude(paths, excl []string) []string {
	drop := make(map[string]bool, len(excl))
	for _, p := range excl {
		drop[p] = true
	}
	var out []string
	for _, p := range paths {
		if !drop[p] {
			out = append(out, p)
		}
	}
	return out
}

type item struct {
	text string
	off  int // of text in the whole set
}

// Split cuts set at the commas outside brackets and braces, and checks
// that every bracket and brace is closed. Empty items (",,") are skipped,
// so a trailing comma is harmless; an item may name a group ("@web") or a
// daemon pattern, which the caller resolves.
func Split(set string) ([]string, error) {
	items, err := split(set)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.text
	}
	return out, nil
}

// SplitOffsets is Split with each item's byte offset in set.
func SplitOffsets(set string) ([]string, []int, error) {
	items, err := split(set)
	if err != nil {
		return nil, nil, err
	}
	texts, offs := make([]string, len(items)), make([]int, len(items))
	for i, it := range items {
		texts[i], offs[i] = it.text, it.off
	}
	return texts, offs, nil
}

func split(set string) ([]item, error) {
	var items []item
	start, open, brace := 0, -1, -1
	flush := func(end int) {
		if t := strings.TrimSpace(set[start:end]); t != "" {
			lead := len(set[start:end]) - len(strings.TrimLeft(set[start:end], " \t"))
			items = append(items, item{text: t, off: start + lead})
		}
	}
	for i := 0; i < len(set); i++ {
		c := set[i]
		switch {
		case brace >= 0:
			if c == '}' && (i+1 == len(set) || set[i+1] == '/' || set[i+1] == ',') {
				brace = -1
			}
		case c == '{' && i > 0 && set[i-1] == ':':
			brace = i
		case c == '[':
			if open >= 0 {
				return nil, syntaxErr(set, i, "'[' inside a range")
			}
			open = i
		case c == ']':
			if open < 0 {
				return nil, syntaxErr(set, i, "']' without '['")
			}
			open = -1
		case c == ',' && open < 0:
			flush(i)
			start = i + 1
		}
	}
	if open >= 0 {
		return nil, syntaxErr(set, open, "'[' is never closed")
	}
	if brace >= 0 {
		return nil, syntaxErr(set, brace, "'{' is never closed")
	}
	flush(len(set))
	return items, nil
}

// expand expands the ranges of one path; off is its offset in set (for
// errors).
func expand(set, path string, off int) ([]string, error) {
	out := []string{""}
	for i := 0; i < len(path); {
		c := path[i]
		switch {
		case c == '{' && i > 0 && path[i-1] == ':':
			end := strings.IndexByte(path[i:], '}')
			for end >= 0 && i+end+1 < len(path) && path[i+end+1] != '/' {
				next := strings.IndexByte(path[i+end+1:], '}')
				if next < 0 {
					end = -1
					break
				}
				end += next + 1
			}
			if end < 0 {
				return nil, syntaxErr(set, off+i, "'{' is never closed")
			}
			out = appendAll(out, path[i:i+end+1])
			i += end + 1
		case c == '[':
			end := strings.IndexByte(path[i:], ']')
			if end < 0 {
				return nil, syntaxErr(set, off+i, "'[' is never closed")
			}
			body := path[i+1 : i+end]
			if strings.Contains(body, ":") { // an IPv6 address
				out = appendAll(out, path[i:i+end+1])
				i += end + 1
				continue
			}
			vals, err := parseRange(set, body, off+i+1)
			if err != nil {
				return nil, err
			}
			if len(out)*len(vals) > MaxExpansion {
				return nil, syntaxErr(set, off+i, "expands to more than %d targets", MaxExpansion)
			}
			next := make([]string, 0, len(out)*len(vals))
			for _, p := range out {
				for _, v := range vals {
					next = append(next, p+v)
				}
			}
			out = next
			i += end + 1
		case c == ']':
			return nil, syntaxErr(set, off+i, "']' without '['")
		default:
			j := i
			for j < len(path) && path[j] != '[' && path[j] != ']' && !(path[j] == '{' && j > 0 && path[j-1] == ':') {
				j++
			}
			if j == i { // '{' not after ':' is plain text
				j++
			}
			out = appendAll(out, path[i:j])
			i = j
		}
	}
	return out, nil
}

func appendAll(ps []string, s string) []string {
	for i := range ps {
		ps[i] += s
	}
	return ps
}

// ParseRange expands the body of one bracket ("01-05,07") into its
// numbers as written: zero padding is kept, and "01-10" is 01…10. off is
// the body's offset in the input, for errors.
func parseRange(in, body string, off int) ([]string, error) {
	if body == "" {
		return nil, syntaxErr(in, off, "empty range")
	}
	var out []string
	pos := 0
	for _, part := range strings.Split(body, ",") {
		partOff := off + pos
		pos += len(part) + 1
		if part == "" {
			return nil, syntaxErr(in, partOff, "empty element in range")
		}
		lo, hi, isRange := strings.Cut(part, "-")
		if err := checkDigits(in, lo, partOff); err != nil {
			return nil, err
		}
		if !isRange {
			out = append(out, lo)
			continue
		}
		hiOff := partOff + len(lo) + 1
		if err := checkDigits(in, hi, hiOff); err != nil {
			return nil, err
		}
		a, err1 := strconv.ParseUint(lo, 10, 63)
		b, err2 := strconv.ParseUint(hi, 10, 63)
		if err1 != nil || err2 != nil {
			return nil, syntaxErr(in, partOff, "number too large")
		}
		if b < a {
			return nil, syntaxErr(in, hiOff, "range ends before it starts (%s-%s)", lo, hi)
		}
		if b-a >= MaxExpansion {
			return nil, syntaxErr(in, partOff, "range %s has more than %d elements", part, MaxExpansion)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo)
		}
		for n := a; n <= b; n++ {
			out = append(out, fmt.Sprintf("%0*d", width, n))
		}
		if len(out) > MaxExpansion {
			return nil, syntaxErr(in, partOff, "range has more than %d elements", MaxExpansion)
		}
	}
	return out, nil
}

func checkDigits(in, s string, off int) error {
	if s == "" {
		return syntaxErr(in, off, "missing number in range")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return syntaxErr(in, off+i, "%q is not a digit (a range holds numbers, '-' and ',')", s[i])
		}
	}
	return nil
}
