package test

import (
	"regexp"
	"strings"
	"testing"
)

// statusDraw is one redraw of the fan-out status line.
var statusDraw = regexp.MustCompile(`^\[(\d+)/3\] done, (\d+) failed, (\d+) running, (\d+) queued, [0-9.]+/s$`)

// screen is what a terminal shows after out, for the bytes a status line
// uses: '\r' returns to the first column, ESC [ K erases to the end of the
// line, '\n' starts a new line. It also returns every text written after
// an erase and ended by '\r' or the end, not by '\n': the redraws.
func screen(t *testing.T, out string) (lines, draws []string) {
	t.Helper()
	var line []byte
	col := 0
	drawing := -1 // index in draws of the redraw being written, or -1
	for i := 0; i < len(out); i++ {
		switch c := out[i]; {
		case c == '\r':
			col, drawing = 0, -1
		case c == '\n':
			if drawing >= 0 {
				draws = draws[:drawing] // a line of output after an erase, not a redraw
			}
			lines = append(lines, string(line))
			line, col, drawing = nil, 0, -1
		case strings.HasPrefix(out[i:], "\x1b[K"):
			line = line[:min(col, len(line))]
			i += 2
			draws = append(draws, "")
			drawing = len(draws) - 1
		case c == 0x1b:
			t.Fatalf("unexpected escape sequence at %d: %q", i, out[i:min(i+8, len(out))])
		default:
			if col < len(line) {
				line[col] = c
			} else {
				line = append(line, c)
			}
			col++
			if drawing >= 0 {
				draws[drawing] += string(c)
			}
		}
	}
	if len(line) > 0 {
		lines = append(lines, string(line))
	}
	return lines, draws
}

// TestFanoutStatusLine: on a terminal, a command over a set draws a live
// status line on stderr (done, failed, running, queued, rate), each redraw
// within the terminal's width, and erases it when the output ends; the
// output lines are whole. Not on a terminal, no status line at all.
func TestFanoutStatusLine(t *testing.T) {
	set := "local,local/local,local/local/local"
	script := "sleep 1.2; echo out; exit 3"
	for _, cols := range []int{80, 30} {
		tty, res := runArborPTY(t, cols, "exec", "-w", set, "--", "sh", "-c", script)
		if res.code != 3 {
			t.Fatalf("%d columns: exit %d, want 3; terminal %q", cols, res.code, tty)
		}
		lines, draws := screen(t, tty)
		if len(draws) == 0 {
			t.Fatalf("%d columns: no status line drawn; terminal %q", cols, tty)
		}
		seen := false
		for _, d := range draws {
			if d == "" {
				continue // an erase
			}
			if len(d) >= cols {
				t.Errorf("%d columns: a redraw of %d characters wraps: %q", cols, len(d), d)
			}
			if cols == 80 {
				m := statusDraw.FindStringSubmatch(d)
				if m == nil {
					t.Errorf("redraw %q is not a status line", d)
					continue
				}
				seen = seen || m[3] != "0" // running
			}
		}
		if cols == 80 && !seen {
			t.Errorf("no redraw showed a running target: %q", draws)
		}
		// Left on the terminal: the summary only, no status line.
		for _, l := range lines {
			if strings.Contains(l, "queued") {
				t.Errorf("%d columns: the status line was left on the terminal: %q", cols, lines)
			}
		}
		if got := strings.Join(lines, "\n"); !strings.Contains(got, "3 of 3 targets failed") || !strings.Contains(got, "exit status 3") {
			t.Errorf("%d columns: the summary is not whole on the terminal: %q", cols, lines)
		}
		if got := string(res.stdout); strings.Count(got, ": out\n") != 3 {
			t.Errorf("stdout %q, want a line from each target", got)
		}
	}

	res := runArbor(t, "exec", "-w", set, "--", "sh", "-c", script)
	if strings.Contains(string(res.stderr), "queued") || strings.Contains(string(res.stderr), "\x1b") {
		t.Errorf("status line on a stderr that is not a terminal: %q", res.stderr)
	}
}
