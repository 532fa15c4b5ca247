package test

import (
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestFanoutSetUsesPool: with arbor serve running, a command over a --to
// set gets each target's node from the daemon's pool: the first run
// builds them (sharing the leading hop), the second finds them warm and
// adds no node to the tree; --no-daemon builds a private tree and leaves
// the daemon's alone. The output is the same either way.
func TestFanoutSetUsesPool(t *testing.T) {
	s := startServe(t)
	const set = "local,local/local,local/local/local"
	want := []string{"local/local/local: hi", "local/local: hi", "local: hi"}
	check := func(args ...string) {
		t.Helper()
		res := s.run(t, append(args, "exec", "-w", set, "--", "echo", "hi")...)
		lines := strings.Split(strings.TrimSpace(string(res.stdout)), "\n")
		sort.Strings(lines)
		if res.code != 0 || !reflect.DeepEqual(lines, want) {
			t.Fatalf("arbor %q: %s; want lines %q", args, res, want)
		}
	}
	check()
	first := s.tree(t).ids()
	if len(first) < 3 {
		t.Fatalf("after a run over %s the tree is %v: the pool kept no nodes", set, first)
	}
	check()
	if again := s.tree(t).ids(); !reflect.DeepEqual(again, first) {
		t.Errorf("a second run changed the tree: %v, then %v (the pool's nodes were not reused)", first, again)
	}
	check("--no-daemon")
	if after := s.tree(t).ids(); !reflect.DeepEqual(after, first) {
		t.Errorf("a --no-daemon run changed the daemon's tree: %v, then %v", first, after)
	}
}
