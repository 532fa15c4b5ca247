package core_test

import (
	"slices"
	"syscall"
	"testing"
	"time"
)

// latencies records the duration of every call of one benchmark run so the
// median and the tail can be reported beside the mean (ns/op).
type latencies []time.Duration

func newLatencies(n int) latencies { return make(latencies, 0, n) }

// report adds p50-ns and p99-ns to b's results.
func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l.quantile(0.50).Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(l.quantile(0.99).Nanoseconds()), "p99-ns")
}

// quantile is the nearest-rank quantile of sorted l.
func (l latencies) quantile(q float64) time.Duration {
	i := int(q*float64(len(l))+0.5) - 1
	i = max(0, min(i, len(l)-1))
	return l[i]
}

// cpuClock measures the CPU time (user and system, every thread) the
// process spends during a benchmark. On a shared machine wall-clock figures
// move with other load; CPU time per op moves much less.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{processCPU()} }

// report adds cpu-ns/op to b's results.
func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64((processCPU()-c.start).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
