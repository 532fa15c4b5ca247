package funcs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/arbor-project/arbor/internal/errs"

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
//
// Message is the remote error's text. It is no error of this process: the
// RemoteError is the leaf here and carries the one "arbor: " prefix, so a
// Message that starts with the remote's own prefix (as Arbor's errors do)
// is printed without it: "arbor: node 2 (a/b): fs.send: source /x: ...".
type RemoteError struct {
	NodeID  uint32
	Node    string
	Fn      string
	Message string
	Kind    string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%snode %d (%s): %s: %s", errs.Prefix, e.NodeID, e.Node, e.Fn, strings.TrimPrefix(e.Message, errs.Prefix))
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
