package spawn

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// logBuf is a logger's output, safe for concurrent use.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runStderr starts sh -c script as a child the way every spawn does and
// returns, once it has exited and all its stderr is read, what was logged
// (hclog's text format, as on a terminal) and the stderr tail.
func runStderr(t *testing.T, script string) (string, string) {
	t.Helper()
	logs := &logBuf{}
	log := hclog.New(&hclog.LoggerOptions{Name: "arbor", Output: logs, Level: hclog.Debug})
	p, conn, err := startProcess([]string{"/bin/sh", "-c", script}, nil, log, "hostile")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p.up.Store(true)
	select {
	case <-p.Exited():
	case <-time.After(time.Minute):
		p.Kill()
		t.Fatal("the child never exited")
	}
	return logs.String(), p.StderrTail()
}

// checkPrintable fails t if s holds anything a terminal would act on.
func checkPrintable(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("%s is not valid UTF-8: %q", what, s)
	}
	for i, r := range s {
		if r < 0x20 && r != '\n' || r == 0x7f || 0x80 <= r && r <= 0x9f {
			t.Errorf("%s holds control %U at byte %d: %q", what, r, i, s)
			return
		}
	}
}

// TestChildStderrEscaped: what a child (ssh, carrying a remote host's
// words) writes to stderr reaches the log and the error's stderr tail
// escaped, one line of the log per line of stderr.
func TestChildStderrEscaped(t *testing.T) {
	logged, tailText := runStderr(t, `
printf 'marker-clear \033[2J\033[H\033]0;owned\007 done\n' >&2
printf 'marker-cr visible\rhidden\n' >&2
printf 'marker-bytes \377\376\302\233 c1\n' >&2
printf 'marker-crlf ends here\r\n' >&2
`)
	checkPrintable(t, "the log", logged)
	checkPrintable(t, "the stderr tail", strings.ReplaceAll(tailText, "\n", " "))
	for _, want := range []string{
		`marker-clear \x1b[2J\x1b[H\x1b]0;owned\x07 done`,
		`marker-cr visible\rhidden`,
		`marker-bytes \xff\xfe\u009b c1`,
		`marker-crlf ends here`,
	} {
		if !strings.Contains(logged, "child stderr: "+want) {
			t.Errorf("log lacks %s:\n%s", want, logged)
		}
		if !strings.Contains(tailText, want) {
			t.Errorf("stderr tail lacks %s:\n%s", want, tailText)
		}
	}
	if n := strings.Count(logged, "\n"); n != 4 {
		t.Errorf("4 lines of stderr logged as %d lines:\n%s", n, logged)
	}
	if strings.Contains(logged, `here\r`) {
		t.Errorf("a CRLF line ending was kept as \\r:\n%s", logged)
	}
}

// TestChildStderrLongLine: a line longer than the limit is logged once,
// clipped with a marker that counts what was cut, and the next line is
// read as its own.
func TestChildStderrLongLine(t *testing.T) {
	logged, _ := runStderr(t, `
printf 'marker-long ' >&2
head -c 100000 /dev/zero | tr '\0' x >&2
printf '\nmarker-next\n' >&2
`)
	const lineMax = 4 << 10 // stderrLineMax
	lines := strings.Split(strings.TrimSuffix(logged, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines logged, got %d:\n%.500s", len(lines), logged)
	}
	m := regexp.MustCompile(`child stderr: (marker-long x+…\[(\d+) bytes cut\]): child=hostile$`).FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("long line not logged clipped with a marker: %.100q…%q", lines[0], lines[0][max(0, len(lines[0])-40):])
	}
	shown, _, _ := strings.Cut(m[1], "…")
	cut, _ := strconv.Atoi(m[2])
	if total := len("marker-long ") + 100000; len(shown)+cut != total {
		t.Errorf("%d bytes shown + %d counted as cut, want the %d of the line", len(shown), cut, total)
	}
	if len(m[1]) > lineMax {
		t.Errorf("long line logged as %d bytes, want at most %d", len(m[1]), lineMax)
	}
	if !strings.Contains(lines[1], "child stderr: marker-next") {
		t.Errorf("the line after the long one: %q", lines[1])
	}
}

// TestChildStderrFloodLimited: a child writing 100k lines to stderr as
// fast as it can gets a bounded number logged, and the rest counted in
// "dropped N lines of child stderr (rate limit)" summaries.
func TestChildStderrFloodLimited(t *testing.T) {
	const flood = 100_000
	logged, tailText := runStderr(t, fmt.Sprintf(`yes 'marker-flood %s' | head -n %d >&2`, "\033[2J", flood))
	checkPrintable(t, "the log", logged)
	printed := strings.Count(logged, `child stderr: marker-flood \x1b[2J`)
	dropped := 0
	for _, m := range regexp.MustCompile(`dropped (\d+) lines of child stderr \(rate limit\)`).FindAllStringSubmatch(logged, -1) {
		n, _ := strconv.Atoi(m[1])
		dropped += n
	}
	t.Logf("%d lines logged, %d dropped and counted", printed, dropped)
	if printed+dropped != flood {
		t.Errorf("%d logged + %d counted as dropped = %d, want %d: lines lost without a count", printed, dropped, printed+dropped, flood)
	}
	if printed >= flood/2 {
		t.Errorf("%d of %d lines logged: the budget did not hold", printed, flood)
	}
	if !strings.HasSuffix(tailText, `marker-flood \x1b[2J`) {
		t.Errorf("the stderr tail does not end with the last line: %q", tailText[max(0, len(tailText)-100):])
	}
}
