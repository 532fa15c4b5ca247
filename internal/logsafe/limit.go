package logsafe

import (
	"sync"
	"sync/atomic"
	"time"
)

// Limiter is a token bucket: it admits on average rate items a second and
// up to burst at once, and counts what it refuses in a [Drops]. It never
// blocks and never starts a goroutine of its own but the Drops' timer. It
// is safe for concurrent use.
type Limiter struct {
	mu     sync.Mutex
	rate   float64 // tokens added a second
	burst  float64 // the most tokens the bucket holds
	tokens float64
	last   time.Time // when tokens was last brought up to date
	drops  *Drops
}

// NewLimiter returns a full bucket. Refused items are reported through
// report (see NewDrops) at most once every interval.
func NewLimiter(rate float64, burst int, every time.Duration, report func(dropped uint64)) *Limiter {
	return &Limiter{rate: rate, burst: float64(burst), tokens: float64(burst), drops: NewDrops(every, report)}
}

// Allow takes a token and reports true, or counts a drop and reports
// false when the bucket is empty.
func (l *Limiter) Allow() bool {
	if l.allowAt(time.Now()) {
		return true
	}
	l.drops.Add(1)
	return false
}

func (l *Limiter) allowAt(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.After(l.last) {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	if l.last.IsZero() || now.After(l.last) {
		l.last = now
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// Dropped is how many items Allow has refused.
func (l *Limiter) Dropped() uint64 { return l.drops.Total() }

// Close reports the drops not reported yet, at once (see Drops.Close).
func (l *Limiter) Close() { l.drops.Close() }

// Drops counts dropped items and reports them through a callback at most
// once per interval: the first drop after a report arms a timer, and when
// it fires the count since the last report is handed to report. report
// runs on the timer's goroutine (or Close's) with no lock held. It is safe
// for concurrent use.
type Drops struct {
	every  time.Duration
	report func(n uint64)
	total  atomic.Uint64

	mu      sync.Mutex
	pending uint64
	timer   *time.Timer // armed while pending > 0
	closed  bool
}

// NewDrops returns a counter reporting through report at most once every
// interval.
func NewDrops(every time.Duration, report func(n uint64)) *Drops {
	return &Drops{every: every, report: report}
}

// Add counts n more drops. It never blocks on the report.
func (d *Drops) Add(n uint64) {
	d.total.Add(n)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.pending += n
	if d.timer == nil {
		d.timer = time.AfterFunc(d.every, d.fire)
	}
}

// Total is every drop counted, reported or not.
func (d *Drops) Total() uint64 { return d.total.Load() }

func (d *Drops) fire() {
	d.mu.Lock()
	n := d.pending
	d.pending, d.timer = 0, nil
	d.mu.Unlock()
	if n > 0 {
		d.report(n)
	}
}

// Close stops the timer and reports what is pending at once. Drops
// counted after it add to Total but are not reported. It is idempotent.
func (d *Drops) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	n := d.pending
	d.pending = 0
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.mu.Unlock()
	if n > 0 {
		d.report(n)
	}
}
