package stream

import (
	"errors"
	"fmt"
)

// Sentinel errors of a link; check them with errors.Is.
var (
	// ErrLinkClosed is returned by operations on a link that has closed.
	ErrLinkClosed = errors.New("arbor: link closed")
	// ErrHello is returned when the hello exchange fails or disagrees.
	ErrHello = errors.New("arbor: hello exchange failed")
	// ErrConnectTimeout matches a hello exchange that did not complete
	// before its deadline.
	ErrConnectTimeout = errors.New("arbor: connection timed out")
	// ErrQueueFull is returned by Send when the link's data queue is full.
	ErrQueueFull = errors.New("arbor: send queue full")
	// ErrProtocol closes a link whose peer sent what the protocol never
	// sends (a yamux ping, for one).
	ErrProtocol = errors.New("arbor: protocol violation")
)

// QueueFullError is a data frame refused because the link to Peer already
// had Frames frames waiting. It matches ErrQueueFull.
type QueueFullError struct {
	Peer   uint32
	Frames int
}

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("arbor: link to node %d congested: send queue full (%d frames)", e.Peer, e.Frames)
}

// Is makes errors.Is(err, ErrQueueFull) true.
func (e *QueueFullError) Is(target error) bool { return target == ErrQueueFull }
