package test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: master is the test's end, read through
// the runtime poller (so closing it unblocks a pending read); slave is the
// terminal a child gets as its stderr. Output post-processing (ONLCR) is
// turned off so master reads exactly the bytes the child wrote.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		t.Fatalf("unlocking the pty (TIOCSPTLCK): %v", err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		t.Fatalf("pty number (TIOCGPTN): %v", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		t.Fatalf("opening %s: %v", name, err)
	}
	slave = os.NewFile(uintptr(sfd), name)
	tio, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err == nil {
		tio.Oflag &^= unix.OPOST
		err = unix.IoctlSetTermios(sfd, unix.TCSETS, tio)
	}
	if err != nil {
		master.Close()
		slave.Close()
		t.Fatalf("raw output on %s: %v", name, err)
	}
	return master, slave
}

// runArborPTY runs the built binary with args, its stderr on a fresh
// pseudo-terminal of cols columns (stdout to a buffer, stdin /dev/null), and returns what
// the terminal received and the command's result.
func runArborPTY(t *testing.T, cols int, args ...string) (tty string, res result) {
	t.Helper()
	master, slave := openPTY(t)
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: uint16(cols)}); err != nil {
		slave.Close()
		t.Fatalf("setting the pty to %d columns: %v", cols, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, arborBin, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, slave
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatalf("starting arbor %q: %v", args, err)
	}
	// Only the child holds the terminal now: once it (and anything that
	// inherited it) has gone, reads on master drain and then fail with EIO.
	slave.Close()
	var out bytes.Buffer
	readDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				readDone <- err
				return
			}
		}
	}()
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("arbor %q: no exit within %s", args, cliTimeout)
	}
	select {
	case rerr := <-readDone:
		if !errors.Is(rerr, unix.EIO) {
			t.Fatalf("arbor %q: reading the pty: %v", args, rerr)
		}
	case <-time.After(patience):
		// Something still holds the terminal open after arbor exited.
		master.Close()
		<-readDone
		t.Fatalf("arbor %q exited but its terminal stayed open; captured %q", args, out.String())
	}
	res = result{stdout: stdout.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		res.code = ee.ExitCode()
	default:
		t.Fatalf("arbor %q: %v (terminal: %q)", args, err, out.String())
	}
	return out.String(), res
}

// barDraw is one redraw of the progress bar (schollz/progressbar as
// cmd/arbor/push.go configures it): the source's name, for -r "(file N of
// M)", the percentage, the bar, "(done/total, rate)" and "[elapsed:left]",
// or "[elapsed]" alone once done.
var barDraw = regexp.MustCompile(`^(\S+)(?: \(file (\d+) of (\d+)\))? +(\d{1,3})% \|[█ ]+\| \(\S+(?: \S+)?/(\S+ \S+), \S+ \S+/s\) \[([^\]]+)\]$`)

// elapsedOnly is the final "[elapsed]": a duration with no time left.
var elapsedOnly = regexp.MustCompile(`^(?:\d+h)?(?:\d+m)?\d+s$`)

// terminalLines is what a terminal shows after out: '\r' returns to the
// first column and later characters overwrite earlier ones.
func terminalLines(out string) []string {
	var lines []string
	var line []byte
	col := 0
	for i := 0; i < len(out); i++ {
		switch c := out[i]; c {
		case '\r':
			col = 0
		case '\n':
			lines = append(lines, string(line))
			line, col = nil, 0
		default:
			if col < len(line) {
				line[col] = c
			} else {
				line = append(line, c)
			}
			col++
		}
	}
	if len(line) > 0 {
		lines = append(lines, string(line))
	}
	return lines
}

// checkBar asserts that tty, from a terminal of cols columns, is a
// progress bar for name's transfer of total ("64 MiB"): every redraw fits
// in one line of the terminal (no wrap, so no stray lines), percentages
// never go back, the last redraw is at 100% with the elapsed time, and the
// terminal is left with exactly that line and the cursor on a fresh one.
// It returns the redraws' submatches.
func checkBar(t *testing.T, verb, tty, name, total string, cols int) [][]string {
	t.Helper()
	if !strings.HasSuffix(tty, "\n") || strings.Count(tty, "\n") != 1 {
		t.Fatalf("%s: terminal output does not end in its only newline: %q", verb, tty)
	}
	var draws [][]string
	for _, seg := range strings.Split(strings.TrimSuffix(tty, "\n"), "\r") {
		if strings.TrimSpace(seg) == "" {
			continue // a blank of the line before a redraw
		}
		if w := utf8.RuneCountInString(seg); w >= cols {
			t.Errorf("%s: redraw of %d columns on a %d-column terminal wraps: %q", verb, w, cols, seg)
		}
		d := barDraw.FindStringSubmatch(seg)
		if d == nil {
			t.Fatalf("%s: not a progress bar redraw: %q (all: %q)", verb, seg, tty)
		}
		draws = append(draws, d)
	}
	if len(draws) == 0 {
		t.Fatalf("%s: no redraw: %q", verb, tty)
	}
	prev := -1
	for i, d := range draws {
		p, _ := strconv.Atoi(d[4])
		if p < prev || p > 100 {
			t.Errorf("%s: redraw %d: %d%% after %d%%", verb, i, p, prev)
		}
		prev = p
		if d[1] != name || d[5] != total {
			t.Errorf("%s: redraw %d: %q of %q, want %q of %q", verb, i, d[1], d[5], name, total)
		}
		last := i == len(draws)-1
		switch {
		case last && (p != 100 || !elapsedOnly.MatchString(d[6])):
			t.Errorf("%s: last redraw %q: want 100%% with the elapsed time alone", verb, d[0])
		case !last && !strings.Contains(d[6], ":"):
			t.Errorf("%s: redraw %d has no time left: %q", verb, i, d[0])
		}
	}
	lines := terminalLines(tty)
	want := strings.TrimRight(draws[len(draws)-1][0], " ")
	if len(lines) != 1 || strings.TrimRight(lines[0], " ") != want {
		t.Errorf("%s: terminal shows %q, want the last redraw %q alone", verb, lines, want)
	}
	return draws
}

// TestProgressOnTerminal pushes and pulls a 64 MiB file with stderr on a
// real 80-column pseudo-terminal (and pushes it at 200 columns and a tree
// with -r): a progress bar with the file's name, rate and time left is
// drawn on one line per redraw and ends at 100% with the elapsed time and
// a newline; with --quiet, or for a file under the 4 MiB
// threshold, the terminal receives nothing.
func TestProgressOnTerminal(t *testing.T) {
	dir := t.TempDir()
	big, small := filepath.Join(dir, "big"), filepath.Join(dir, "small")
	randomFile(t, big, 64<<20)
	randomFile(t, small, 1<<20)
	want := fileSHA256(t, big)

	pushed, pulled := filepath.Join(dir, "pushed"), filepath.Join(dir, "pulled")
	for _, c := range []struct{ verb, from, to string }{
		{"push", big, pushed},
		{"pull", pushed, pulled},
	} {
		tty, res := runArborPTY(t, 80, c.verb, "--to", "local", c.from, c.to)
		if res.code != 0 {
			t.Fatalf("%s: exit %d, terminal: %q", c.verb, res.code, tty)
		}
		if got := fileSHA256(t, c.to); got != want {
			t.Fatalf("%s: %s has SHA-256 %s, want %s", c.verb, c.to, got, want)
		}
		t.Logf("%s: the terminal received %d bytes, %d redraws: %.600q", c.verb, len(tty), strings.Count(tty, "\r"), tty)
		checkBar(t, c.verb, tty, filepath.Base(c.from), "64 MiB", 80)
	}

	// Wide terminal: the bar grows but still fits one line.
	tty, res := runArborPTY(t, 200, "push", "--to", "local", big, filepath.Join(dir, "wide"))
	if res.code != 0 {
		t.Fatalf("push at 200 columns: exit %d, terminal: %q", res.code, tty)
	}
	checkBar(t, "push at 200 columns", tty, "big", "64 MiB", 200)

	// A tree: "file N of M", N never going back, M the tree's file count.
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		randomFile(t, filepath.Join(tree, n), 3<<20)
	}
	tty, res = runArborPTY(t, 80, "push", "-r", "--to", "local", tree, filepath.Join(dir, "treecopy"))
	if res.code != 0 {
		t.Fatalf("push -r: exit %d, terminal: %q", res.code, tty)
	}
	draws := checkBar(t, "push -r", tty, "tree", "9.0 MiB", 80)
	n := 0
	for i, d := range draws {
		got, _ := strconv.Atoi(d[2])
		if d[3] != "3" || got < n || got < 1 || got > 3 {
			t.Errorf("push -r: redraw %d: file %q of %q after file %d, want 1..3 of 3", i, d[2], d[3], n)
		}
		n = got
	}
	if n != 3 {
		t.Errorf("push -r: last redraw at file %d, want file 3 of 3", n)
	}

	for _, c := range []struct {
		name string
		args []string
		to   string
	}{
		{"push --quiet", []string{"push", "--to", "local", "--quiet", big}, filepath.Join(dir, "qpushed")},
		{"pull -q", []string{"pull", "--to", "local", "-q", pushed}, filepath.Join(dir, "qpulled")},
		{"push under 4 MiB", []string{"push", "--to", "local", small}, filepath.Join(dir, "spushed")},
		{"pull under 4 MiB", []string{"pull", "--to", "local", small}, filepath.Join(dir, "spulled")},
	} {
		tty, res := runArborPTY(t, 80, append(c.args, c.to)...)
		if res.code != 0 {
			t.Fatalf("%s: exit %d, terminal: %q", c.name, res.code, tty)
		}
		if tty != "" {
			t.Errorf("%s: the terminal received %q, want nothing", c.name, tty)
		}
		if _, err := os.Stat(c.to); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
