package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestServeWatchDeliberateEnds: a node shut down with arbor kill, and the
// node below it, leave with "shut down on request of node N", never as a
// lost link; arbor stop shows as a stopping event and the watch ends with
// status 0. (A SIGKILLed node is still "lost": TestServeWatchKill.)
func TestServeWatchDeliberateEnds(t *testing.T) {
	s := startServe(t)
	leaf, _ := s.spawnID(t, "local/local")
	mid := s.tree(t).Children[0].ID
	w := s.startWatch(t)
	s.must(t, "kill", fmt.Sprint(mid))
	for _, id := range []uint32{mid, leaf} {
		e := w.waitEvent(t, "del_route", id, cliTimeout)
		if !strings.HasPrefix(e.Cause, "shut down on request of node ") || strings.Contains(e.Cause, "lost") {
			t.Errorf("del_route %d after arbor kill: cause %q, want a shutdown on request", id, e.Cause)
		}
	}
	// The leaf was shut down by its parent, which names itself.
	if e := w.waitEvent(t, "del_route", leaf, cliTimeout); e.Cause != fmt.Sprintf("shut down on request of node %d", mid) {
		t.Errorf("leaf's cause %q, want its parent %d's request", e.Cause, mid)
	}

	s.must(t, "stop")
	e := w.waitEvent(t, "stopping", 0, cliTimeout)
	if e.Cause != "arbor stop" {
		t.Errorf("stopping event %+v", e)
	}
	if code := w.wait(t, cliTimeout+10*time.Second); code != 0 {
		t.Errorf("watch exited %d after arbor stop, want 0; stderr:\n%s", code, w.stderr)
	}
}
