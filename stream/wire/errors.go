package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors of the frame codec; check them with errors.Is.
var (
	ErrShortHeader = errors.New("arbor: short frame header")
	ErrBadMagic    = errors.New("arbor: bad frame magic")
	ErrBadVersion  = errors.New("arbor: unsupported protocol version")
	ErrBadFlags    = errors.New("arbor: unknown frame flags")
	ErrTooLarge    = errors.New("arbor: message too large")
	ErrBadPayload  = errors.New("arbor: undecodable payload")
)

// TooLargeError reports a message or announced frame bigger than a link's
// maximum. It matches ErrTooLarge.
type TooLargeError struct {
	Size uint64 // announced or actual payload size
	Max  uint32 // the limit in force
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("arbor: message too large (max %d bytes): %d bytes", e.Max, e.Size)
}

// Reason is the text carried by a dead reply for this error.
func (e *TooLargeError) Reason() string {
	return fmt.Sprintf("message too large (max %d bytes)", e.Max)
}

func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }
