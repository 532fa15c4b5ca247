// Package errs states how Arbor's error messages are built, and holds the
// little that the rule needs in code.
//
// The rule: a message starts with "arbor: " once. The error made at the
// leaf carries the prefix: errors.New, a typed error's Error, or
// fmt.Errorf that wraps an error that is not ours (os, syscall, yamux,
// cbor, context.Canceled). A layer that wraps one of our errors adds its
// context behind the message, without the prefix:
//
//	fmt.Errorf("%w (call %s on node %d (%s))", err, fn, id, name)
//
// A typed error that already names the node and the hop is returned as it
// is. A remote node's message is text, not an error of ours: the local
// error that carries it (funcs.RemoteError) is the leaf, and the remote's
// own prefix is not said a second time. The same holds where an error
// becomes a reason string inside another leaf (a link's cause in a
// DisconnectError, a dead reply's reason): see Reason. Errors are matched
// with errors.Is and errors.As, never by their text.
package errs

import (
	"context"
	"strings"
)

// Prefix starts every error message of Arbor, once.
const Prefix = "arbor: "

// IsContext reports whether err is the bare error of a context that ended
// (context.Canceled or context.DeadlineExceeded, not wrapped by us): a
// layer that gets one is the leaf of ours and carries the prefix.
func IsContext(err error) bool {
	return err == context.Canceled || err == context.DeadlineExceeded
}

// Reason is err's message without its leading "arbor: ", for a leaf that
// carries err's words after its own prefix ("arbor: link closed: peer
// stopped reading"). It shapes text only; nothing is decided by it.
func Reason(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strings.TrimPrefix(err.Error(), Prefix)
}

// Wrap is the leaf for a cause that may be ours or not (an I/O error of a
// link: yamux's, the kernel's, or the frame codec's): it reads "arbor: "
// + context + ": " + the cause's reason, and unwraps to the cause.
func Wrap(cause error, context string) error { return &wrapped{context, cause} }

type wrapped struct {
	context string
	cause   error
}

func (e *wrapped) Error() string { return Prefix + e.context + ": " + Reason(e.cause) }
func (e *wrapped) Unwrap() error { return e.cause }

// Kind is an error of kind (a sentinel of ours, matched with errors.Is)
// caused by Cause (matched with errors.Is and errors.As through Unwrap).
// It reads as kind's message, then Context, then the cause's reason:
// "arbor: hello exchange failed with node 3 (a): connection timed out".
type Kind struct {
	Kind    error
	Context string // e.g. " with node 3 (a)"; may be empty
	Cause   error
}

func (e *Kind) Error() string {
	return e.Kind.Error() + e.Context + ": " + Reason(e.Cause)
}

// Is makes errors.Is(e, e.Kind) true.
func (e *Kind) Is(target error) bool { return target == e.Kind }

// Unwrap is the cause.
func (e *Kind) Unwrap() error { return e.Cause }
