package core_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// chain builds root → n1 → … → n<hops> over os.Pipe links and returns the
// root and the last node, once the root routes the last node.
func chain(b *testing.B, hops int) (root, last *testtree.Node) {
	b.Helper()
	o := testtree.Options{Transport: testtree.Transport{Name: "os.Pipe", Pair: testtree.OSPipe}}
	root = testtree.Root(b, o)
	last = root
	for i := range hops {
		last = last.Spawn(b, o, fmt.Sprintf("n%d", i+1))
	}
	root.WaitRoute(b, last.ID())
	return root, last
}

// echoPing makes n answer PING with the payload it got.
func echoPing(n *testtree.Node) {
	n.R.Handle(wire.HandlePing, func(m *router.Message) { n.R.Reply(m, m.Payload) }, nil)
}

// benchRoundTrip times sequential requests of a 32-byte payload from the
// root to a PING handler hops links down. One op is one round trip.
func benchRoundTrip(b *testing.B, hops int) {
	root, dst := chain(b, hops)
	echoPing(dst)
	payload := make([]byte, pingSize)
	copy(payload, "arbor round-trip request payload")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	// One warm-up call: the first read of a yamux stream sends a window
	// update, and the first use of a path fills the egress bookkeeping.
	if _, err := root.R.Request(ctx, dst.ID(), wire.HandlePing, payload); err != nil {
		b.Fatal(err)
	}

	lat := newLatencies(b.N)
	b.SetBytes(pingSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		t := time.Now()
		rep, err := root.R.Request(ctx, dst.ID(), wire.HandlePing, payload)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
		if len(rep.Payload) != pingSize {
			b.Fatalf("reply of %d bytes, want %d", len(rep.Payload), pingSize)
		}
	}
	b.StopTimer()
	cpu.report(b)
	lat.report(b)
}

// BenchmarkRoundTrip1Hop: root → child and back, over one os.Pipe link.
func BenchmarkRoundTrip1Hop(b *testing.B) { benchRoundTrip(b, 1) }

// BenchmarkRoundTrip3Hop: root → n1 → n2 → n3 and back, over three os.Pipe
// links (two intermediates forward the request and the reply).
func BenchmarkRoundTrip3Hop(b *testing.B) { benchRoundTrip(b, 3) }

// BenchmarkThroughIntermediate measures messages per second forwarded by
// one intermediate node (root → a → b over os.Pipe links).
//
//   - oneway: the root sends b.N one-way 32-byte messages to a counting
//     handler on b; the clock stops when b has counted all of them. Each op
//     is one message through a.
//   - requests-N: N goroutines on the root keep one request each in flight
//     to b's PING handler. Each op is one request; a forwards two messages
//     (request and reply) per op.
func BenchmarkThroughIntermediate(b *testing.B) {
	b.Run("oneway", func(b *testing.B) {
		root, dst := chain(b, 2)
		var count atomic.Int64
		var want atomic.Int64
		done := make(chan struct{}, 1)
		h := dst.R.AddHandler(func(*router.Message) {
			if count.Add(1) == want.Load() {
				done <- struct{}{}
			}
		}, nil)
		payload := make([]byte, pingSize)
		want.Store(int64(b.N))
		b.SetBytes(pingSize)
		b.ResetTimer()
		cpu := startCPU()
		start := time.Now()
		for range b.N {
			if err := root.R.Send(wire.Header{Dst: dst.ID(), Handle: h}, payload); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("handler counted %d of %d messages", count.Load(), b.N)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		cpu.report(b)
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	})
	for _, inflight := range []int{1, 64} {
		b.Run(fmt.Sprintf("requests-%d", inflight), func(b *testing.B) {
			root, dst := chain(b, 2)
			echoPing(dst)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			errs := make(chan error, inflight)
			b.SetBytes(pingSize)
			b.ResetTimer()
			cpu := startCPU()
			start := time.Now()
			for range inflight {
				wg.Go(func() {
					payload := make([]byte, pingSize)
					for left.Add(-1) >= 0 {
						if _, err := root.R.Request(ctx, dst.ID(), wire.HandlePing, payload); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			cpu.report(b)
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			b.ReportMetric(2*float64(b.N)/elapsed.Seconds(), "msgs/s")
		})
	}
}
