package transfer

import (
	"context"
	"fmt"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
)

// Function names of the node side.
const (
	// FnRecv receives a transfer into a destination on the node.
	FnRecv = "fs.recv"
	// FnSend sends a file or tree from the node.
	FnSend = "fs.send"
)

// RecvArgs are the arguments of fs.recv.
type RecvArgs struct {
	Channel   uint32 `cbor:"channel" json:"channel"`
	Dest      string `cbor:"dest" json:"dest"`
	Recursive bool   `cbor:"recursive,omitempty" json:"recursive,omitempty"`
	Sync      bool   `cbor:"sync,omitempty" json:"sync,omitempty"`
}

// SendArgs are the arguments of fs.send.
type SendArgs struct {
	Channel   uint32 `cbor:"channel" json:"channel"`
	Source    string `cbor:"source" json:"source"`
	Recursive bool   `cbor:"recursive,omitempty" json:"recursive,omitempty"`
}

// Register adds fs.recv and fs.send to reg.
func Register(reg *funcs.Registry) {
	funcs.Register(reg, FnRecv, recv)
	funcs.Register(reg, FnSend, send)
}

func recv(ctx context.Context, c *funcs.Call, a RecvArgs) (Summary, error) {
	ch, err := c.Router.ClaimChannel(c.Src, a.Channel)
	if err != nil {
		return Summary{}, err
	}
	defer ch.Close()
	sum, err := Receive(ctx, ch, a.Dest, Options{Recursive: a.Recursive, Sync: a.Sync})
	return sum, err
}

func send(ctx context.Context, c *funcs.Call, a SendArgs) (Summary, error) {
	ch, err := c.Router.ClaimChannel(c.Src, a.Channel)
	if err != nil {
		return Summary{}, err
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, ch.Abort)
	defer stop()
	p, err := NewPlan(a.Source, a.Recursive)
	if err != nil {
		rw := newRecWriter(ch)
		_ = rw.writeCBOR(recError, err.Error())
		_ = rw.flush()
		_ = ch.CloseWrite()
		return Summary{}, err
	}
	return Send(ctx, ch, p, Options{})
}

// Push copies the local file or tree src to dst on node rm. Errors name
// the node and file: a missing or unreadable source (IsLocal), the node's
// own failure (a *funcs.RemoteError: unwritable destination, full disk,
// an escaping path), or the loss of a hop on the way (naming the node lost).
func Push(ctx context.Context, rm *arborctx.Remote, src, dst string, o Options) (Summary, error) {
	p, err := NewPlan(src, o.Recursive)
	if err != nil {
		return Summary{}, err
	}
	cc, err := rm.StartChannel(ctx, FnRecv, func(id uint32) any {
		return RecvArgs{Channel: id, Dest: dst, Recursive: o.Recursive, Sync: o.Sync}
	})
	if err != nil {
		return Summary{}, err
	}
	sum, serr := Send(ctx, cc.Channel, p, o)
	var remote Summary
	werr := cc.Wait(&remote)
	switch {
	case serr != nil && IsLocal(serr):
		return sum, serr
	case werr != nil:
		return sum, werr
	case serr != nil:
		return sum, fmt.Errorf("%w (push to node %d (%s))", serr, rm.ID(), rm.Name())
	}
	return sum, nil
}

// Pull copies src on node rm to the local dst, with the same rules and
// errors as Push, mirrored.
func Pull(ctx context.Context, rm *arborctx.Remote, src, dst string, o Options) (Summary, error) {
	cc, err := rm.StartChannel(ctx, FnSend, func(id uint32) any {
		return SendArgs{Channel: id, Source: src, Recursive: o.Recursive}
	})
	if err != nil {
		return Summary{}, err
	}
	sum, rerr := Receive(ctx, cc.Channel, dst, o)
	var remote Summary
	werr := cc.Wait(&remote)
	switch {
	case rerr != nil && IsLocal(rerr):
		return sum, rerr
	case werr != nil:
		// The node's own error, or the hop that was lost, named.
		return sum, werr
	case rerr != nil:
		return sum, fmt.Errorf("%w (pull from node %d (%s))", rerr, rm.ID(), rm.Name())
	}
	return sum, nil
}
