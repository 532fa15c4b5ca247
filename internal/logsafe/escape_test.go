package logsafe

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"
)

// TestMain fails the package if a Drops timer outlives its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain text, with ünïcödé and 日本語 and a \\ backslash", "plain text, with ünïcödé and 日本語 and a \\ backslash"},
		{"line\n[ERROR] arbor: forged", `line\n[ERROR] arbor: forged`},
		{"cr\rlf\r\n", `cr\rlf\r\n`},
		{"tab\tbell\a nul\x00 del\x7f", `tab\tbell\x07 nul\x00 del\x7f`},
		{"\x1b[2J\x1b[H clear", `\x1b[2J\x1b[H clear`},
		{"\x1b]0;owned\x07 title", `\x1b]0;owned\x07 title`},
		{"c1 csi \u009b2J", `c1 csi \u009b2J`},
		{"c1 bounds \u0080\u009f\u00a0", `c1 bounds \u0080\u009f` + "\u00a0"},
		{"raw bytes \x9b\xff\xfe", `raw bytes \x9b\xff\xfe`},
		{"cut rune \xe6\x97", `cut rune \xe6\x97`},
		{"surrogate \xed\xa0\x80", `surrogate \xed\xa0\x80`},
		{"separators \u2028\u2029", `separators \u2028\u2029`},
		{"bidi \u202eevil\u202c \u2066x\u2069 \u200f", `bidi \u202eevil\u202c \u2066x\u2069 \u200f`},
		{`already \x1b escaped`, `already \x1b escaped`},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijklmnopqrstuvwxyz", 20, "abc…[23 bytes cut]"},      // the marker takes the end of the budget
		{"日本語日本語日", 20, "日…[18 bytes cut]"},                           // never half a rune
		{"ab\x1b" + strings.Repeat("y", 20), 22, "ab…[21 bytes cut]"}, // never half an escape
		{"ab\x1b" + strings.Repeat("y", 20), 23, `ab\x1b…[20 bytes cut]`},
		{"ab日本語" + strings.Repeat("\n", 100), 30, "ab日本語…[100 bytes cut]"},
		{strings.Repeat("x", 1<<20), 100, strings.Repeat("x", 78) + "…[1048498 bytes cut]"},
		{"\n\n\n", -1, `\n\n\n`},               // no limit
		{"eleven char", 10, "…[11 bytes cut]"}, // a budget too small for the marker
	} {
		if got := Clip(tc.in, tc.max); got != tc.want {
			t.Errorf("Clip(%.20q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if got := ClipBytes([]byte(tc.in), tc.max); got != tc.want {
			t.Errorf("ClipBytes(%.20q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if got := Clip(tc.want, tc.max); tc.max >= 32 && got != tc.want {
			t.Errorf("Clip(Clip(%.20q, %d)) = %q, want it unchanged", tc.in, tc.max, got)
		}
	}
	// A reader that kept only the start of a line.
	for _, max := range []int{40, -1} {
		if got, want := ClipPart([]byte("abc\x1b"), 1000, max), `abc\x1b…[996 bytes cut]`; got != want {
			t.Errorf("ClipPart(abc, 1000, %d) = %q, want %q", max, got, want)
		}
	}
}

// checkEscaped fails t unless out is one printable line: valid UTF-8,
// no C0, DEL or C1 control, no separator or bidirectional control.
func checkEscaped(t *testing.T, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("Escape(%q) = %q: not valid UTF-8", in, out)
	}
	for i, r := range out {
		if needsEscape(r) {
			t.Fatalf("Escape(%q) = %q: %U at byte %d", in, out, r, i)
		}
	}
	for i := 0; i < len(out); i++ {
		if out[i] < 0x20 || out[i] == 0x7f {
			t.Fatalf("Escape(%q) = %q: control byte %#x at %d", in, out, out[i], i)
		}
	}
}

// FuzzEscape: whatever the input, Escape's output is one printable line
// of valid UTF-8; escaping it again changes nothing; text that needed no
// escape is kept as it is; and Clip keeps to its bound.
//
//	go test -run='^$' -fuzz=FuzzEscape -fuzztime=30s ./internal/logsafe/
func FuzzEscape(f *testing.F) {
	for _, s := range []string{
		"", "hello", "a\nb", "\x1b[2J", "\x1b]0;title\x07", "\u009b", "\xff\xfe", "\xed\xa0\x80",
		"\u202e", "日本語", `\x1b`, "\r\n[ERROR] arbor: forged", strings.Repeat("\x00", 64),
	} {
		f.Add(s, 16)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		out := Escape(s)
		checkEscaped(t, s, out)
		if again := Escape(out); again != out {
			t.Fatalf("Escape not idempotent: %q -> %q -> %q", s, out, again)
		}
		if safe(s) && out != s {
			t.Fatalf("Escape(%q) = %q: changed safe text", s, out)
		}
		if len(out) < len(s) {
			t.Fatalf("Escape(%q) = %q: lost bytes", s, out)
		}
		max %= 1 << 12
		if max < 0 {
			max = -max
		}
		max += 32 // room for the marker
		c := Clip(s, max)
		checkEscaped(t, s, c)
		if cb := ClipBytes([]byte(s), max); cb != c {
			t.Fatalf("ClipBytes(%q, %d) = %q, Clip gave %q", s, max, cb, c)
		}
		if len(c) > max {
			t.Fatalf("Clip(%q, %d) = %q: %d bytes", s, max, c, len(c))
		}
		if again := Clip(c, max); again != c {
			t.Fatalf("Clip not idempotent: %q -> %q -> %q", s, c, again)
		}
		if c == out {
			return
		}
		kept, _, ok := strings.Cut(c, "…[")
		if !ok || !strings.HasPrefix(out, kept) {
			t.Fatalf("Clip(%q, %d) = %q: want a prefix of %q and a marker", s, max, c, out)
		}
	})
}
