// Package agent_test benchmarks real local agents: processes spawned from
// the built arbor binary, reached over stdio pipes. Figures are reported,
// never asserted; see docs/BENCHMARKS.md.
package agent_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testbin"

	"github.com/arbor-project/arbor/agent"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
)

var exe string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-bench-")
	if err != nil {
		panic(err)
	}
	if exe, err = testbin.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newRoot(b *testing.B) *agent.Node {
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { root.Close() })
	return root
}

func chain(b *testing.B, root *agent.Node, hops int) []*arborctx.Remote {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := make([]spawn.Hop, hops)
	for i := range path {
		path[i] = spawn.Hop{Method: "local"}
	}
	c, err := root.SpawnPath(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// reportLatency adds p50 and p99 of the sampled durations.
func reportLatency(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkFirstCall: start a fresh local child and complete one call.
func BenchmarkFirstCall(b *testing.B) {
	root := newRoot(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
		if err != nil {
			b.Fatal(err)
		}
		rm := root.Remote(res.ID, res.Name)
		if err := rm.Call(ctx, "agent.ping", nil, nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = rm.Shutdown(sctx)
		cancel()
		b.StartTimer()
	}
	reportLatency(b, lat)
}

func benchPing(b *testing.B, hops int) {
	root := newRoot(b)
	c := chain(b, root, hops)
	last := c[len(c)-1]
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := last.Call(ctx, "agent.ping", nil, nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// BenchmarkPing1Hop and BenchmarkPing3Hop: sequential agent.ping calls.
func BenchmarkPing1Hop(b *testing.B) { benchPing(b, 1) }
func BenchmarkPing3Hop(b *testing.B) { benchPing(b, 3) }

// BenchmarkPipelinedCalls: many agent.ping calls in flight to one child.
func BenchmarkPipelinedCalls(b *testing.B) {
	root := newRoot(b)
	last := chain(b, root, 1)[0]
	ctx := context.Background()
	const window = 256
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, window)
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := last.Call(ctx, "agent.ping", nil, nil); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

// BenchmarkSpawn32: spawn 32 local children in parallel and call each once.
func BenchmarkSpawn32(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var wg sync.WaitGroup
		for j := 0; j < 32; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
				if err != nil {
					b.Error(err)
					return
				}
				if err := root.Remote(res.ID, res.Name).Call(ctx, "agent.ping", nil, nil); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		root.Close()
		b.StartTimer()
	}
}
