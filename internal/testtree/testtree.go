// Package testtree builds Arbor trees inside one process over real pipes,
// for tests and benchmarks: every node is a router with its RouteMonitor,
// and every link a real yamux session over an io.Pipe, os.Pipe or unix
// socket pair.
package testtree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Transport makes a connected pair of byte streams.
type Transport struct {
	Name string
	Pair func() (parent, child io.ReadWriteCloser, err error)
}

// Transports is every transport tests loop over.
var Transports = []Transport{
	{"io.Pipe", IOPipe},
	{"os.Pipe", OSPipe},
	{"unix", UnixPair},
}

type duplex struct {
	io.Reader
	io.Writer
	closers []io.Closer
	once    sync.Once
}

// PipeWriteConn is the descriptor of an os.Pipe's write end
// (stream.PipeWriter): links over it write small frames themselves, as
// between real processes. An io.Pipe has none.
func (d *duplex) PipeWriteConn() (syscall.RawConn, error) {
	if sc, ok := d.Writer.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (d *duplex) Close() error {
	d.once.Do(func() {
		for _, c := range d.closers {
			c.Close()
		}
	})
	return nil
}

// IOPipe joins two io.Pipes into a duplex pair.
func IOPipe() (io.ReadWriteCloser, io.ReadWriteCloser, error) {
	ar, bw := io.Pipe() // child → parent
	br, aw := io.Pipe() // parent → child
	a := &duplex{Reader: ar, Writer: aw, closers: []io.Closer{ar, aw}}
	b := &duplex{Reader: br, Writer: bw, closers: []io.Closer{br, bw}}
	return a, b, nil
}

// OSPipe joins two os.Pipes (kernel pipes, as between real processes).
func OSPipe() (io.ReadWriteCloser, io.ReadWriteCloser, error) {
	ar, bw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	br, aw, err := os.Pipe()
	if err != nil {
		ar.Close()
		bw.Close()
		return nil, nil, err
	}
	a := &duplex{Reader: ar, Writer: aw, closers: []io.Closer{ar, aw}}
	b := &duplex{Reader: br, Writer: bw, closers: []io.Closer{br, bw}}
	return a, b, nil
}

// UnixPair is a connected unix stream socket pair.
func UnixPair() (io.ReadWriteCloser, io.ReadWriteCloser, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	conn := func(fd int, name string) (net.Conn, error) {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		return net.FileConn(f)
	}
	a, err := conn(fds[0], "parent")
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	b, err := conn(fds[1], "child")
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// hangGuard bounds a wait that only a hang could make long (a busy machine
// only slows it down).
const hangGuard = time.Minute

// Node is one node of an in-process tree.
type Node struct {
	R      *router.Router
	M      *routemonitor.Monitor
	Parent *Node
	// Up is the parent's port for this node's link (nil at the root); Down
	// is this node's port for its parent link.
	Up, Down *router.Port
}

// Options tune a tree.
type Options struct {
	AllowSiblingRoutes bool
	MaxMessage         uint32
	Logger             hclog.Logger
	Transport          Transport
	// SendQueue, when set, is the data queue of both ends of a new link
	// (stream.Config.SendQueue); StreamWindow, when set, the child end's
	// receive window: small values make congestion cheap to reach.
	SendQueue    int
	StreamWindow uint32
	// ControlReserve, when set, is the control reserve of both ends
	// (stream.Config.ControlReserve).
	ControlReserve int
	// Quota is every router's per-link quota (zero fields: defaults).
	Quota router.Quota
}

func (o *Options) logger() hclog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return hclog.NewNullLogger()
}

// Root builds a root node.
func Root(tb testing.TB, o Options) *Node {
	tb.Helper()
	cfg := router.DefaultConfig()
	cfg.AllowSiblingRoutes = o.AllowSiblingRoutes
	cfg.Quota = o.Quota
	if o.MaxMessage != 0 {
		cfg.MaxMessage = o.MaxMessage
	}
	cfg.Logger = o.logger().Named("root")
	r, err := router.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	n := &Node{R: r, M: routemonitor.New(r)}
	tb.Cleanup(func() { r.Close() })
	return n
}

// Spawn attaches a new child to n over o's transport and returns it once
// both ends of the link are up.
func (n *Node) Spawn(tb testing.TB, o Options, name string) *Node {
	tb.Helper()
	c, err := n.SpawnErr(o, name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.R.Close() })
	return c
}

// Client attaches a new child to n the way arbor serve attaches a client of
// its control socket: trusted with n's authority
// (router.AttachChildWithAuthority).
func Client(tb testing.TB, n *Node, o Options, name string) *Node {
	tb.Helper()
	c, err := n.spawn(o, name, true)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.R.Close() })
	return c
}

// SpawnErr is Spawn without a testing.TB, for benchmarks of many nodes.
func (n *Node) SpawnErr(o Options, name string) (*Node, error) {
	return n.spawn(o, name, false)
}

func (n *Node) spawn(o Options, name string, authority bool) (*Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	id, err := n.R.AllocateID(ctx)
	if err != nil {
		return nil, err
	}
	tr := o.Transport
	if tr.Pair == nil {
		tr = Transports[1]
	}
	pc, cc, err := tr.Pair()
	if err != nil {
		return nil, err
	}
	fullName := name
	if n.R.ID() != wire.RootID {
		fullName = n.R.Name() + "/" + name
	}
	hello := wire.Hello{
		ID: id, Name: fullName, ParentID: n.R.ID(),
		Ancestors:          append([]uint32{n.R.ID()}, n.R.Ancestors()...),
		MaxMessage:         n.R.MaxMessage(),
		AllowSiblingRoutes: n.R.AllowSiblingRoutes(),
	}
	log := o.logger()
	type accepted struct {
		l   *stream.Link
		h   wire.Hello
		err error
	}
	ch := make(chan accepted, 1)
	ccfg := &stream.Config{
		MaxMessage: wire.DefaultMaxMessage, HelloTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, StreamWindow: 16 << 20, SendQueue: 1024,
		Logger: log.Named(fullName),
	}
	pcfg := stream.DefaultConfig()
	if o.SendQueue > 0 {
		ccfg.SendQueue, pcfg.SendQueue = o.SendQueue, o.SendQueue
	}
	if o.StreamWindow > 0 {
		ccfg.StreamWindow = o.StreamWindow
	}
	ccfg.ControlReserve, pcfg.ControlReserve = o.ControlReserve, o.ControlReserve
	go func() {
		l, h, err := stream.Accept(cc, ccfg, os.Getpid())
		ch <- accepted{l, h, err}
	}()
	pcfg.MaxMessage = n.R.MaxMessage()
	pcfg.Logger = log.Named(n.R.Name())
	pl, _, err := stream.Open(pc, hello, pcfg)
	acc := <-ch
	if err != nil || acc.err != nil {
		if acc.l != nil {
			acc.l.Close()
		}
		return nil, fmt.Errorf("spawn %s: open: %v, accept: %v", fullName, err, acc.err)
	}
	rcfg := router.FromHello(acc.h)
	rcfg.Logger = log.Named(fullName)
	rcfg.Quota = o.Quota
	cr, err := router.New(rcfg)
	if err != nil {
		pl.Close()
		acc.l.Close()
		return nil, err
	}
	child := &Node{R: cr, M: routemonitor.New(cr), Parent: n}
	if child.Down, err = cr.AttachParent(acc.l); err != nil {
		pl.Close()
		return nil, err
	}
	attach := n.R.AttachChild
	if authority {
		attach = n.R.AttachChildWithAuthority
	}
	if child.Up, err = attach(pl); err != nil {
		cr.Close()
		return nil, err
	}
	return child, nil
}

// WaitRoute blocks until n routes id, or fails tb after a deadline.
func (n *Node) WaitRoute(tb testing.TB, id uint32) {
	tb.Helper()
	n.waitFor(tb, func() bool { _, _, ok := n.R.Lookup(id); return ok }, fmt.Sprintf("route to %d", id))
}

// WaitNoRoute blocks until n no longer routes id, or fails tb after a deadline.
func (n *Node) WaitNoRoute(tb testing.TB, id uint32) {
	tb.Helper()
	n.waitFor(tb, func() bool { _, _, ok := n.R.Lookup(id); return !ok }, fmt.Sprintf("no route to %d", id))
}

// waitFor waits on route events (not on a timer) until cond holds.
func (n *Node) waitFor(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	changed := make(chan struct{}, 1)
	unsub := n.M.Subscribe(func(routemonitor.Event) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer unsub()
	deadline := time.NewTimer(hangGuard)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("node %d: timed out waiting for %s", n.R.ID(), what)
		}
	}
}

// ID is the node's ID.
func (n *Node) ID() uint32 { return n.R.ID() }
