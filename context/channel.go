package context

import (
	"context"
	"sync"

	"github.com/arbor-project/arbor/router"
)

// OpenChannel opens a byte channel to the node for service. It returns
// once the node has accepted it; a function called on the node then claims
// it (router.ClaimChannel). Most programs use StartChannel instead.
func (rm *Remote) OpenChannel(ctx context.Context, service string) (*router.Channel, error) {
	if err := rm.Err(); err != nil {
		return nil, err
	}
	ch, err := rm.r.OpenChannel(ctx, rm.id, service)
	if err != nil {
		return nil, wrap(err, "channel to node %d (%s)", rm.id, rm.name)
	}
	return ch, nil
}

// ChannelCall is a call that owns a channel to the node running it: the
// call's arguments name the channel, the function claims it, the bytes go
// over the channel and the outcome comes back as the call's result.
type ChannelCall struct {
	// Channel is this end of the channel. It is aborted when the node
	// disconnects or ctx ends, so reads and writes never block on a node
	// that is gone; Wait then says why.
	Channel *router.Channel

	call     *PendingCall
	stopOnce sync.Once
	stop     chan struct{}
}

// StartChannel opens a channel to the node and calls fn there with the
// arguments args builds from the channel's ID. The caller must call Wait.
func (rm *Remote) StartChannel(ctx context.Context, fn string, args func(channel uint32) any) (*ChannelCall, error) {
	ch, err := rm.OpenChannel(ctx, fn)
	if err != nil {
		return nil, err
	}
	pc, err := rm.Start(ctx, fn, args(ch.ID))
	if err != nil {
		ch.Abort()
		return nil, err
	}
	cc := &ChannelCall{Channel: ch, call: pc, stop: make(chan struct{})}
	go func() {
		select {
		case <-rm.done:
			ch.Abort()
		case <-ctx.Done():
			ch.Abort()
		case <-cc.stop:
		}
	}()
	return cc, nil
}

// Wait blocks until the call's result (decoded into out, a pointer or nil)
// or its failure: a remote error naming the node, or a disconnect naming
// the hop that was lost. It closes the channel.
func (cc *ChannelCall) Wait(out any) error {
	err := cc.call.Wait(out)
	cc.stopOnce.Do(func() { close(cc.stop) })
	cc.Channel.Close()
	return err
}

// Abort aborts the channel; the call's outcome still comes from Wait.
func (cc *ChannelCall) Abort() { cc.Channel.Abort() }
