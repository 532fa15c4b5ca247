package stream_test

import (
	"runtime"
	"testing"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// BenchmarkIdleLinks opens 1,000 links over io.Pipe (no file descriptors,
// no goroutines of the transport's own), starts both ends, passes one
// frame each way so both loops have run, and reports what an idle link
// end costs: goroutines, live heap and goroutine stack, measured after a
// collection against the same process before the links existed. Reported,
// never asserted.
func BenchmarkIdleLinks(b *testing.B) {
	const links = 1000
	cfg := stream.DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	for range b.N {
		g0, heap0, stack0 := footprint()
		type pair struct{ p, c *stream.Link }
		pairs := make([]pair, 0, links)
		got := make(chan struct{}, 2*links)
		onFrame := func(wire.Header, []byte) { got <- struct{}{} }
		for i := range links {
			pc, cc, _ := testtree.IOPipe()
			ach := make(chan *stream.Link, 1)
			go func() {
				l, _, err := stream.Accept(cc, cfg, 1)
				if err != nil {
					b.Error(err)
				}
				ach <- l
			}()
			hello := wire.Hello{ID: uint32(i + 1), Name: "c", ParentID: 0, Ancestors: []uint32{0}}
			p, _, err := stream.Open(pc, hello, cfg)
			c := <-ach
			if err != nil || c == nil {
				b.Fatalf("open: %v", err)
			}
			p.Start(onFrame, nil)
			c.Start(onFrame, nil)
			if err := p.Send(wire.Header{Dst: uint32(i + 1), Handle: wire.HandlePing}, nil); err != nil {
				b.Fatal(err)
			}
			if err := c.Send(wire.Header{Dst: 0, Handle: wire.HandlePing}, nil); err != nil {
				b.Fatal(err)
			}
			pairs = append(pairs, pair{p, c})
		}
		for range 2 * links {
			<-got
		}
		g1, heap1, stack1 := footprint()
		ends := float64(2 * links)
		b.ReportMetric(float64(g1-g0)/ends, "goroutines/end")
		b.ReportMetric(float64(heap1-heap0)/ends, "heap-B/end")
		b.ReportMetric(float64(stack1-stack0)/ends, "stack-B/end")
		for _, pr := range pairs {
			pr.p.Close()
			pr.c.Close()
		}
	}
}

func footprint() (goroutines int, heap, stack uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc, ms.StackInuse
}
