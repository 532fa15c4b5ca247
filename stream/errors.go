package stream

import "errors"

// Sentinel errors of a link; check them with errors.Is.
var (
	// ErrLinkClosed is returned by operations on a link that has closed.
	ErrLinkClosed = errors.New("arbor: link closed")
	// ErrHello is returned when the hello exchange fails or disagrees.
	ErrHello = errors.New("arbor: hello exchange failed")
)
