package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/stream/wire"
)

// TestNodeStateCauseClippedAndEscaped: a hostile child reports its own
// child DOWN with a 1 MiB cause full of terminal escapes and newlines (a
// fake second event line). The root accepts the report, as it is the
// child's parent's, but the cause its tree hands on (to `arbor watch`, the
// logs) is at most 1 KiB and holds no control character. Before, it went
// on raw, whole.
func TestNodeStateCauseClippedAndEscaped(t *testing.T) {
	root := newRoot(t, agent.HeartbeatConfig{})
	ev := watchTree(t, root)
	evil := attachChild(t, root, "evil", nil)
	victim := attachChild(t, evil, "evil/sub", nil)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	vid := victim.Router.ID()
	ev.wait(t, "add_route", vid)

	cause := strings.Repeat("\x1b[2J\x1b]0;owned\x07\r\n2026-01-01T00:00:00Z down 1 root: ", (1<<20)/48)
	body, err := wire.Marshal(wire.NodeState{ID: vid, Parent: evil.Router.ID(), State: agent.StateDown, Cause: cause})
	if err != nil {
		t.Fatal(err)
	}
	if err := evil.Router.SendContext(ctx, wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
		t.Fatal(err)
	}
	down := ev.wait(t, agent.StateDown, vid)
	if len(down.Cause) > 1<<10 {
		t.Errorf("cause of %d bytes reached the tree's events, want at most 1 KiB", len(down.Cause))
	}
	if i := strings.IndexFunc(down.Cause, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }); i >= 0 {
		t.Errorf("control character %q at %d of the cause: %.80q", down.Cause[i], i, down.Cause)
	}
	if !strings.HasPrefix(down.Cause, `\x1b[2J`) || !strings.HasSuffix(down.Cause, " bytes cut]") {
		t.Errorf("cause %.40q…%q: want the start escaped and a cut marker", down.Cause, down.Cause[max(0, len(down.Cause)-30):])
	}
}
