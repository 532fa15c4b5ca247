package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrAlreadyRunning is returned by Listen when another server owns the socket.
var ErrAlreadyRunning = errors.New("arbor: arbor serve is already running")

// Listener is the control socket of one server: the listening socket and
// the lock that makes it this server's.
type Listener struct {
	*net.UnixListener
	path string
	lock *os.File
	// Warning, if set, says something about the socket's directory the
	// operator should know (see prepareDir).
	Warning string
	// RemovedStale is set when a stale socket file from a dead server
	// was removed.
	RemovedStale bool
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Listen makes path this process's control socket. The lock file beside
// it (path + ".lock", held with flock for the server's lifetime, released
// by the kernel when the process dies however it dies) keeps one server
// per socket: a second one gets ErrAlreadyRunning. A socket file left by a
// dead server is recognised (nothing answers it) and replaced. The socket
// is bound inside its 0700 directory and then made 0600, so no one else
// can reach it in between.
func Listen(path string) (*Listener, error) {
	warn, err := prepareDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("arbor: lock file for %s: %w", path, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := lock.ReadAt(b, 0)
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(b[:n]))
			if pid != "" {
				return nil, fmt.Errorf("%w at %s (pid %s)", ErrAlreadyRunning, path, pid)
			}
			return nil, fmt.Errorf("%w at %s", ErrAlreadyRunning, path)
		}
		return nil, fmt.Errorf("arbor: locking %s.lock: %w", path, err)
	}
	l := &Listener{path: path, lock: lock, Warning: warn}
	fail := func(err error) (*Listener, error) {
		lock.Close()
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return fail(fmt.Errorf("arbor: %s exists and is not a socket; not touching it", path))
		}
		// We hold the lock, so no arbor serve owns this socket; a server
		// of an older build might, so ask before removing it.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fail(fmt.Errorf("%w at %s (a server answers on the socket)", ErrAlreadyRunning, path))
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("arbor: removing stale socket %s: %w", path, err))
		}
		l.RemovedStale = true
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fail(fmt.Errorf("arbor: listening on %s: %w", path, err))
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fail(fmt.Errorf("arbor: chmod %s: %w", path, err))
	}
	_ = lock.Truncate(0)
	_, _ = lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	l.UnixListener = ln
	return l, nil
}

// Close stops listening, removes the socket and releases the lock. The
// lock file stays: removing it while another server may be opening it
// would let two servers hold "the" lock.
func (l *Listener) Close() error {
	err := l.UnixListener.Close() // unlinks the socket
	_ = os.Remove(l.path)
	_ = l.lock.Truncate(0)
	l.lock.Close()
	return err
}
