package test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// hostileClient is a client of arbor serve's control socket that goes
// through the real admission and hello (stream.Accept, as agent.Attach
// does) and then does what the CLI never does.
type hostileClient struct {
	link *stream.Link
	id   uint32
	conn *stallingConn
}

// dialHostile attaches a hostile client to the server at socket.
func dialHostile(t *testing.T, socket string) *hostileClient {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	// The admission line, byte by byte: the link's bytes follow it.
	var line []byte
	var b [1]byte
	_ = c.SetReadDeadline(time.Now().Add(patience))
	for len(line) == 0 || line[len(line)-1] != '\n' {
		if _, err := c.Read(b[:]); err != nil {
			t.Fatalf("admission: %v", err)
		}
		line = append(line, b[0])
	}
	_ = c.SetReadDeadline(time.Time{})
	if string(line) != "ARBOR1 go\n" {
		t.Fatalf("admission line %q", line)
	}
	sc := newStallingConn(c)
	cfg := stream.DefaultConfig()
	cfg.MaxChannels = 1 << 16 // it does not hold itself back
	cfg.Logger = hclog.NewNullLogger()
	l, hello, err := stream.Accept(sc, cfg, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	l.Start(func(wire.Header, []byte) {}, nil) // answers nothing, heartbeats included
	t.Cleanup(func() { l.Close() })
	return &hostileClient{link: l, id: hello.ID, conn: sc}
}

// call sends a CALL of fn to the root; replyTo 0 wants no reply.
func (h *hostileClient) call(ctx context.Context, fn string, args any, replyTo uint32) error {
	raw, err := wire.Marshal(args)
	if err != nil {
		return err
	}
	body, err := wire.Marshal(wire.CallRequest{Fn: fn, Args: raw})
	if err != nil {
		return err
	}
	return h.link.SendWait(ctx, wire.Header{Dst: 0, Src: h.id, Auth: h.id, Handle: wire.HandleCall, ReplyTo: replyTo}, body)
}

// TestServeHostileClient: a client that floods the root with calls that
// block, fills MaxChannels channels with data nobody claims, then stops
// reading and sends only calls that want no reply, neither stops tree,
// spawn and ping for everyone else nor keeps SIGTERM from stopping serve,
// its children with it.
func TestServeHostileClient(t *testing.T) {
	// The heartbeat would close the hostile link after DownAfter; here it
	// must stay, stalled, for the whole test.
	s := startServe(t, "--unresponsive-after", "10m", "--down-after", "20m")
	_, child := s.spawnID(t, "local")
	h := dialHostile(t, s.socket)
	ctx := t.Context()

	// Calls that block, far more than the root has workers and queue.
	for i := uint32(0); i < 2000; i++ {
		if err := h.call(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 3600}, wire.FirstDynamicHandle+i); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// Every channel the link allows, to the root, each with an open frame
	// the root accepts (the client has its authority) and as much data as
	// fits before anyone claims it.
	for i := 0; i < stream.DefaultMaxChannels; i++ {
		c, err := h.link.OpenChannel()
		if err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
		body, err := wire.Marshal(router.ChannelOpen{ID: uint32(i + 1), Service: "hostile"})
		if err != nil {
			t.Fatal(err)
		}
		frame := wire.AppendFrame(nil, wire.Header{Dst: 0, Src: h.id, Auth: h.id, Handle: wire.HandleChannel}, body)
		frame = append(frame, bytes.Repeat([]byte("x"), 256<<10-len(frame))...)
		go func() { _, _ = c.Write(frame) }()
	}
	// Then it stops reading, and sends only calls that want no reply.
	h.conn.stall()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := h.call(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 3600}, 0); err != nil {
				return
			}
		}
	}()
	t.Cleanup(wg.Wait)

	// Everyone else is still served.
	s.must(t, "tree")
	s.spawnID(t, "local")
	s.must(t, "ping", child)

	procs := descendants(s.pid())
	if err := syscall.Kill(s.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := s.r.wait(t, 2*time.Minute) // a hang guard, not a bound on the shutdown
	t.Logf("serve exited %d after SIGTERM", code)
	requireExited(t, "serve's children", procs, patience)
}

// stallingConn passes bytes until stall is called; then its reads block
// until it is closed, like a process that stopped reading.
type stallingConn struct {
	io.ReadWriteCloser
	stallOnce, closeOnce sync.Once
	stalled, closed      chan struct{}
}

func newStallingConn(c io.ReadWriteCloser) *stallingConn {
	return &stallingConn{ReadWriteCloser: c, stalled: make(chan struct{}), closed: make(chan struct{})}
}

func (s *stallingConn) stall() { s.stallOnce.Do(func() { close(s.stalled) }) }

func (s *stallingConn) Read(p []byte) (int, error) {
	select {
	case <-s.stalled:
		<-s.closed
		return 0, io.ErrClosedPipe
	default:
		return s.ReadWriteCloser.Read(p)
	}
}

func (s *stallingConn) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return s.ReadWriteCloser.Close()
}

// TestServeStopsWithStalledLinks: SIGTERM stops serve even when no peer
// cooperates: two children that stopped reading (SIGSTOP: they answer
// neither SHUTDOWN nor anything else, and their links stay up, the
// heartbeat being slow to judge them) and a control client that stopped
// reading too. Serve closes the links, kills the children and exits.
func TestServeStopsWithStalledLinks(t *testing.T) {
	for _, again := range []bool{false, true} {
		name := "SIGTERM"
		if again {
			name = "SIGTERM twice"
		}
		t.Run(name, func(t *testing.T) { stopWithStalledLinks(t, again) })
	}
}

// stopWithStalledLinks is TestServeStopsWithStalledLinks; again sends a
// second SIGTERM once serve says it is stopping, which makes it kill the
// children and exit at once (unless it was down already).
func stopWithStalledLinks(t *testing.T, again bool) {
	s := startServe(t, "--unresponsive-after", "10m", "--down-after", "20m")
	s.spawnID(t, "local")
	s.spawnID(t, "local")
	procs := descendants(s.pid())
	if len(procs) != 2 {
		t.Fatalf("%d processes under serve, want 2 agents: %v", len(procs), procs)
	}
	h := dialHostile(t, s.socket)
	h.conn.stall()
	for _, p := range procs {
		if err := syscall.Kill(p.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.running() {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	if err := syscall.Kill(s.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if again {
		s.r.stderr.waitLine(t, regexp.MustCompile(`arbor serve: stopping`), patience)
		if err := syscall.Kill(s.pid(), syscall.SIGTERM); err != nil && err != syscall.ESRCH {
			t.Fatal(err)
		}
	}
	code := s.r.wait(t, 2*time.Minute) // a hang guard, not a bound on the shutdown
	t.Logf("serve exited %d after SIGTERM; stderr:\n%s", code, s.r.stderr)
	forced := strings.Contains(s.r.stderr.String(), "terminated again: killing the children and exiting")
	switch {
	case forced && (!again || code != 1):
		t.Fatalf("serve forced its exit (status %d) after %s", code, t.Name())
	case !forced && code != 0:
		t.Fatalf("serve exited %d", code)
	}
	requireExited(t, "serve's stopped children", procs, patience)
}
