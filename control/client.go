package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/agent"
)

// Sentinel errors of Dial; check them with errors.Is.
var (
	// ErrNotRunning: no server at the socket (no socket file, or a stale one).
	ErrNotRunning = errors.New("arbor: arbor serve is not running")
	// ErrBusy: every client slot stayed taken for as long as the client
	// could wait, or the waiting room is full.
	ErrBusy = errors.New("arbor: arbor serve is busy")
)

// Dial connects to the server at path, waits for a client slot (as long as
// ctx allows), and attaches this process to the tree as a node: the
// returned node's parent is the root, and its messages carry the root's
// authority. Closing the node detaches it and frees the slot.
func Dial(ctx context.Context, path string, o agent.Options) (*agent.Node, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("%w (no socket at %s)", ErrNotRunning, path)
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%w at %s (stale socket file: nothing answers it)", ErrNotRunning, path)
		}
		return nil, fmt.Errorf("arbor: connecting to arbor serve at %s: %w", path, err)
	}
	conn := c.(*net.UnixConn)
	start := time.Now()
	// A server that has not answered by now is hung, not busy: it writes
	// its first line at once.
	answer := 10 * time.Second
	waited := false
	for {
		dl := time.Now().Add(answer)
		if waited {
			dl = time.Time{}
		}
		if cdl, ok := ctx.Deadline(); ok && (dl.IsZero() || cdl.Before(dl)) {
			dl = cdl
		}
		_ = conn.SetReadDeadline(dl)
		line, err := readLine(ctx, conn)
		if err != nil {
			conn.Close()
			switch {
			case waited && (isTimeout(err) || ctx.Err() != nil):
				return nil, &dialError{ErrBusy, fmt.Sprintf("arbor: arbor serve at %s is busy: waited %s for a client slot",
					path, time.Since(start).Round(time.Millisecond))}
			case isTimeout(err) || ctx.Err() != nil:
				return nil, fmt.Errorf("arbor: arbor serve at %s did not answer within %s", path, time.Since(start).Round(time.Millisecond))
			}
			return nil, fmt.Errorf("arbor: arbor serve at %s hung up: %w", path, err)
		}
		switch line {
		case lineWait:
			if !waited && o.Logger != nil {
				o.Logger.Info("every client slot is taken; waiting for a client slot", "socket", path)
			}
			waited = true
			continue
		case lineBusy:
			conn.Close()
			return nil, &dialError{ErrBusy, fmt.Sprintf("arbor: arbor serve at %s is busy: too many clients are waiting for a slot", path)}
		case lineGo:
		default:
			conn.Close()
			return nil, fmt.Errorf("arbor: %s does not speak the arbor control protocol (got %q)", path, line)
		}
		break
	}
	_ = conn.SetReadDeadline(time.Time{})
	hello := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		hello = max(min(hello, time.Until(dl)), time.Millisecond)
	}
	n, err := agent.Attach(conn, o, hello)
	if err != nil {
		return nil, fmt.Errorf("%w (attaching to arbor serve at %s)", err, path)
	}
	return n, nil
}

// readLine reads one admission line byte by byte: the link's bytes follow
// it and must stay unread. ctx's end interrupts the read.
func readLine(ctx context.Context, conn *net.UnixConn) (string, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var buf []byte
	var b [1]byte
	for len(buf) < 64 {
		if _, err := conn.Read(b[:]); err != nil {
			return "", err
		}
		buf = append(buf, b[0])
		if b[0] == '\n' {
			return string(buf), nil
		}
	}
	return "", fmt.Errorf("admission line too long")
}

// dialError is an error of Dial that matches a sentinel but says it its own way.
type dialError struct {
	kind error
	msg  string
}

func (e *dialError) Error() string        { return e.msg }
func (e *dialError) Is(target error) bool { return target == e.kind }
