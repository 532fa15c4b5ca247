package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/stream"
	"github.com/hashicorp/go-hclog"
)

// Admission lines (see the package comment).
const (
	lineWait = "ARBOR1 wait\n"
	lineGo   = "ARBOR1 go\n"
	lineBusy = "ARBOR1 busy\n"
)

// Config bounds the control socket's clients.
type Config struct {
	// MaxClients is how many CLI clients are attached at once; more wait
	// for a slot (default 16).
	MaxClients int
	// MaxWaiting is how many clients may wait for a slot; beyond that a
	// client is told the server is busy (default 1024).
	MaxWaiting int
	// HelloTimeout bounds a client's hello once admitted (default 10 s).
	HelloTimeout time.Duration
	// Pool is the policy of the pool of warm nodes (nil fields: defaults).
	Pool PoolConfig
}

func (c Config) withDefaults() Config {
	if c.MaxClients <= 0 {
		c.MaxClients = 16
	}
	if c.MaxWaiting <= 0 {
		c.MaxWaiting = 1024
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = 10 * time.Second
	}
	return c
}

// Server serves a tree's root on a control socket. It is safe for
// concurrent use.
type Server struct {
	root *agent.Node
	ln   *Listener
	cfg  Config
	log  hclog.Logger

	slots   chan struct{}
	waiting atomic.Int64

	stopReq  chan struct{} // closed by serve.stop
	stopOnce sync.Once

	// watchers are the running watches (serve.watch): serve.stop tells
	// each of them before the tree goes down, and stopping says it did,
	// so a watch that starts later is told as it starts. A client may
	// run several.
	watchMu  sync.Mutex
	watchers map[watcher]struct{}
	stopping bool
	closed   chan struct{}
	close    sync.Once

	// mu orders every wg.Add before Close's wg.Wait: once closing is set
	// no handler starts.
	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup

	lnOnce    sync.Once
	accepting atomic.Bool

	spawnLocks keyLock // serve.spawn's locks on names and hops (spawnPath)

	pool *Pool
}

// NewServer prepares a server for root on ln and registers the serve.*
// functions in reg, the registry root serves. Only callers with the
// root's authority (the root itself and its control-socket clients) may
// call them. Serve starts accepting.
func NewServer(root *agent.Node, reg *funcs.Registry, ln *Listener, cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		root:     root,
		ln:       ln,
		cfg:      cfg,
		log:      root.Log.Named("control"),
		slots:    make(chan struct{}, cfg.MaxClients),
		stopReq:  make(chan struct{}),
		closed:   make(chan struct{}),
		watchers: map[watcher]struct{}{},
	}
	s.accepting.Store(true)
	s.pool = newPool(s, cfg.Pool)
	s.register(reg)
	return s
}

// Pool is the server's pool of warm nodes (serve.acquire).
func (s *Server) Pool() *Pool { return s.pool }

// StopRequested is closed when a client has asked the server to stop.
func (s *Server) StopRequested() <-chan struct{} { return s.stopReq }

// Serve accepts clients until Close. It returns nil after Close.
func (s *Server) Serve() error {
	var backoff time.Duration
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if !s.accepting.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("arbor: control socket %s: %w", s.ln.Path(), err)
		}
		backoff = 0
		if !s.track() {
			conn.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			s.handle(conn)
		}()
	}
}

// StopAccepting closes the socket (removing it) so that no new client
// comes; attached clients stay until the root closes or Close.
func (s *Server) StopAccepting() {
	s.lnOnce.Do(func() {
		s.accepting.Store(false)
		s.ln.Close()
	})
}

// Close stops accepting, detaches every client (waiting ones included) and
// waits for their handlers. The tree itself is the caller's to close.
func (s *Server) Close() error {
	s.StopAccepting()
	s.close.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		close(s.closed)
	})
	s.pool.Close()
	s.wg.Wait()
	return nil
}

// track counts a new client handler, unless the server is closing: a
// client accepted while Close runs is turned away rather than handled
// after Close has returned.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

// handle admits one client, attaches it as a child of the root with the
// root's authority, and holds its slot until its link closes.
func (s *Server) handle(conn *net.UnixConn) {
	cred, err := peerCred(conn)
	if err != nil {
		s.log.Warn("client refused: no peer credentials", "error", err)
		conn.Close()
		return
	}
	if int(cred.Uid) != os.Getuid() && cred.Uid != 0 {
		s.log.Warn("client refused: another user", "uid", cred.Uid, "pid", cred.Pid)
		conn.Close()
		return
	}
	if !s.admit(conn) {
		conn.Close()
		return
	}
	defer func() { <-s.slots }()
	if err := writeLine(conn, lineGo); err != nil {
		conn.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HelloTimeout)
	defer cancel()
	id, err := s.root.Router.AllocateID(ctx)
	if err != nil {
		conn.Close()
		return
	}
	name := fmt.Sprintf("client.%d", cred.Pid)
	s.root.Tree.MarkClient(id)
	lcfg := stream.DefaultConfig()
	lcfg.Logger = s.log
	lcfg.HelloTimeout = s.cfg.HelloTimeout
	lcfg.MaxMessage = s.root.Router.MaxMessage()
	l, _, err := stream.Open(conn, s.root.ChildHello(id, name), lcfg)
	if err != nil {
		// Open has closed conn. The client never got a route, so no
		// withdrawal will forget it.
		s.root.Tree.UnmarkClient(id)
		s.root.Router.ReleaseID(id)
		s.log.Debug("client hello failed", "pid", cred.Pid, "error", err)
		return
	}
	defer l.Close()
	if _, err := s.root.Router.AttachChildWithAuthority(l); err != nil {
		s.root.Tree.UnmarkClient(id)
		s.log.Warn("client not attached", "pid", cred.Pid, "error", err)
		return
	}
	s.log.Debug("client attached", "id", id, "pid", cred.Pid)
	select {
	case <-l.Done():
	case <-s.closed:
		l.Close()
	case <-s.root.Done():
	}
	s.log.Debug("client detached", "id", id, "pid", cred.Pid)
}

// admit takes a client slot for conn, waiting (with conn held and
// unanswered but for the "wait" line) while all are taken. It gives up when
// the client hangs up or the server closes.
func (s *Server) admit(conn *net.UnixConn) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	if s.waiting.Add(1) > int64(s.cfg.MaxWaiting) {
		s.waiting.Add(-1)
		_ = writeLine(conn, lineBusy)
		return false
	}
	defer s.waiting.Add(-1)
	if err := writeLine(conn, lineWait); err != nil {
		return false
	}
	// The client sends nothing before its hello: a read that returns
	// means it hung up (or broke the protocol). Once a slot is free, a
	// past deadline sends the reader away without consuming a byte.
	res := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := conn.Read(b[:])
		if err == nil {
			err = errors.New("client sent data before its hello")
		}
		res <- err
	}()
	select {
	case s.slots <- struct{}{}:
		_ = conn.SetReadDeadline(time.Unix(1, 0))
		err := <-res
		_ = conn.SetReadDeadline(time.Time{})
		if !isTimeout(err) {
			<-s.slots
			return false
		}
		return true
	case <-res:
		return false
	case <-s.closed:
		conn.Close()
		<-res
		return false
	}
}

func writeLine(conn *net.UnixConn, line string) error {
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := conn.Write([]byte(line))
	_ = conn.SetWriteDeadline(time.Time{})
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func peerCred(conn *net.UnixConn) (*syscall.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
