package router

import (
	"errors"
	"fmt"
	"github.com/arbor-project/arbor/internal/errs"
	"strings"
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrClosed is returned once the router has been closed.
	ErrClosed = errors.New("arbor: router closed")
	// ErrDead matches every *DeadError.
	ErrDead = errors.New("arbor: message not delivered")
	// ErrDisconnected matches every *DisconnectError.
	ErrDisconnected = errors.New("arbor: node disconnected")
	// ErrNoParent is returned by operations that need the root when a node
	// has no parent link.
	ErrNoParent = errors.New("arbor: no parent link")
	// ErrQuota matches every *QuotaError: a child link reached one of its
	// per-link bounds (see Quota).
	ErrQuota = errors.New("arbor: link quota reached")
	// ErrOrigin matches every *OriginError: a route announced through a
	// link its ID was not allocated through.
	ErrOrigin = errors.New("arbor: route from the wrong origin")
)

// Reasons carried by dead replies. Callers match them with
// DeadError.Reason or errors.Is(err, ErrDead).
const (
	ReasonInvalidHandle = "invalid handle"
	ReasonRefused       = "refused by policy"
)

// DeadError is a dead reply: the message could not be delivered, and Node
// says which node gave up on it and why.
type DeadError struct {
	Node   uint32 // the node that produced the dead reply
	Reason string // e.g. "invalid handle", "no route to 7, my ID is 3"
}

func (e *DeadError) Error() string {
	return fmt.Sprintf("arbor: message not delivered (node %d): %s", e.Node, reason(e.Reason))
}

func (e *DeadError) Is(target error) bool { return target == ErrDead }

// DisconnectError fails a pending reply when the node it waits on is gone.
type DisconnectError struct {
	ID    uint32 // the lost node
	Name  string // its name, when known
	Cause string // which hop died and why, e.g. "link from node 2 to node 5 lost: EOF"
}

func (e *DisconnectError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("arbor: node %d (%s) disconnected: %s", e.ID, e.Name, reason(e.Cause))
	}
	return fmt.Sprintf("arbor: node %d disconnected: %s", e.ID, reason(e.Cause))
}

func (e *DisconnectError) Is(target error) bool { return target == ErrDisconnected }

// reason is a reason or cause as it reads inside one of this package's
// errors. It is text (it may come from another node, and be an error's
// message there): the error that carries it is the leaf and has the one
// "arbor: " prefix, so the text's own is not repeated.
func reason(s string) string { return strings.TrimPrefix(s, errs.Prefix) }
