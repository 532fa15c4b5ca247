package agent_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// attachChild attaches a node in this process below root over a real
// pipe, serving reg (nil: the built-ins); it is closed at the end of the
// test.
func attachChild(t *testing.T, root *agent.Node, name string, reg *funcs.Registry) *agent.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	id, err := root.Router.AllocateID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	attached := make(chan *agent.Node, 1)
	go func() {
		n, err := agent.Attach(cc, agent.Options{Logger: hclog.NewNullLogger(), Registry: reg}, patience)
		if err != nil {
			t.Error(err)
		}
		attached <- n
	}()
	pl, _, err := stream.Open(pc, root.ChildHello(id, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	child := <-attached
	if child == nil {
		t.FailNow()
	}
	t.Cleanup(func() { child.Close() })
	if _, err := root.Router.AttachChild(pl); err != nil {
		t.Fatal(err)
	}
	return child
}

// lineCounter is a log sink that counts the lines holding each of its
// keys and wakes a waiter on every write.
type lineCounter struct {
	mu     sync.Mutex
	keys   []string
	counts map[string]int
	wake   chan struct{}
}

func newLineCounter(keys ...string) *lineCounter {
	return &lineCounter{keys: keys, counts: make(map[string]int), wake: make(chan struct{}, 1)}
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	for _, line := range strings.Split(string(p), "\n") {
		for _, k := range c.keys {
			if strings.Contains(line, k) {
				c.counts[k]++
			}
		}
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *lineCounter) count(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[k]
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func liveHeap() uint64 {
	runtime.GC()
	return heapAlloc()
}

// holdSpawnGrant has root ask node (serving reg) for an ssh spawn, which
// node's agent.spawn holds open until the test ends, and returns the
// agent.binary grant the request carried.
func holdSpawnGrant(t *testing.T, ctx context.Context, root, node *agent.Node, reg *funcs.Registry) string {
	t.Helper()
	grants := make(chan string, 1)
	funcs.Register(reg, "agent.spawn", func(ctx context.Context, _ *funcs.Call, req agent.SpawnRequest) (agent.SpawnResult, error) {
		grants <- req.BinaryGrant
		<-ctx.Done()
		return agent.SpawnResult{}, ctx.Err()
	})
	spawnCtx, endSpawn := context.WithCancel(ctx)
	spawned := make(chan struct{})
	go func() {
		defer close(spawned)
		via := root.Remote(node.Router.ID(), node.Router.Name())
		defer via.Release()
		root.SpawnVia(spawnCtx, via, spawn.Hop{Method: "ssh", Target: "db1"}, "")
	}()
	t.Cleanup(func() { endSpawn(); <-spawned })
	var grant string
	select {
	case grant = <-grants:
	case <-ctx.Done():
		t.Fatal("the spawn request never reached the node")
	}
	if grant == "" {
		t.Fatal("the root's ssh spawn request carries no grant")
	}
	return grant
}

// TestAgentBinaryFloodFromChild: a child node the root asked to spawn
// over ssh holds the spawn open and calls agent.binary 1,000 times at
// once, half of them with the spawn's grant and half without, and never
// reads an answer or a channel. The root hands out one binary and refuses
// the rest; the live heap of this process (the root, and the child
// holding whatever reached it) stays within 64 MiB of where it started,
// checked at every decision of the root; and a sibling answers pings and
// calls throughout. Before, each call read the 4 MiB binary and sent it
// back as one reply, 1,000 of them: 4 GiB.
func TestAgentBinaryFloodFromChild(t *testing.T) {
	const (
		platform = "plan9/amd64"
		size     = 4 << 20
		flood    = 1000
		limit    = 64 << 20
		handOut  = "handing out agent binary"
		refused  = "agent binary refused"
	)
	dir := t.TempDir()
	bin := make([]byte, size)
	rand.Read(bin)
	if err := os.WriteFile(filepath.Join(dir, "arbor-plan9-amd64"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = nil
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := newLineCounter(handOut, refused)
	root, err := agent.NewRoot(agent.Options{Exe: exe, AgentDir: dir,
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })

	reg := funcs.NewRegistry()
	builtin.Register(reg)
	hostile := attachChild(t, root, "hostile", reg)
	sibling := attachChild(t, root, "sibling", nil)

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	grant := holdSpawnGrant(t, ctx, root, hostile, reg)

	// The sibling is pinged and called until the flood is over.
	sib := root.Remote(sibling.Router.ID(), sibling.Router.Name())
	defer sib.Release()
	probe := func() error {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		if _, err := sib.Ping(pctx); err != nil {
			return err
		}
		return sib.Call(pctx, "agent.ping", nil, nil)
	}
	stopProbe := make(chan struct{})
	probed := make(chan error, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := probe(); err != nil {
				probed <- err
				return
			}
			select {
			case <-stopProbe:
				probed <- nil
				return
			case <-tick.C:
			}
		}
	}()

	base := liveHeap()
	toRoot := hostile.Remote(wire.RootID, "root")
	defer toRoot.Release()
	var pending []any // never waited for: the answers are never read
	for i := range flood {
		g := grant
		if i%2 == 1 {
			g = ""
		}
		pc, err := toRoot.Start(ctx, "agent.binary", agent.BinaryRequest{Platform: platform, Grant: g})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		pending = append(pending, pc)
	}
	var peak uint64
	for logs.count(handOut)+logs.count(refused) < flood {
		if h := heapAlloc(); h > base+limit {
			if live := liveHeap(); live > base+limit {
				t.Fatalf("the live heap grew by %d MiB (limit %d MiB) after %d answers of the root",
					(live-base)>>20, limit>>20, logs.count(handOut)+logs.count(refused))
			}
		}
		select {
		case <-logs.wake:
		case <-ctx.Done():
			t.Fatalf("the root decided %d of %d calls", logs.count(handOut)+logs.count(refused), flood)
		}
	}
	if live := liveHeap(); live > base {
		peak = live - base
	}
	if peak > limit {
		t.Fatalf("the live heap grew by %d MiB (limit %d MiB)", peak>>20, limit>>20)
	}
	if n := logs.count(handOut); n != 1 {
		t.Fatalf("the root handed out %d binaries for one grant, want 1", n)
	}
	close(stopProbe)
	if err := <-probed; err != nil {
		t.Fatalf("the sibling stopped answering during the flood: %v", err)
	}
	if err := probe(); err != nil {
		t.Fatalf("the sibling does not answer after the flood: %v", err)
	}
	runtime.KeepAlive(pending)
	t.Logf("live heap growth after %d calls: %d KiB", flood, peak>>10)
}

// TestAgentBinaryForForeignHost: the honest path. The root holds the
// only agent for linux/386 (in its agent dir) and asks its local child to
// spawn a hop to a "linux/386" host (an ssh stand-in that runs the
// bootstrap here, with uname saying i686). The child has no such binary:
// it fetches it from the root with the spawn's grant, over a channel,
// uploads it, and the new node answers. The next spawn to that host finds
// the agent in its cache and fetches nothing.
func TestAgentBinaryForForeignHost(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, fake, home := t.TempDir(), t.TempDir(), t.TempDir()
	// The "linux/386" agent: a script that runs this test binary as the agent.
	if err := os.WriteFile(filepath.Join(dir, "arbor-linux-386"), fmt.Appendf(nil, "#!/bin/sh\nexec '%s' \"$@\"\n", exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fake, "uname"), []byte("#!/bin/sh\necho Linux i686\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ssh := filepath.Join(fake, "ssh")
	script := fmt.Sprintf("#!/bin/sh\n# ssh HOST COMMAND, run here\nfor a do c=$a; done\nPATH='%s':$PATH HOME='%s' XDG_CACHE_HOME='%s/cache' exec /bin/sh -c \"$c\"\n", fake, home, home)
	if err := os.WriteFile(ssh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	logs := newSyncBuf()
	root, err := agent.NewRoot(agent.Options{Exe: exe, AgentDir: dir, SSH: spawn.SSHOptions{Path: ssh},
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	chain, err := root.SpawnPath(ctx, []spawn.Hop{{Method: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	hop := spawn.Hop{Method: "ssh", Target: "old386"}
	for i, want := range []string{spawn.BootUpload, spawn.BootHit} {
		res, err := root.SpawnVia(ctx, chain[0], hop, fmt.Sprint("n", i))
		if err != nil {
			t.Fatalf("spawn %d: %v\nlog:\n%s", i, err, logs.String())
		}
		if res.Bootstrap != want {
			t.Fatalf("spawn %d: bootstrap %q, want %q", i, res.Bootstrap, want)
		}
		var info builtin.Info
		if err := root.Remote(res.ID, res.Name).Call(ctx, "agent.info", nil, &info); err != nil {
			t.Fatal(err)
		}
	}
	handedOut := regexp.MustCompile(`handing out agent binary: .*platform=linux/386 `)
	if n := len(handedOut.FindAllString(logs.String(), -1)); n != 1 {
		t.Fatalf("the root handed out the linux/386 binary %d times, want 1; log:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "agent binary refused") {
		t.Fatalf("the root refused the honest node:\n%s", logs.String())
	}
}
