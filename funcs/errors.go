package funcs

import (
	"errors"
	"fmt"

	"github.com/arbor-project/arbor/stream/wire"
)

// Kinds of remote failure, as carried in wire.CallError.Kind.
const (
	KindError     = "error"
	KindUnknown   = "unknown_function"
	KindRefused   = "refused"
	KindBadArgs   = "bad_args"
	KindCancelled = "cancelled"
	KindBusy      = "busy"
	KindPanic     = "panic"
)

// Sentinels matched by *RemoteError through errors.Is.
var (
	ErrRemote          = errors.New("arbor: remote function failed")
	ErrUnknownFunction = errors.New("arbor: unknown function")
	ErrRefused         = errors.New("arbor: call refused by policy")
	ErrBusy            = errors.New("arbor: node busy")
	ErrCancelled       = errors.New("arbor: call cancelled")
)

// RemoteError is a function's failure on a remote node.
type RemoteError struct {
	NodeID  uint32
	Node    string
	Fn      string
	Message string
	Kind    string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("arbor: node %d (%s): %s: %s", e.NodeID, e.Node, e.Fn, e.Message)
}

func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrRemote:
		return true
	case ErrUnknownFunction:
		return e.Kind == KindUnknown
	case ErrRefused:
		return e.Kind == KindRefused
	case ErrBusy:
		return e.Kind == KindBusy
	case ErrCancelled:
		return e.Kind == KindCancelled
	}
	return false
}

// FromWire converts a wire.CallError.
func FromWire(e *wire.CallError) *RemoteError {
	return &RemoteError{NodeID: e.NodeID, Node: e.Node, Fn: e.Fn, Message: e.Message, Kind: e.Kind}
}
