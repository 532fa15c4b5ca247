package spawn

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// TestPipeConnSetPipeSize: the connection to a child sizes both of its
// pipes, as the child sees them (/proc/PID/fdinfo has no size; the child
// reports what F_GETPIPE_SZ gives on its stdin and stdout).
func TestPipeConnSetPipeSize(t *testing.T) {
	// The child is this test binary in a helper mode: it prints the
	// capacity of fds 0 and 1 on its stdout when a line arrives.
	p, conn, err := startProcess([]string{os.Args[0], "-test.run=^TestPipeSizeHelper$"},
		[]string{"ARBOR_PIPESIZE_HELPER=1"}, hclog.NewNullLogger(), "pipesize")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		conn.Close()
		p.Kill()
	}()
	ask := func() string {
		t.Helper()
		if _, err := conn.Write([]byte("?\n")); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			b := make([]byte, 64)
			n, _ := conn.Read(b)
			got <- strings.TrimSpace(string(b[:n]))
		}()
		select {
		case s := <-got:
			return s
		case <-time.After(time.Minute):
			t.Fatal("the child never answered")
			return ""
		}
	}
	if got := ask(); got != "65536 65536" {
		t.Fatalf("before: child's pipes hold %q, want 65536 each", got)
	}
	if err := conn.SetPipeSize(1 << 20); err != nil {
		t.Fatal(err)
	}
	if got := ask(); got != "1048576 1048576" {
		t.Fatalf("after SetPipeSize(1 MiB): child's pipes hold %q", got)
	}
}

// TestPipeSizeHelper is the child of TestPipeConnSetPipeSize.
func TestPipeSizeHelper(t *testing.T) {
	if os.Getenv("ARBOR_PIPESIZE_HELPER") != "1" {
		t.Skip("helper process")
	}
	b := make([]byte, 2)
	for {
		if _, err := os.Stdin.Read(b); err != nil {
			os.Exit(0)
		}
		var sizes []string
		for _, fd := range []int{0, 1} {
			n, err := fcntlPipeSize(fd)
			if err != nil {
				sizes = append(sizes, err.Error())
				continue
			}
			sizes = append(sizes, strconv.Itoa(n))
		}
		os.Stdout.WriteString(strings.Join(sizes, " ") + "\n")
	}
}

func fcntlPipeSize(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0) }
