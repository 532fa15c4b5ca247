// Package transfer_test benchmarks file pushes and pulls through chains
// of real local agents (the built arbor binary) next to a raw pipe chain
// of `cat` relays moving the same file in the same run. Figures are
// reported, never asserted; see docs/BENCHMARKS.md.
//
//	go test ./bench/transfer -run XXX -bench . -benchtime 3x
//	ARBOR_BENCH_REPORT=1 go test ./bench/transfer -run Report -v   # medians and ratios
//
// "arbor" is transfer.Options{} (the caller's end also computes the
// summary's SHA-256), "arbor-nosha" Options{SkipSHA256: true} (only the
// CRC-32C and CRC-32 both ends check).
package transfer_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testbin"

	"github.com/arbor-project/arbor/agent"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/transfer"
	"github.com/hashicorp/go-hclog"
)

var exe, work string

// size is the file every round moves.
const size = 256 << 20

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-bench-")
	if err != nil {
		panic(err)
	}
	if exe, err = testbin.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// tmpfs when there is one, so the disk is not what is measured.
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	work, err = os.MkdirTemp(base, "arbor-bench-transfer-")
	if err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(work)
	os.RemoveAll(dir)
	os.Exit(code)
}

func source(tb testing.TB) string {
	src := filepath.Join(work, "src")
	if fi, err := os.Stat(src); err == nil && fi.Size() == size {
		return src
	}
	f, err := os.Create(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// ChaCha8: incompressible like /dev/urandom, and fast enough (0.1 s
	// against 0.85) to stay out of a -cpuprofile of the benchmarks.
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	if _, err := io.CopyN(f, rand.NewChaCha8(seed), size); err != nil {
		tb.Fatal(err)
	}
	return src
}

// rawChain copies src to dst through hops+1 cat processes joined by pipes,
// as arbor's data goes through the root and hops agents.
func rawChain(tb testing.TB, src, dst string, hops int) time.Duration {
	script := "cat " + src + strings.Repeat(" | cat", hops) + " > " + dst
	start := time.Now()
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v %s", script, err, out)
	}
	d := time.Since(start)
	os.Remove(dst)
	return d
}

type arborChain struct {
	root  *agent.Node
	chain []*arborctx.Remote
}

func newChain(tb testing.TB, hops int) *arborChain {
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := make([]spawn.Hop, hops)
	for i := range path {
		path[i] = spawn.Hop{Method: "local"}
	}
	c, err := root.SpawnPath(ctx, path)
	if err != nil {
		root.Close()
		tb.Fatal(err)
	}
	return &arborChain{root: root, chain: c}
}

// push copies src to dst on the chain's last node; pull copies src there
// back to dst here. Both return the time it took and remove dst.
func (c *arborChain) push(tb testing.TB, src, dst string, o transfer.Options) time.Duration {
	return c.run(tb, transfer.Push, src, dst, o)
}

func (c *arborChain) pull(tb testing.TB, src, dst string, o transfer.Options) time.Duration {
	return c.run(tb, transfer.Pull, src, dst, o)
}

func (c *arborChain) run(tb testing.TB, fn func(context.Context, *arborctx.Remote, string, string, transfer.Options) (transfer.Summary, error),
	src, dst string, o transfer.Options) time.Duration {
	// A guard against a hang only: a round takes seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := fn(ctx, c.chain[len(c.chain)-1], src, dst, o); err != nil {
		tb.Fatal(err)
	}
	d := time.Since(start)
	os.Remove(dst)
	return d
}

// variants are the transfer options measured: the default, and without
// the summary's SHA-256.
var variants = []struct {
	name string
	o    transfer.Options
}{
	{"arbor", transfer.Options{}},
	{"arbor-nosha", transfer.Options{SkipSHA256: true}},
}

func BenchmarkPush(b *testing.B) {
	src := source(b)
	dst := filepath.Join(work, "dst")
	for _, hops := range []int{1, 3} {
		b.Run(fmt.Sprintf("raw/%dhops", hops), func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				rawChain(b, src, dst, hops)
			}
		})
		for _, v := range variants {
			b.Run(fmt.Sprintf("%s/%dhops", v.name, hops), func(b *testing.B) {
				c := newChain(b, hops)
				defer c.root.Close()
				b.SetBytes(size)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c.push(b, src, dst, v.o)
				}
			})
		}
	}
}

// BenchmarkPull pulls the file from the last node of the chain (the same
// file: the nodes are local).
func BenchmarkPull(b *testing.B) {
	src := source(b)
	dst := filepath.Join(work, "dst")
	for _, hops := range []int{1, 3} {
		for _, v := range variants {
			b.Run(fmt.Sprintf("%s/%dhops", v.name, hops), func(b *testing.B) {
				c := newChain(b, hops)
				defer c.root.Close()
				b.SetBytes(size)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c.pull(b, src, dst, v.o)
				}
			})
		}
	}
}

// BenchmarkPushInProcess pushes through three hops of routers in this
// process (os.Pipe links), so -cpuprofile sees the splices and yamux of
// the intermediates as well as both ends.
func BenchmarkPushInProcess(b *testing.B) {
	src := source(b)
	dst := filepath.Join(work, "dst")
	o := testtree.Options{Logger: hclog.NewNullLogger()}
	root := testtree.Root(b, o)
	n := root
	for i := 0; i < 3; i++ {
		n = n.Spawn(b, o, "n")
	}
	root.WaitRoute(b, n.ID())
	reg := funcs.NewRegistry()
	transfer.Register(reg)
	d := funcs.Serve(n.R, reg, funcs.DefaultConfig(), nil)
	defer d.Close()
	rm := arborctx.New(root.R, root.M, n.ID(), n.R.Name())
	ctx := context.Background()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := transfer.Push(ctx, rm, src, dst, transfer.Options{SkipSHA256: os.Getenv("ARBOR_BENCH_NOSHA") != ""}); err != nil {
			b.Fatal(err)
		}
		os.Remove(dst)
	}
}

// TestReport runs rounds of every case interleaved and prints MB/s medians
// and the arbor/raw ratio per hop count, for push and pull, with and
// without the summary's SHA-256.
func TestReport(t *testing.T) {
	if os.Getenv("ARBOR_BENCH_REPORT") == "" {
		t.Skip("set ARBOR_BENCH_REPORT=1")
	}
	rounds := 7
	src := source(t)
	dst := filepath.Join(work, "dst")
	mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	for _, hops := range []int{1, 2, 3} { // 2: bench/run's W5
		c := newChain(t, hops)
		var raw []float64
		arb := map[string][]float64{}
		for i := 0; i < rounds; i++ {
			raw = append(raw, mbps(rawChain(t, src, dst, hops)))
			for _, v := range variants {
				arb[v.name+" push"] = append(arb[v.name+" push"], mbps(c.push(t, src, dst, v.o)))
				arb[v.name+" pull"] = append(arb[v.name+" pull"], mbps(c.pull(t, src, dst, v.o)))
			}
		}
		c.root.Close()
		mr := median(raw)
		t.Logf("%d hop(s), %d MiB, %d rounds: raw cat chain %.0f MB/s", hops, size>>20, rounds, mr)
		for _, v := range variants {
			for _, verb := range []string{"push", "pull"} {
				ma := median(arb[v.name+" "+verb])
				t.Logf("  %-16s %4.0f MB/s, %3.0f%% of raw", v.name+" "+verb, ma, 100*ma/mr)
			}
		}
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
