package transfer

import (
	"context"
	"errors"
	"fmt"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
)

// verdictGrace is how long one end waits for the other's own word on a
// failure it already knows of.
const verdictGrace = 2 * time.Second

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
	// The sender is this node's root, which may run anything here: the
	// modes it sends are kept as they are, setuid and setgid included.
	// The caller's end makes the summary's SHA-256, if anyone does.
	sum, err := Receive(ctx, ch, a.Dest, Options{Recursive: a.Recursive, Sync: a.Sync, PreserveSpecial: true, SkipSHA256: true})
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
	return Send(ctx, ch, p, Options{SkipSHA256: true})
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
	case errors.Is(serr, ErrVersion):
		// Said better here than by the node, which may be older.
		return sum, fmt.Errorf("%w (push to node %d (%s))", serr, rm.ID(), rm.Name())
	case werr != nil:
		return sum, werr
	case serr != nil:
		return sum, fmt.Errorf("%w (push to node %d (%s))", serr, rm.ID(), rm.Name())
	}
	return sum, nil
}

// Pull copies src on node rm to the local dst, with the same rules and
// errors as Push, mirrored. The node is not trusted with this machine:
// the copy is named dst, or in an existing directory dst the last element
// of src as given here, never the name the node sends; it is a file, or
// with o.Recursive a file or a directory, never a symlink (ErrWrongKind);
// nothing is created outside it (ErrEscape); a file whose data differs
// from its declared size never appears under its name (ErrSize); and
// setuid, setgid and sticky bits are dropped unless o.PreserveSpecial.
func Pull(ctx context.Context, rm *arborctx.Remote, src, dst string, o Options) (Summary, error) {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := rm.StartChannel(callCtx, FnSend, func(id uint32) any {
		return SendArgs{Channel: id, Source: src, Recursive: o.Recursive}
	})
	if err != nil {
		return Summary{}, err
	}
	sum, rerr := receive(ctx, cc.Channel, dst, usersName(src), o)
	if rerr != nil {
		// The node's own word may say more; a node that broke the
		// protocol, or went quiet, is not waited for past verdictGrace.
		t := time.AfterFunc(verdictGrace, cancel)
		defer t.Stop()
	}
	var remote Summary
	werr := cc.Wait(&remote)
	gaveUp := ctx.Err() == nil && callCtx.Err() != nil
	switch {
	case rerr != nil && IsLocal(rerr):
		return sum, rerr
	case errors.Is(rerr, ErrVersion):
		return sum, fmt.Errorf("%w (pull from node %d (%s))", rerr, rm.ID(), rm.Name())
	case werr != nil && !gaveUp:
		// The node's own error, or the hop that was lost, named.
		return sum, werr
	case rerr != nil:
		return sum, fmt.Errorf("%w (pull from node %d (%s))", rerr, rm.ID(), rm.Name())
	}
	return sum, nil
}
