package core_test

import (
	"io"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
)

// pingSize is the payload of every small-message benchmark.
const pingSize = 32

// BenchmarkRawPipePingPong is the baseline the round trips are measured
// against: two goroutines bounce a 32-byte message over the same kind of
// os.Pipe pair a link uses, with no Arbor code in the way. One op is one
// round trip.
func BenchmarkRawPipePingPong(b *testing.B) {
	parent, child, err := testtree.OSPipe()
	if err != nil {
		b.Fatal(err)
	}
	defer parent.Close()
	echoed := make(chan error, 1)
	go func() {
		defer child.Close()
		var buf [pingSize]byte
		for {
			if _, err := io.ReadFull(child, buf[:]); err != nil {
				echoed <- nil // parent closed: done
				return
			}
			if _, err := child.Write(buf[:]); err != nil {
				echoed <- err
				return
			}
		}
	}()

	var msg, got [pingSize]byte
	copy(msg[:], "arbor raw pipe ping-pong payload")
	lat := newLatencies(b.N)
	b.SetBytes(pingSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		t := time.Now()
		if _, err := parent.Write(msg[:]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(parent, got[:]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	cpu.report(b)
	lat.report(b)
	parent.Close()
	if err := <-echoed; err != nil {
		b.Fatal(err)
	}
}
