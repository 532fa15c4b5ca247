package core_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// The simulated tree: fan-out 10, depth 4 below the root, so
// 10 + 100 + 1,000 + 10,000 = 11,110 nodes, every one a route at the root.
const (
	treeFanOut = 10
	treeDepth  = 4
	// spawners is how many goroutines attach nodes at once. Spawning is
	// mostly waiting on hello round trips, so a few per core keep it busy.
	spawners = 8
)

func treeSize(fanOut, depth int) int {
	n, level := 0, 1
	for range depth {
		level *= fanOut
		n += level
	}
	return n
}

// BenchmarkTree10k builds the whole tree in this process, every link a real
// yamux session over a pipe, and reports:
//
//   - converge-ms: from the first spawn until the root's table holds every
//     node (an ADD_ROUTE from each arrived). Spawning and propagation
//     overlap: a node's route climbs while its siblings are still being
//     attached, so this is the time for a tree of this size to come up and
//     be routable from the root. It is also ns/op.
//   - tail-us: how long after the last spawn returned the root's table was
//     complete: the propagation delay still outstanding once the tree exists.
//   - heap-B/route, stack-B/route: live heap (after GC) and goroutine stack
//     growth of the whole process per node: both ends of its link and its
//     router. The root's own table cost is BenchmarkRootTable10k.
//   - goroutines/link.
//   - teardown-ms: closing every router, top down, 64 at a time (not in
//     ns/op).
//
// io.Pipe needs no file descriptors and builds all 11,110 nodes. os.Pipe
// needs four per link (44,440): the benchmark tries to raise RLIMIT_NOFILE
// and, where it may not, builds the largest fan-out-10 tree that fits
// (breadth first, the last level partly filled) and says so in its name.
func BenchmarkTree10k(b *testing.B) {
	full := treeSize(treeFanOut, treeDepth)
	for _, tr := range []testtree.Transport{
		{Name: "io.Pipe", Pair: testtree.IOPipe},
		{Name: "os.Pipe", Pair: testtree.OSPipe},
	} {
		nodes := full
		if tr.Name == "os.Pipe" {
			nodes = min(full, fileBudget(b, 4*full+1024)/4)
		}
		b.Run(fmt.Sprintf("%s/nodes=%d", tr.Name, nodes), func(b *testing.B) {
			runTreeBench(b, tr, treeDepth, nodes)
		})
	}
}

// BenchmarkTree100k is BenchmarkTree10k one level deeper: fan-out 10,
// depth 5, so 111,110 nodes, every link io.Pipe (os.Pipe would need
// 444,440 file descriptors; the hard limit here is far below). It reports
// the same figures. A tree that would not fit in memory is capped: a probe
// tree of 1,110 nodes measures heap and stack per node, and the benchmark
// builds, breadth first, the largest tree whose live memory fits in a third
// of MemAvailable (ARBOR_TREE_NODES overrides the size). The size built
// is in the name, as is the cap's reason when it applied.
func BenchmarkTree100k(b *testing.B) {
	const depth = 5
	full := treeSize(treeFanOut, depth)
	tr := testtree.Transport{Name: "io.Pipe", Pair: testtree.IOPipe}
	nodes, why := full, ""
	if v := os.Getenv("ARBOR_TREE_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("ARBOR_TREE_NODES=%q: want a positive count", v)
		}
		nodes, why = min(full, n), "/set"
	} else if avail := memAvailable(b); avail > 0 {
		probe := buildTree(b, tr, treeFanOut, 3, treeSize(treeFanOut, 3))
		per := max(1, (probe.heap+probe.stack)/int64(treeSize(treeFanOut, 3)))
		if fit := int(avail / 3 / per); fit < full {
			nodes, why = fit, "/mem-capped"
		}
		b.Logf("probe: %d B heap+stack per node, MemAvailable %d MiB, building %d of %d nodes", per, avail>>20, nodes, full)
	}
	b.Run(fmt.Sprintf("%s/nodes=%d%s", tr.Name, nodes, why), func(b *testing.B) {
		runTreeBench(b, tr, depth, nodes)
	})
}

// runTreeBench builds a fan-out-10 tree of nodes nodes b.N times and
// reports the averages of what buildTree measured.
func runTreeBench(b *testing.B, tr testtree.Transport, depth, nodes int) {
	var sum treeResult
	for range b.N {
		r := buildTree(b, tr, treeFanOut, depth, nodes)
		sum.converge += r.converge
		sum.tail += r.tail
		sum.teardown += r.teardown
		sum.heap += r.heap
		sum.stack += r.stack
		sum.goroutines += r.goroutines
	}
	n, routes := float64(b.N), float64(nodes)
	b.ReportMetric(float64(sum.converge.Microseconds())/1000/n, "converge-ms")
	b.ReportMetric(float64(sum.tail.Microseconds())/n, "tail-us")
	b.ReportMetric(float64(sum.teardown.Milliseconds())/n, "teardown-ms")
	b.ReportMetric(float64(sum.heap)/n/routes, "heap-B/route")
	b.ReportMetric(float64(sum.stack)/n/routes, "stack-B/route")
	b.ReportMetric(float64(sum.goroutines)/n/routes, "goroutines/link")
}

// writeHeapProfile writes the live heap to path (ARBOR_TREE_HEAPPROFILE:
// what a built tree keeps, before teardown).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// memAvailable is MemAvailable from /proc/meminfo in bytes, or 0.
func memAvailable(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

type treeResult struct {
	converge, tail time.Duration
	teardown       time.Duration
	heap, stack    int64
	goroutines     int
}

// buildTree builds one tree of at most limit nodes (fan-out fanOut, depth
// depth below the root), measures it and tears it down. Only the building is
// timed.
func buildTree(b *testing.B, tr testtree.Transport, fanOut, depth, limit int) treeResult {
	b.StopTimer()
	total := min(limit, treeSize(fanOut, depth))
	o := testtree.Options{Transport: tr}
	before := memSnapshot()

	root := testtree.Root(b, o)
	var routed atomic.Int64
	converged := make(chan time.Time, 1)
	unsub := root.M.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.AddRoute && routed.Add(1) == int64(total) {
			converged <- time.Now()
		}
	})
	defer unsub()

	type job struct {
		parent *testtree.Node
		name   string
		depth  int
	}
	jobs := make(chan job, total)
	var pending sync.WaitGroup
	var mu sync.Mutex
	levels := make([][]*testtree.Node, depth+1)
	levels[0] = []*testtree.Node{root}
	var failed atomic.Pointer[error]
	var queued atomic.Int64
	enqueue := func(parent *testtree.Node, d int) {
		for i := range fanOut {
			if queued.Add(1) > int64(total) {
				return // the breadth-first cap: the last level is partial
			}
			pending.Add(1)
			jobs <- job{parent, fmt.Sprintf("n%d", i), d}
		}
	}

	b.StartTimer()
	start := time.Now()
	enqueue(root, 1)
	var workers sync.WaitGroup
	for range spawners {
		workers.Go(func() {
			for j := range jobs {
				if failed.Load() == nil {
					n, err := j.parent.SpawnErr(o, j.name)
					if err != nil {
						failed.CompareAndSwap(nil, &err)
					} else {
						mu.Lock()
						levels[j.depth] = append(levels[j.depth], n)
						mu.Unlock()
						if j.depth < depth {
							enqueue(n, j.depth+1)
						}
					}
				}
				pending.Done()
			}
		})
	}
	pending.Wait()
	built := time.Now()
	close(jobs)
	workers.Wait()
	var done time.Time
	if err := failed.Load(); err != nil {
		b.Errorf("building the tree: %v", *err)
	} else {
		select {
		case done = <-converged:
		case <-time.After(time.Minute + time.Duration(total)*time.Millisecond):
			b.Errorf("root routes %d of %d nodes after %s", routed.Load(), total, time.Minute+time.Duration(total)*time.Millisecond)
		}
	}
	b.StopTimer()

	res := treeResult{converge: done.Sub(start), tail: max(0, done.Sub(built))}
	if !b.Failed() {
		if got := len(root.R.Table().Routes); got != total {
			b.Errorf("root table has %d routes, want %d", got, total)
		}
		after := memSnapshot()
		if path := os.Getenv("ARBOR_TREE_HEAPPROFILE"); path != "" {
			writeHeapProfile(b, path)
		}
		res.heap = int64(after.heap) - int64(before.heap)
		res.stack = int64(after.stack) - int64(before.stack)
		res.goroutines = after.goroutines - before.goroutines
	}

	// Tear down from the top, closing each node's router (the product's
	// shutdown path): a node whose parent link closes only fails its own
	// waiters, so no DEL_ROUTE storm climbs the tree.
	teardown := time.Now()
	for _, level := range levels {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, n := range level {
			sem <- struct{}{}
			wg.Go(func() {
				n.R.Close()
				<-sem
			})
		}
		wg.Wait()
	}
	res.teardown = time.Since(teardown)
	return res
}

type mem struct {
	heap, stack uint64
	goroutines  int
}

func memSnapshot() mem {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return mem{heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// fileBudget returns how many file descriptors this process may open, after
// trying to raise RLIMIT_NOFILE to want (the hard limit too, which needs
// CAP_SYS_RESOURCE). A margin is kept for everything else.
func fileBudget(b *testing.B, want int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < uint64(want) {
		raised := syscall.Rlimit{Cur: uint64(want), Max: max(lim.Max, uint64(want))}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			raised = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
				b.Logf("setrlimit: %v", err)
			}
		}
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatalf("getrlimit: %v", err)
		}
	}
	const margin = 1024
	return max(0, int(lim.Cur)-margin)
}

// BenchmarkRootTable10k isolates the root's share: 10 real child links
// (yamux over io.Pipe) whose far ends are bare links, not routers, announce
// all 11,110 nodes of the tree with ADD_ROUTE frames exactly as depth-1
// intermediates would. It reports how long the root takes to absorb them
// (absorb-ms, from the first frame sent to a complete table), and the live
// heap the root's table and the RouteMonitor's per-link sets cost per route
// (root-table-B/route), link costs excluded.
func BenchmarkRootTable10k(b *testing.B) { benchRootTable(b, treeDepth) }

// BenchmarkRootTable100k is BenchmarkRootTable10k for a tree one level
// deeper: 111,110 routes, the root's share of the 100,000-node tree.
func BenchmarkRootTable100k(b *testing.B) { benchRootTable(b, treeDepth+1) }

func benchRootTable(b *testing.B, depth int) {
	total := treeSize(treeFanOut, depth)
	var absorb time.Duration
	var heap int64
	for range b.N {
		b.StopTimer()
		d, h := absorbRoutes(b, total, depth)
		absorb += d
		heap += h
	}
	b.ReportMetric(float64(absorb.Microseconds())/1000/float64(b.N), "absorb-ms")
	b.ReportMetric(float64(heap)/float64(b.N)/float64(total), "root-table-B/route")
}

func absorbRoutes(b *testing.B, total, depth int) (time.Duration, int64) {
	// The stand-ins take all their subtree's IDs before announcing any
	// route: more unused IDs than the default quota lets a link hold
	// at depth 5 (real intermediates take them as they spawn).
	root := testtree.Root(b, testtree.Options{Quota: router.Quota{MaxUnusedIDs: uint64(total)}})
	defer root.R.Close()
	var routed atomic.Int64
	converged := make(chan time.Time, 1)
	unsub := root.M.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.AddRoute && routed.Add(1) == int64(total) {
			converged <- time.Now()
		}
	})
	defer unsub()

	// Attach the 10 depth-1 links; each PortUp routes the child itself.
	type child struct {
		id    uint32
		link  *stream.Link
		names []wire.AddRoute
	}
	children := make([]*child, treeFanOut)
	for i := range children {
		id, err := root.R.AllocateID(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		pc, cc, _ := testtree.IOPipe()
		name := fmt.Sprintf("n%d", i)
		hello := wire.Hello{ID: id, Name: name, ParentID: wire.RootID, Ancestors: []uint32{wire.RootID}}
		acc := make(chan *stream.Link, 1)
		go func() {
			l, _, err := stream.Accept(cc, &stream.Config{
				MaxMessage: wire.DefaultMaxMessage, HelloTimeout: 10 * time.Second,
				WriteTimeout: 10 * time.Second, StreamWindow: 16 << 20, SendQueue: 1024,
				Logger: root.R.Logger().Named(name),
			}, os.Getpid())
			if err != nil {
				b.Error(err)
			}
			acc <- l
		}()
		cfg := stream.DefaultConfig()
		cfg.Logger = root.R.Logger()
		pl, _, err := stream.Open(pc, hello, cfg)
		if err != nil {
			b.Fatal(err)
		}
		cl := <-acc
		if cl == nil {
			b.FailNow()
		}
		// The child takes the IDs of its subtree from the root as a real
		// intermediate would (ALLOCATE_ID), so the root accepts its routes.
		const allocHandle = wire.FirstDynamicHandle
		blocks := make(chan wire.IDBlock, 4)
		cl.Start(func(h wire.Header, p []byte) {
			var blk wire.IDBlock
			if h.Handle == allocHandle && !h.IsDead() && wire.Unmarshal(p, &blk) == nil {
				blocks <- blk
			}
		}, nil)
		defer cl.Close()
		if _, err := root.R.AttachChild(pl); err != nil {
			b.Fatal(err)
		}
		var ids []uint32
		for len(ids) < total/treeFanOut-1 {
			req, _ := wire.Marshal(wire.AllocateIDRequest{Count: wire.IDBlockSize})
			h := wire.Header{Dst: wire.RootID, Src: id, Auth: id, Handle: wire.HandleAllocateID, ReplyTo: allocHandle}
			if err := cl.Send(h, req); err != nil {
				b.Fatal(err)
			}
			select {
			case blk := <-blocks:
				for k := range blk.Count {
					ids = append(ids, blk.Start+k)
				}
			case <-time.After(time.Minute):
				b.Fatal("no ID block from the root")
			}
		}
		c := &child{id: id, link: cl}
		// The subtree below this child (1,110 more nodes at depth 4), named as testtree
		// names them (a path of hops).
		var walk func(prefix string, parent uint32, d int)
		walk = func(prefix string, parent uint32, d int) {
			for k := range treeFanOut {
				n := fmt.Sprintf("%s/n%d", prefix, k)
				me := ids[0]
				ids = ids[1:]
				c.names = append(c.names, wire.AddRoute{ID: me, Name: n, Parent: parent})
				if d < depth {
					walk(n, me, d+1)
				}
			}
		}
		walk(name, id, 2)
		children[i] = c
	}
	frames := make([][][]byte, len(children))
	for i, c := range children {
		for _, ar := range c.names {
			body, err := wire.Marshal(ar)
			if err != nil {
				b.Fatal(err)
			}
			frames[i] = append(frames[i], body)
		}
	}
	root.WaitRoute(b, children[len(children)-1].id)

	// Warm the links up with a burst of the same shape first, to a sink
	// handler, so the buffers a burst grows (yamux's receive buffer, the
	// write loops' batches) are grown before the first snapshot and the
	// difference is the table alone.
	sink := make(chan struct{}, treeFanOut)
	var sunk atomic.Int64
	sinkHandle := root.R.AddHandler(func(*router.Message) {
		if sunk.Add(1) == int64(total-treeFanOut) {
			sink <- struct{}{}
		}
	}, router.Anyone)
	burst := func(handle uint32) {
		var wg sync.WaitGroup
		for i, c := range children {
			wg.Go(func() {
				h := wire.Header{Dst: wire.RootID, Src: c.id, Auth: c.id, Handle: handle}
				for _, body := range frames[i] {
					if err := c.link.SendWait(b.Context(), h, body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	burst(sinkHandle)
	select {
	case <-sink:
	case <-time.After(time.Minute):
		b.Fatalf("sink got %d of %d warm-up frames after a minute", sunk.Load(), total-treeFanOut)
	}
	before := memSnapshot()

	b.StartTimer()
	start := time.Now()
	burst(wire.HandleAddRoute)
	var done time.Time
	select {
	case done = <-converged:
	case <-time.After(time.Minute):
		b.Fatalf("root routes %d of %d nodes after a minute", routed.Load(), total)
	}
	b.StopTimer()
	after := memSnapshot()
	// Everything the senders built stays live across both snapshots, so
	// the difference is what the root keeps.
	runtime.KeepAlive(children)
	runtime.KeepAlive(frames)
	if got := len(root.R.Table().Routes); got != total {
		b.Fatalf("root table has %d routes, want %d", got, total)
	}
	return done.Sub(start), int64(after.heap) - int64(before.heap)
}
