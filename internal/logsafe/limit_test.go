package logsafe

import (
	"sync"
	"testing"
	"time"
)

// TestLimiterBucket drives the bucket with a clock of its own: a full
// bucket admits burst at once, then rate a second, and never stores more
// than burst however long it is left alone.
func TestLimiterBucket(t *testing.T) {
	l := NewLimiter(100, 10, time.Hour, func(uint64) {})
	defer l.Close()
	t0 := time.Unix(1000, 0)
	admitted := func(now time.Time, tries int) int {
		n := 0
		for range tries {
			if l.allowAt(now) {
				n++
			}
		}
		return n
	}
	if n := admitted(t0, 50); n != 10 {
		t.Fatalf("a full bucket admitted %d of 50, want the burst of 10", n)
	}
	if n := admitted(t0.Add(100*time.Millisecond), 50); n != 10 {
		t.Fatalf("after 100ms at 100/s: %d admitted, want 10", n)
	}
	if n := admitted(t0.Add(105*time.Millisecond), 50); n != 0 {
		t.Fatalf("after 5ms more at 100/s: %d admitted, want 0 (half a token)", n)
	}
	if n := admitted(t0.Add(110*time.Millisecond), 50); n != 1 {
		t.Fatalf("after 10ms at 100/s: %d admitted, want 1", n)
	}
	if n := admitted(t0.Add(time.Hour), 50); n != 10 {
		t.Fatalf("after an hour idle: %d admitted, want the burst of 10", n)
	}
	// A clock that steps back adds nothing and takes nothing back.
	if n := admitted(t0, 50); n != 0 {
		t.Fatalf("clock stepped back: %d admitted, want 0", n)
	}
}

// TestLimiterCountsDrops: every refusal is counted, and the count is
// reported, in total, by the time Close returns.
func TestLimiterCountsDrops(t *testing.T) {
	var mu sync.Mutex
	var reported uint64
	l := NewLimiter(1, 5, time.Hour, func(n uint64) {
		mu.Lock()
		reported += n
		mu.Unlock()
	})
	admitted := 0
	for range 1000 {
		if l.Allow() {
			admitted++
		}
	}
	if admitted < 5 || admitted > 10 {
		t.Fatalf("admitted %d of 1000 at 1/s with a burst of 5", admitted)
	}
	if got := l.Dropped(); got != uint64(1000-admitted) {
		t.Fatalf("Dropped = %d, want %d", got, 1000-admitted)
	}
	l.Close()
	mu.Lock()
	defer mu.Unlock()
	if reported != uint64(1000-admitted) {
		t.Fatalf("reported %d drops, want %d", reported, 1000-admitted)
	}
}

// TestDropsReportsOncePerInterval: a stream of drops is reported in
// summaries, not once per drop, and nothing is lost or counted twice.
func TestDropsReportsOncePerInterval(t *testing.T) {
	reports := make(chan uint64, 100)
	d := NewDrops(20*time.Millisecond, func(n uint64) { reports <- n })
	for range 10000 {
		d.Add(1)
	}
	var sum uint64
	select {
	case n := <-reports:
		sum += n
	case <-time.After(time.Minute):
		t.Fatal("no report")
	}
	d.Add(7)
	d.Close()
	d.Add(100) // after Close: counted, never reported
	// A timer that fired under Close may still be handing over its count.
	deadline := time.After(time.Minute)
	for sum < 10007 {
		select {
		case n := <-reports:
			sum += n
		case <-deadline:
			t.Fatalf("reported %d drops in all, want 10007", sum)
		}
	}
	select {
	case n := <-reports:
		t.Fatalf("reported %d more drops after all were reported", n)
	default:
	}
	if sum != 10007 {
		t.Fatalf("reported %d drops in all, want 10007", sum)
	}
	if d.Total() != 10107 {
		t.Fatalf("Total = %d, want 10107", d.Total())
	}
}
