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
// pseudo-terminal (stdout to a buffer, stdin /dev/null), and returns what
// the terminal received and the command's result.
func runArborPTY(t *testing.T, args ...string) (tty string, res result) {
	t.Helper()
	master, slave := openPTY(t)
	defer master.Close()
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

// barDraw is one redraw of the progress bar as cmd/arbor/push.go writes
// it: "\r[" 30 columns of '=' then ' ' "] " percent "% " done "/" total " "
// rate "/s ETA " mm:ss (or --:-- once done) and padding spaces.
var barDraw = regexp.MustCompile(`\r\[([= ]{30})\] +(\d{1,3}\.\d)% (\d+\.\d (?:B|KiB|MiB|GiB|TiB))/(\d+\.\d (?:B|KiB|MiB|GiB|TiB)) (\d+\.\d (?:B|KiB|MiB|GiB|TiB))/s ETA (\d{2,}:\d{2}|--:--) +`)

// barOutput is all a transfer may write to a terminal: one or more
// redraws, then a newline that leaves the last one in place.
var barOutput = regexp.MustCompile(`^(?:` + barDraw.String() + `)+\n$`)

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

// checkBar asserts that tty is a progress bar for a transfer of total
// ("64.0 MiB"): the first redraw is partial with a rate and a numeric
// ETA, percentages never go back, the last redraw is a full bar at 100%,
// and the terminal is left with exactly that line and the cursor on a
// fresh one.
func checkBar(t *testing.T, verb, tty, total string) {
	t.Helper()
	if !barOutput.MatchString(tty) {
		t.Fatalf("%s: terminal output is not progress bar redraws ending in a newline: %q", verb, tty)
	}
	draws := barDraw.FindAllStringSubmatch(tty, -1)
	prev := -1.0
	for i, d := range draws {
		bar, pct, done, tot, rate, eta := d[1], d[2], d[3], d[4], d[5], d[6]
		p, _ := strconv.ParseFloat(pct, 64)
		if p < prev || p > 100 {
			t.Errorf("%s: redraw %d: %s%% after %.1f%%", verb, i, pct, prev)
		}
		prev = p
		if tot != total {
			t.Errorf("%s: redraw %d: total %q, want %q", verb, i, tot, total)
		}
		if want := int(p * 30 / 100); strings.Count(bar, "=") != want || strings.TrimRight(bar, " ") != strings.Repeat("=", want) {
			t.Errorf("%s: redraw %d: bar %q does not show %s%%", verb, i, bar, pct)
		}
		if strings.HasPrefix(rate, "0.0 ") {
			t.Errorf("%s: redraw %d: rate %q", verb, i, rate)
		}
		last := i == len(draws)-1
		switch {
		case last && (p != 100 || done != total || eta != "--:--"):
			t.Errorf("%s: last redraw %q: want 100.0%% of %s with ETA --:--", verb, d[0], total)
		case !last && p < 100 && eta == "--:--":
			t.Errorf("%s: redraw %d at %s%% has no ETA: %q", verb, i, pct, d[0])
		}
	}
	// The bar draws on the first chunk whatever the clock says: the test
	// sees a partial bar with a numeric ETA however fast the transfer is.
	if first := draws[0]; first[2] == "100.0" || first[6] == "--:--" {
		t.Errorf("%s: first redraw %q is not a partial bar with an ETA", verb, first[0])
	}
	lines := terminalLines(tty)
	want := strings.TrimRight(strings.TrimPrefix(draws[len(draws)-1][0], "\r"), " ")
	if len(lines) != 1 || strings.TrimRight(lines[0], " ") != want {
		t.Errorf("%s: terminal shows %q, want the last redraw %q alone", verb, lines, want)
	}
}

// TestProgressOnTerminal pushes and pulls a 64 MiB file with stderr on a
// real pseudo-terminal: a progress bar with rate and ETA is drawn and ends
// on a full bar and a newline; with --quiet, or for a file under the 4 MiB
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
		tty, res := runArborPTY(t, c.verb, "--to", "local", c.from, c.to)
		if res.code != 0 {
			t.Fatalf("%s: exit %d, terminal: %q", c.verb, res.code, tty)
		}
		if got := fileSHA256(t, c.to); got != want {
			t.Fatalf("%s: %s has SHA-256 %s, want %s", c.verb, c.to, got, want)
		}
		t.Logf("%s: the terminal received %d bytes, %d redraws: %.600q", c.verb, len(tty), strings.Count(tty, "\r"), tty)
		checkBar(t, c.verb, tty, "64.0 MiB")
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
		tty, res := runArborPTY(t, append(c.args, c.to)...)
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
