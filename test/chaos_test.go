package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"go.uber.org/goleak"
)

// The chaos tree: the root (this process) has chaosFanout[0] children,
// each of those chaosFanout[1], each of those chaosFanout[2]:
// 4 + 12 + 24 = 40 agents on 3 levels.
var chaosFanout = [3]int{4, 3, 2}

// chaosVictims is how many nodes of each level get SIGKILL: one first-level
// node (a subtree of 9 agents), three of the second level and four leaves.
var chaosVictims = [3]int{1, 3, 4}

const (
	// chaosCallers call random nodes concurrently all through the test.
	chaosCallers = 8
	// chaosCallsPerKill is how many calls complete between two kills (and
	// after the last one): the kills are paced by the calls, not a clock.
	chaosCallsPerKill = 60
	// chaosCallTimeout is each call's deadline, far above any call even on
	// a loaded machine: a call that reaches it has hung, and fails the test.
	chaosCallTimeout = patience
	// chaosWait guards every wait of the test for an event (calls
	// completing, the tree settling, processes exiting) against a hang.
	chaosWait = patience
	// chaosLongSleep is the agent.sleep (in seconds) started before each
	// kill on a node the kill takes down: it must end with the disconnect,
	// and no other call sleeps this long.
	chaosLongSleep = 90
)

// chaosNode is one agent of the chaos tree.
type chaosNode struct {
	id     uint32
	name   string
	level  int // 1..3
	parent int // index of the parent agent in the node list; -1 for the root
	proc   proc
	rm     *arborctx.Remote
}

// chaosOutcome is what one call did.
type chaosOutcome struct {
	target int
	fn     string
	err    error
	took   time.Duration
}

// TestChaos builds a 40-agent, 3-level tree of real local agents under a
// root in this process, then SIGKILLs a seeded-random mix of internal and
// leaf nodes while 8 callers run agent.ping, agent.sleep and PING against
// random nodes, dead or alive. Every call must succeed or fail with a
// disconnect or dead reply (none may hang until its deadline), every
// call to a node outside the killed subtrees must succeed, the root's
// route table and tree view must settle to exactly the live nodes, and
// after root.Close no agent process and no goroutine of the root remains.
// ARBOR_CHAOS_SEED replays a run; the seed is logged.
func TestChaos(t *testing.T) {
	goroutines := goleak.IgnoreCurrent()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ARBOR_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ARBOR_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("chaos seed %d (replay with ARBOR_CHAOS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	root, logs := newRoot(t, agent.Options{}, "info")
	states := recordStates(t, root)
	start := time.Now()
	nodes := buildChaosTree(t, root)
	t.Logf("built %d agents in %s", len(nodes), time.Since(start).Round(time.Millisecond))
	dumpLogs := func() {
		if t.Failed() {
			t.Logf("root log:\n%s", chaosTail(logs.String(), 20000))
		}
	}
	defer dumpLogs()

	victims := pickVictims(rng, nodes)
	lost := lostSet(nodes, victims)
	var names []string
	for _, v := range victims {
		names = append(names, fmt.Sprintf("%d (level %d, pid %d)", nodes[v].id, nodes[v].level, nodes[v].proc.PID))
	}
	t.Logf("victims in kill order: %v; %d of %d agents will be lost", names, len(lost), len(nodes))

	// The callers: each picks a node (any, dead or alive) and a call, until
	// stop closes. Seeds come from the test's rng so a run replays.
	var (
		completed atomic.Int64
		progress  = make(chan struct{}, 1)
		stop      = make(chan struct{})
		outMu     sync.Mutex
		outcomes  []chaosOutcome
		wg        sync.WaitGroup
		stopOnce  sync.Once
	)
	// stopCallers ends the callers; deferred too, so that a failure
	// anywhere leaves no caller running past the test.
	stopCallers := func() { stopOnce.Do(func() { close(stop) }) }
	defer wg.Wait()
	defer stopCallers()
	for c := 0; c < chaosCallers; c++ {
		crng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				o := chaosCall(crng, nodes)
				outMu.Lock()
				outcomes = append(outcomes, o)
				outMu.Unlock()
				completed.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	// waitCalls blocks until n calls in all have completed.
	waitCalls := func(n int64) {
		t.Helper()
		deadline := time.NewTimer(chaosWait)
		defer deadline.Stop()
		for completed.Load() < n {
			select {
			case <-progress:
			case <-deadline.C:
				t.Fatalf("only %d of %d calls completed within %s: callers hung", completed.Load(), n, chaosWait)
			}
		}
	}

	// The killer: before each kill, a long agent.sleep is started on a
	// node the kill takes down; it must end with a disconnect naming that
	// node, not when the sleep is over.
	type longCall struct {
		target int
		done   chan chaosOutcome
	}
	var longs []longCall
	killed := map[int]bool{}
	for k, v := range victims {
		waitCalls(int64(k+1) * chaosCallsPerKill)
		if sub := subtreeAlive(nodes, v, killed); len(sub) > 0 {
			lc := longCall{target: sub[rng.IntN(len(sub))], done: make(chan chaosOutcome, 1)}
			longs = append(longs, lc)
			go func() { lc.done <- callNode(nodes, lc.target, "agent.sleep", chaosLongSleep) }()
			// It is running there once its record reaches the root (no
			// other call sleeps that long).
			n := nodes[lc.target]
			logs.waitLine(t, regexp.MustCompile(fmt.Sprintf(`agent\.sleep started: node=%s node_id=%d seconds=%d( |$)`, regexp.QuoteMeta(n.name), n.id, chaosLongSleep)), chaosWait)
		}
		if nodes[v].proc.running() {
			if err := syscall.Kill(nodes[v].proc.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("SIGKILL %d: %v", nodes[v].proc.PID, err)
			}
		}
		killed[v] = true
	}
	waitCalls(int64(len(victims)+1) * chaosCallsPerKill)
	stopCallers()
	callersDone := make(chan struct{})
	go func() { wg.Wait(); close(callersDone) }()
	select {
	case <-callersDone:
	case <-time.After(chaosCallTimeout + chaosWait):
		t.Fatalf("callers did not return within %s", chaosCallTimeout+chaosWait)
	}

	// Every call: success, or a disconnect or dead reply for a lost node.
	var ok, disc, dead int
	var durs []time.Duration
	for _, o := range outcomes {
		durs = append(durs, o.took)
		var de *router.DisconnectError
		var dr *router.DeadError
		n := nodes[o.target]
		switch {
		case o.err == nil:
			ok++
		case !lost[o.target]:
			t.Errorf("%s on surviving node %d (%s) failed after %s: %v", o.fn, n.id, n.name, o.took, o.err)
		case errors.As(o.err, &de):
			disc++
		case errors.As(o.err, &dr):
			dead++
		default:
			t.Errorf("%s on lost node %d (%s) failed after %s with neither a disconnect nor a dead reply: %v", o.fn, n.id, n.name, o.took, o.err)
		}
	}
	slices.Sort(durs)
	t.Logf("%d calls: %d succeeded, %d disconnected, %d dead replies; call time median %s, max %s",
		len(outcomes), ok, disc, dead, durs[len(durs)/2].Round(time.Microsecond), durs[len(durs)-1].Round(time.Millisecond))
	for _, lc := range longs {
		var o chaosOutcome
		select {
		case o = <-lc.done:
		case <-time.After(chaosCallTimeout + chaosWait):
			t.Fatalf("agent.sleep on node %d never returned", nodes[lc.target].id)
		}
		var de *router.DisconnectError
		if !errors.As(o.err, &de) || de.ID != nodes[lc.target].id {
			t.Errorf("agent.sleep pending on killed node %d (%s) ended after %s with %v, want a disconnect naming it", nodes[lc.target].id, nodes[lc.target].name, o.took, o.err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The root's table and tree view settle to exactly the live agents.
	var want []uint32
	for i, n := range nodes {
		if !lost[i] {
			want = append(want, n.id)
		}
	}
	slices.Sort(want)
	chaosSettle(t, states, "root route table lists exactly the live agents", func() string {
		var got []uint32
		for _, r := range root.Router.Table().Routes {
			got = append(got, r.ID)
		}
		if slices.Equal(got, want) {
			return ""
		}
		return fmt.Sprintf("routes %v, want %v", got, want)
	})
	chaosSettle(t, states, "root tree lists exactly the live agents", func() string {
		var got []uint32
		for _, m := range root.Tree.Nodes() {
			got = append(got, m.ID)
		}
		if slices.Equal(got, want) {
			return ""
		}
		return fmt.Sprintf("tree %v, want %v", got, want)
	})
	for i, n := range nodes {
		if lost[i] {
			continue
		}
		if m, ok := root.Tree.Node(n.id); !ok || m.PID != n.proc.PID {
			t.Fatalf("tree entry for live node %d: %+v, want pid %d", n.id, m, n.proc.PID)
		}
		if !n.proc.running() {
			t.Fatalf("live node %d (%s): process %v exited", n.id, n.name, n.proc)
		}
	}
	var lostProcs, treeProcs []proc
	for i, n := range nodes {
		treeProcs = append(treeProcs, n.proc)
		if lost[i] {
			lostProcs = append(lostProcs, n.proc)
		}
	}
	requireExited(t, "agents of the killed subtrees", lostProcs, chaosWait)

	// Shut down: every agent exits, nothing is left below this process,
	// and the root stopped every goroutine it started.
	root.Close()
	requireExited(t, "agents after root.Close", treeProcs, chaosWait)
	if kids := descendants(os.Getpid()); len(kids) != 0 {
		t.Fatalf("processes left below the test after root.Close: %v", kids)
	}
	if err := goleak.Find(goroutines); err != nil {
		t.Fatalf("goroutines leaked by the chaos tree: %v", err)
	}
}

// buildChaosTree spawns the chaos tree level by level, the spawns of a
// level concurrently, and returns its agents, first level first.
func buildChaosTree(t *testing.T, root *agent.Node) []*chaosNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chaosWait)
	defer cancel()
	var nodes []*chaosNode
	parents := []int{-1}
	for level := 1; level <= len(chaosFanout); level++ {
		type slot struct {
			parent int
			res    agent.SpawnResult
			err    error
		}
		var slots []*slot
		for _, p := range parents {
			for range chaosFanout[level-1] {
				slots = append(slots, &slot{parent: p})
			}
		}
		var wg sync.WaitGroup
		for _, s := range slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.parent < 0 {
					s.res, s.err = root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
				} else {
					s.res, s.err = root.SpawnVia(ctx, nodes[s.parent].rm, spawn.Hop{Method: "local"}, "")
				}
			}()
		}
		wg.Wait()
		parents = parents[:0]
		for _, s := range slots {
			if s.err != nil {
				t.Fatalf("spawning a level-%d agent: %v", level, s.err)
			}
			parents = append(parents, len(nodes))
			nodes = append(nodes, &chaosNode{
				id: s.res.ID, name: s.res.Name, level: level, parent: s.parent,
				proc: procOf(t, s.res.PID), rm: root.Remote(s.res.ID, s.res.Name),
			})
		}
	}
	return nodes
}

// pickVictims chooses chaosVictims[l-1] distinct nodes of each level l and
// returns them in a random kill order.
func pickVictims(rng *rand.Rand, nodes []*chaosNode) []int {
	var victims []int
	for level := 1; level <= len(chaosVictims); level++ {
		var idx []int
		for i, n := range nodes {
			if n.level == level {
				idx = append(idx, i)
			}
		}
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		victims = append(victims, idx[:chaosVictims[level-1]]...)
	}
	rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
	return victims
}

// lostSet is every node that is a victim or below one.
func lostSet(nodes []*chaosNode, victims []int) map[int]bool {
	lost := map[int]bool{}
	for i := range nodes {
		for a := i; a >= 0; a = nodes[a].parent {
			if slices.Contains(victims, a) {
				lost[i] = true
				break
			}
		}
	}
	return lost
}

// subtreeAlive lists v and the nodes below it that no earlier kill took
// down.
func subtreeAlive(nodes []*chaosNode, v int, killed map[int]bool) []int {
	var out []int
	for i := range nodes {
		under, gone := false, false
		for a := i; a >= 0; a = nodes[a].parent {
			under = under || a == v
			gone = gone || killed[a]
		}
		if under && !gone {
			out = append(out, i)
		}
	}
	return out
}

// chaosCall makes one call to a random node: agent.ping, a short
// agent.sleep (so calls are in flight when a kill lands) or a PING.
func chaosCall(rng *rand.Rand, nodes []*chaosNode) chaosOutcome {
	target := rng.IntN(len(nodes))
	switch rng.IntN(3) {
	case 0:
		return callNode(nodes, target, "agent.ping", 0)
	case 1:
		return callNode(nodes, target, "agent.sleep", 0.01+0.2*rng.Float64())
	}
	return callNode(nodes, target, "ping", 0)
}

// callNode calls fn on nodes[target] under chaosCallTimeout; an error at
// that deadline means the call hung.
func callNode(nodes []*chaosNode, target int, fn string, seconds float64) chaosOutcome {
	ctx, cancel := context.WithTimeout(context.Background(), chaosCallTimeout)
	defer cancel()
	rm := nodes[target].rm
	start := time.Now()
	var err error
	switch fn {
	case "agent.ping":
		err = rm.Call(ctx, fn, nil, nil)
	case "agent.sleep":
		var res builtin.SleepResult
		err = rm.Call(ctx, fn, builtin.SleepArgs{Seconds: seconds}, &res)
	default:
		_, err = rm.Ping(ctx)
	}
	return chaosOutcome{target: target, fn: fn, err: err, took: time.Since(start)}
}

// chaosSettle runs check (which returns "" when satisfied, else what it
// saw) now and again after every event of the root's tree, until it is
// satisfied. The tree emits an event after each change to it and to the
// root's route table, so the last change is always followed by a check.
func chaosSettle(t *testing.T, states *stateEvents, what string, check func() string) {
	t.Helper()
	guard := time.NewTimer(chaosWait)
	defer guard.Stop()
	for {
		_, _, changed := states.since(0) // before the check: no change is missed
		msg := check()
		if msg == "" {
			return
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("%s: not within %s: %s", what, chaosWait, msg)
		}
	}
}

// chaosTail is the last n bytes of s.
func chaosTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
