package agent

import (
	"testing"
	"time"

	"github.com/arbor-project/arbor/stream/wire"
)

func TestSmoothRTT(t *testing.T) {
	if got := smoothRTT(0, 800*time.Microsecond); got != 800*time.Microsecond {
		t.Errorf("first sample: %v", got)
	}
	// One slow answer moves it a quarter of the way.
	if got := smoothRTT(400*time.Microsecond, 2000*time.Microsecond); got != 800*time.Microsecond {
		t.Errorf("after one slow sample: %v, want 800µs", got)
	}
	// A lasting change is followed within a few probes.
	s := 100 * time.Microsecond
	for range 10 {
		s = smoothRTT(s, 5*time.Millisecond)
	}
	if s < 4700*time.Microsecond {
		t.Errorf("after 10 samples of 5ms: %v", s)
	}
}

func TestRTTDue(t *testing.T) {
	at := time.Unix(1000, 0)
	refresh := 30 * time.Second
	ms := time.Millisecond
	us := time.Microsecond
	for _, c := range []struct {
		name           string
		reported, srtt time.Duration
		since          time.Duration
		want           bool
	}{
		{"never reported", 0, 300 * us, 0, true},
		{"unchanged", 300 * us, 300 * us, time.Hour, false},
		{"noise after a long time", 300 * us, 305 * us, time.Hour, false},
		{"small change, fresh", 300 * us, 350 * us, time.Second, false},
		{"small change, stale", 300 * us, 350 * us, refresh, true},
		{"a fifth and more than the step", 2 * ms, 2500 * us, 0, true},
		{"a fifth but under the step", 300 * us, 400 * us, 0, false},
		{"down by half", 10 * ms, 5 * ms, 0, true},
		{"under a fifth of a large RTT", 10 * ms, 11 * ms, time.Second, false},
	} {
		if got := rttDue(c.reported, c.srtt, at, at.Add(c.since), refresh); got != c.want {
			t.Errorf("%s: rttDue(%v, %v, %v later) = %v, want %v", c.name, c.reported, c.srtt, c.since, got, c.want)
		}
	}
}

// TestReportsCoalesce: however many state reports come while they cannot
// be sent, one per child waits, the latest, with the cause of an older
// one of the same state when it has none: nothing is dropped and the
// memory is bounded by the children.
func TestReportsCoalesce(t *testing.T) {
	hb := &heartbeat{pending: map[uint32]wire.NodeState{}, wake: make(chan struct{}, 1)}
	hb.report(wire.NodeState{ID: 7, State: StateUnresponsive, Cause: "no answer for 10s"})
	for i := range 10000 {
		hb.report(wire.NodeState{ID: uint32(i % 3), State: StateUp, RTT: time.Duration(i)})
	}
	hb.report(wire.NodeState{ID: 7, State: StateUnresponsive, RTT: time.Millisecond})
	if len(hb.pending) != 4 || len(hb.order) != 4 || hb.order[0] != 7 {
		t.Fatalf("pending %v, order %v; want 4 children, 7 first", hb.pending, hb.order)
	}
	for id, want := range map[uint32]time.Duration{0: 9999, 1: 9997, 2: 9998} {
		if got := hb.pending[id]; got.RTT != want || got.State != StateUp {
			t.Errorf("child %d: %+v, want the latest (RTT %d)", id, got, want)
		}
	}
	if got := hb.pending[7]; got.Cause != "no answer for 10s" || got.RTT != time.Millisecond {
		t.Errorf("child 7: %+v, want the latest with the older cause", got)
	}
}
