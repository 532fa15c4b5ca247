package control_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// patience only stops a hang: nothing a test does is bounded by it.
const patience = time.Minute

func TestSocketPath(t *testing.T) {
	t.Setenv(control.EnvSocket, "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("HOME", "/home/u")
	for _, c := range []struct {
		flag, env, xdg, want string
	}{
		{"", "", "", "/home/u/.arbor/arbor.sock"},
		{"", "", "/run/user/7", "/run/user/7/arbor/arbor.sock"},
		{"", "/e/s.sock", "/run/user/7", "/e/s.sock"},
		{"/f/s.sock", "/e/s.sock", "/run/user/7", "/f/s.sock"},
	} {
		t.Setenv(control.EnvSocket, c.env)
		t.Setenv("XDG_RUNTIME_DIR", c.xdg)
		got, err := control.SocketPath(c.flag)
		if err != nil || got != c.want {
			t.Errorf("SocketPath(%q) with env %q xdg %q = %q, %v; want %q", c.flag, c.env, c.xdg, got, err, c.want)
		}
	}
}

// TestListen: modes, one server per socket, stale sockets replaced,
// anything else at the path left alone.
func TestListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "arbor.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v (%v), want 0700", st.Mode().Perm(), err)
	}
	if st, err := os.Lstat(path); err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v (%v), want a 0600 socket", st.Mode(), err)
	}
	if _, err := control.Listen(path); !errors.Is(err, control.ErrAlreadyRunning) || !strings.Contains(err.Error(), "pid") {
		t.Errorf("second Listen: %v, want ErrAlreadyRunning naming the pid", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}

	// A socket file nothing answers: what a killed server leaves.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := control.Dial(context.Background(), path, agent.Options{}); !errors.Is(err, control.ErrNotRunning) || !strings.Contains(err.Error(), "stale") {
		t.Errorf("Dial on a stale socket: %v, want ErrNotRunning, stale", err)
	}
	ln, err = control.Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if !ln.RemovedStale {
		t.Error("stale socket not reported")
	}
	ln.Close()

	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := control.Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v, want a refusal", err)
	}
	if _, err := control.Dial(context.Background(), filepath.Join(t.TempDir(), "none"), agent.Options{}); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("Dial with no socket: %v, want ErrNotRunning", err)
	}
}

// serve runs an in-process root behind a control socket.
func serve(t *testing.T, cfg control.Config) (string, *agent.Node, *control.Server) {
	t.Helper()
	return serveWith(t, cfg, agent.Options{})
}

// serveWith is serve with the root's options o (its registry and logger
// are the test's).
func serveWith(t *testing.T, cfg control.Config, o agent.Options) (string, *agent.Node, *control.Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "arbor.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	o.Registry, o.Logger = reg, hclog.NewNullLogger()
	root, err := agent.NewRoot(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(root, reg, ln, cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.StopAccepting()
		root.Close()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path, root, srv
}

func dial(t *testing.T, ctx context.Context, path string) (*agent.Node, error) {
	n, err := control.Dial(ctx, path, agent.Options{Logger: hclog.NewNullLogger()})
	if err == nil {
		t.Cleanup(func() { n.Close() })
	}
	return n, err
}

// TestAdmission: a client beyond the limit waits for a slot, gets one when
// a client leaves, and one that cannot wait that long gets ErrBusy. An
// attached client calls the root with the root's authority and is not a
// node of the tree.
func TestAdmission(t *testing.T) {
	path, root, _ := serve(t, control.Config{MaxClients: 1})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	first, err := dial(t, ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var es []control.NodeEntry
	if err := first.Remote(0, "root").Call(ctx, "serve.tree", nil, &es); err != nil || len(es) != 1 {
		t.Fatalf("serve.tree from a client: %v, %v; want the root alone", es, err)
	}
	if len(root.Tree.Nodes()) != 0 {
		t.Errorf("the client is in the tree: %v", root.Tree.Nodes())
	}

	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if _, err := dial(t, short, path); !errors.Is(err, control.ErrBusy) || !strings.Contains(err.Error(), "waited") {
		t.Fatalf("client past its wait: %v, want ErrBusy: waited", err)
	}

	type dialed struct {
		n   *agent.Node
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		n, err := control.Dial(ctx, path, agent.Options{Logger: hclog.NewNullLogger()})
		ch <- dialed{n, err}
	}()
	first.Close()
	d := <-ch
	if d.err != nil {
		t.Fatalf("waiting client: %v", d.err)
	}
	defer d.n.Close()
	if err := d.n.Remote(0, "root").Call(ctx, "agent.ping", nil, nil); err != nil {
		t.Fatalf("call from the admitted client: %v", err)
	}
}

// rawClient connects to the socket without the client's side of the
// protocol and reads the admission line.
func rawClient(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	line := make([]byte, len("ARBOR1 go\n"))
	if _, err := io.ReadFull(c, line); err != nil || string(line) != "ARBOR1 go\n" {
		t.Fatalf("admission line %q, %v", line, err)
	}
	return c
}

// TestFailedHelloForgetsClient: a client whose hello fails leaves nothing
// in the tree's list of clients (it used to stay there for the server's
// life, one entry per failed client).
func TestFailedHelloForgetsClient(t *testing.T) {
	path, root, srv := serve(t, control.Config{})
	for i := 0; i < 3; i++ {
		c := rawClient(t, path)
		c.Write([]byte("this is not a hello\n"))
		c.Close()
	}
	// A client that attaches and leaves is forgotten too.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	n, err := control.Dial(ctx, path, agent.Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	unsub := root.Monitor.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.DelRoute && e.ID == n.Router.ID() {
			close(gone)
		}
	})
	defer unsub()
	n.Close()
	select {
	case <-gone:
	case <-ctx.Done():
		t.Fatal("the client's route was never withdrawn")
	}
	srv.Close() // waits for every client's handler
	if got := root.Tree.Clients(); got != 0 {
		t.Fatalf("%d clients left in the tree's list after they all left, want 0", got)
	}
}

// TestCloseWhileClientsConnect: clients connecting while the server closes
// are either handled before Close returns or turned away; a handler never
// starts after Close (under -race: WaitGroup.Add racing Wait).
func TestCloseWhileClientsConnect(t *testing.T) {
	for i := 0; i < 200; i++ {
		path, _, srv := serve(t, control.Config{})
		stop := make(chan struct{})
		served := make(chan struct{}, 1)
		var wg sync.WaitGroup
		for j := 0; j < 4; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.Dial("unix", path)
					if err != nil {
						return
					}
					var b [1]byte
					if _, err := c.Read(b[:]); err == nil {
						select {
						case served <- struct{}{}:
						default:
						}
					}
					c.Close()
				}
			}()
		}
		<-served
		srv.Close()
		close(stop)
		wg.Wait()
	}
}

// withExe is o with this test binary as the agent executable.
func withExe(t *testing.T, o agent.Options) agent.Options {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Exe = exe
	return o
}

// rootClient attaches a client to the server at path and returns it, its
// handle on the root, and a context that only stops a hang.
func rootClient(t *testing.T, path string) (*agent.Node, *arborctx.Remote, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	client, err := dial(t, ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	rm := client.Remote(wire.RootID, "root")
	t.Cleanup(rm.Release)
	return client, rm, ctx
}
