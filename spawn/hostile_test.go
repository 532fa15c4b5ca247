package spawn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// hostilePeerEnv, when set, makes the test binary a hostile remote end of
// the bootstrap instead of running tests: started as the "ssh" of a hop
// (SSHOptions.Path), it speaks the bootstrap protocol on stdin and stdout
// and asks for the agent binary over and over.
const hostilePeerEnv = "ARBOR_TEST_HOSTILE_PEER"

func TestMain(m *testing.M) {
	if os.Getenv(hostilePeerEnv) != "" {
		if err := hostilePeer(os.Stdin, os.Stdout, os.Getenv(hostilePeerEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "hostile peer:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hostilePeer answers every upload with another "need" line, up to 100
// times, and records how many binaries it received (and its PID) in the
// file named by spec "HASH:FILE" after each one.
func hostilePeer(in io.Reader, out io.Writer, spec string) error {
	hash, file, _ := strings.Cut(spec, ":")
	goos, goarch, _ := strings.Cut(ThisPlatform, "/")
	r := bufio.NewReader(in)
	for n := 1; n <= 100; n++ {
		if _, err := fmt.Fprintf(out, "%sneed %s %s %s raw\n", bootPrefix, goos, goarch, hash); err != nil {
			return err
		}
		line, err := readLine(r)
		if err != nil {
			return err
		}
		size, err := strconv.Atoi(line)
		if err != nil {
			return fmt.Errorf("length line %q: %w", line, err)
		}
		if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
			return err
		}
		if err := os.WriteFile(file, fmt.Appendf(nil, "%d %d", os.Getpid(), n), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// TestBootstrapUploadsOnce: a remote end that answers each upload with
// another "need" gets the binary once; its second "need" fails the spawn
// at once with an error naming the node and the hop, and its process is
// killed. Before, the parent uploaded again for every "need" until the
// connect timeout (1,300 uploads of the agent in one timeout).
func TestBootstrapUploadsOnce(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bins := &Binaries{Self: fakeAgent(t)}
	record := t.TempDir() + "/uploads"
	t.Setenv(hostilePeerEnv, hashOf(bins.Self)+":"+record)
	const name = "hostile-node"
	link := stream.DefaultConfig()
	link.HelloTimeout = time.Minute // a hang guard: the spawn must fail long before
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, _, _, err := SSH(ctx, "db1", RemoteOptions{
		Hello:    wire.Hello{ID: 5, Name: name},
		Link:     link,
		Logger:   hclog.NewNullLogger(),
		Binaries: bins,
		SSH:      SSHOptions{Path: exe},
	})
	if err == nil {
		l.Close()
		t.Fatal("the spawn succeeded")
	}
	var he *HopError
	if !errors.As(err, &he) || !errors.Is(err, ErrBootstrap) || he.Node != name || he.Hop != "ssh:db1" {
		t.Fatalf("want a *HopError (ErrBootstrap) for %s over ssh:db1, got %#v: %v", name, he, err)
	}
	want := "arbor: spawning " + name + " (ssh:db1): remote asked for the agent binary again after it was uploaded"
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error\n%s\nwant it to start with\n%s", err, want)
	}
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("the peer received no upload: %v", err)
	}
	var pid, uploads int
	if _, err := fmt.Sscanf(string(data), "%d %d", &pid, &uploads); err != nil {
		t.Fatalf("record %q: %v", data, err)
	}
	if uploads != 1 {
		t.Fatalf("the hostile peer received %d uploads, want 1", uploads)
	}
	// The peer waits for another binary that never comes: only the spawn
	// can have ended it, and it has reaped it.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the hostile peer (pid %d) is still there: kill 0: %v", pid, err)
	}
}

// TestBootstrapStatusOrder: status lines out of the protocol's order, or
// malformed, fail the bootstrap with ErrBootstrap; a binary is uploaded
// at most once whatever the remote end says.
func TestBootstrapStatusOrder(t *testing.T) {
	bins := &Binaries{Self: fakeAgent(t)}
	hash := hashOf(bins.Self)
	goos, goarch, _ := strings.Cut(ThisPlatform, "/")
	need := fmt.Sprintf("need %s %s %s raw", goos, goarch, hash)
	for _, tc := range []struct {
		name    string
		lines   []string
		uploads int
		want    string // in the error; "" means success
	}{
		{"hit", []string{"hit " + goos + " " + goarch}, 0, ""},
		{"need then ok", []string{need, "ok"}, 1, ""},
		{"ok first", []string{"ok"}, 0, "remote reported the agent binary stored before any was uploaded"},
		{"need twice", []string{need, need}, 1, "remote asked for the agent binary again after it was uploaded"},
		{"hit after upload", []string{need, "hit " + goos + " " + goarch}, 1, "remote reported a cache hit after the agent binary was uploaded"},
		{"junk then need twice", []string{"motd", need, "still noisy", need}, 1, "remote asked for the agent binary again"},
		{"bad platform", []string{"need ../.. x " + hash + " raw"}, 0, "malformed bootstrap status"},
		{"bad hash", []string{"need " + goos + " " + goarch + " 1234 raw"}, 0, "malformed bootstrap status"},
		{"bad encoding", []string{"need " + goos + " " + goarch + " " + hash + " zstd"}, 0, "malformed bootstrap status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, uploads, err := scriptedBootstrap(t, bins, tc.lines)
			if uploads != tc.uploads {
				t.Errorf("%d uploads, want %d", uploads, tc.uploads)
			}
			if tc.want == "" {
				if err != nil || res.mode == "" {
					t.Fatalf("want success, got %+v, %v", res, err)
				}
				return
			}
			var he *HopError
			if !errors.As(err, &he) || !errors.Is(err, ErrBootstrap) || he.Node != "node" || he.Hop != "hop" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want ErrBootstrap for node over hop saying %q, got %v", tc.want, err)
			}
		})
	}
}

// scriptedBootstrap runs runBootstrap against a remote end over real
// pipes that says lines (each prefixed with the protocol's marker, but
// for "motd" lines) and reads an upload after each "need". It returns
// what runBootstrap returned and how many uploads the remote end read.
func scriptedBootstrap(t *testing.T, bins *Binaries, lines []string) (bootResult, int, error) {
	t.Helper()
	upR, upW, err := os.Pipe() // remote → parent
	if err != nil {
		t.Fatal(err)
	}
	downR, downW, err := os.Pipe() // parent → remote
	if err != nil {
		t.Fatal(err)
	}
	uploads := make(chan int, 1)
	go func() {
		defer upW.Close()
		r := bufio.NewReader(downR)
		n := 0
		defer func() { uploads <- n }()
		for _, l := range lines {
			if l == "motd" || l == "still noisy" {
				fmt.Fprintln(upW, l)
				continue
			}
			if _, err := fmt.Fprintln(upW, bootPrefix+l); err != nil {
				return
			}
			if !strings.HasPrefix(l, "need ") {
				continue
			}
			line, err := readLine(r)
			if err != nil {
				return
			}
			size, err := strconv.Atoi(line)
			if err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
				return
			}
			n++
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := runBootstrap(ctx, bufio.NewReader(upR), downW, bins, "node", "hop", hclog.NewNullLogger())
	downW.Close() // the remote end reads EOF if it waits for more
	n := <-uploads
	upR.Close()
	downR.Close()
	return res, n, err
}
