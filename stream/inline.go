package stream

import (
	"context"
	"errors"
	"syscall"

	"github.com/arbor-project/arbor/stream/wire"
	"golang.org/x/sys/unix"
)

// Small frames without the write loop.
//
// Handing a frame to the write loop wakes it: on an idle link, a thread
// woken and put back to sleep for every message, on each side of each
// hop. So a sender for whom nothing better is coming writes a small frame
// itself when nothing is queued or being written on the link: one
// non-blocking write(2) of at most PIPE_BUF bytes to a pipe, which POSIX
// makes all or nothing, so it never blocks and never leaves part of a
// frame behind; a full pipe (EAGAIN) sends the frame to the queue as
// before. Who may (the *Direct sends):
//
//   - a caller that waits for the answer right after (SendWaitDirect);
//   - a read loop forwarding or answering a frame with nothing buffered
//     behind it (SendDirect, SendControlDirect; MoreBuffered says which).
//
// Everyone else queues: a caller that pipelines, and a read loop in the
// middle of a burst, leave the write loop to join their frames into one
// write (bench/run W4).

// pipeBuf is PIPE_BUF on Linux: a pipe write of at most this many bytes
// is atomic.
const pipeBuf = 4096

// PipeWriter is implemented by a link's connection whose writes go to a
// pipe: the raw descriptor lets a sender write a small frame itself. The
// descriptor must be non-blocking (as os.Pipe's and the agent's stdio
// are).
type PipeWriter interface {
	PipeWriteConn() (syscall.RawConn, error)
}

// pipeWriteConn is conn's pipe for direct writes, or nil when conn has
// none, it is not a pipe (a socket may take part of a small write) or it
// is in blocking mode (a write to a full pipe would wait).
func pipeWriteConn(conn any) syscall.RawConn {
	pw, ok := conn.(PipeWriter)
	if !ok {
		return nil
	}
	rc, err := pw.PipeWriteConn()
	if err != nil || rc == nil {
		return nil
	}
	ok = false
	if err := rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		ok = err == nil && fl&unix.O_NONBLOCK != 0 &&
			unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
	}); err != nil || !ok {
		return nil
	}
	return rc
}

// DirectFrames counts the frames senders wrote themselves, not the write
// loop.
func (l *Link) DirectFrames() uint64 { return l.directFrames.Load() }

// MoreBuffered reports whether frames wait in the read loop's buffer
// behind the one it is handling: a handler that forwards or answers it
// leaves its frame to the write loop, which joins a burst's frames.
func (l *Link) MoreBuffered() bool { return l.more.Load() }

// SendDirect is Send for a read loop with nothing buffered behind the
// frame it handles: the frame may go out on this goroutine's own write.
func (l *Link) SendDirect(h wire.Header, payload []byte) error {
	return l.putDirect(h, payload, classData)
}

// SendControlDirect is SendControl as SendDirect is Send.
func (l *Link) SendControlDirect(h wire.Header, payload []byte) error {
	return l.putDirect(h, payload, classControl)
}

// SendWaitDirect is SendWait for a caller that waits for an answer right
// after: the frame may go out on the caller's own write.
func (l *Link) SendWaitDirect(ctx context.Context, h wire.Header, payload []byte) error {
	if err := l.check(&h, payload); err != nil {
		return err
	}
	if taken, err := l.sendInline(h, payload); taken {
		return err
	}
	return l.putWait(ctx, h, payload)
}

func (l *Link) putDirect(h wire.Header, payload []byte, c frameClass) error {
	if err := l.check(&h, payload); err != nil {
		return err
	}
	if taken, err := l.sendInline(h, payload); taken {
		return err
	}
	return l.enqueue(h, payload, c)
}

// sendInline writes the frame h, payload itself when the link has nothing
// queued or being written and the frame fits in one atomic pipe write.
// It reports whether it took the frame (and then err is the send's
// result); if not, the frame goes to the queue.
func (l *Link) sendInline(h wire.Header, payload []byte) (taken bool, err error) {
	if l.wraw == nil || wire.HeaderSize+len(payload) > pipeBuf || l.q.unwritten.Load() != 0 {
		return false, nil
	}
	if !l.wmu.TryLock() {
		return false, nil
	}
	defer l.wmu.Unlock()
	if l.q.unwritten.Load() != 0 {
		return false, nil
	}
	select {
	case <-l.done:
		return true, l.closedErr()
	default:
	}
	l.ibuf = wire.AppendFrame(l.ibuf[:0], h, payload)
	var n int
	var werr error
	if err := l.wraw.Write(func(fd uintptr) bool {
		// syscall.Write, not unix.Write: it tells the race detector, as
		// os.File's reads and writes do, that what the reader sees
		// happened before.
		n, werr = syscall.Write(int(fd), l.ibuf)
		return true // one attempt: never wait for room here
	}); err != nil {
		// The descriptor is closing: the link is closing with it.
		return true, l.writeFailed(err)
	}
	if errors.Is(werr, syscall.EAGAIN) {
		return false, nil
	}
	if werr != nil {
		return true, l.writeFailed(werr)
	}
	n = max(n, 0)
	l.outBytes.Add(uint64(n))
	l.directFrames.Add(1)
	if n < len(l.ibuf) {
		// Not a pipe of POSIX's word after all: finish the frame
		// under the watchdog.
		return true, l.connWrite(l.ibuf[n:])
	}
	return true, nil
}
