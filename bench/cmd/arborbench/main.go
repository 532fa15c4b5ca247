// Command arborbench is Arbor's peer in the side-by-side benchmark
// (bench/run): each workload of docs/BENCHMARKS.md done with the Arbor
// library, printing one result line per figure. The binary is also its own
// child agent (started with spawn.AgentArg), so the tree runs exactly the
// code that was measured, and a profile of either side needs no other
// build.
//
// Profiling: -cpuprofile FILE profiles the root; ARBORBENCH_CHILD_CPUPROFILE
// set to a path prefix makes every child agent write PREFIX.PID.prof, and
// ARBORBENCH_CHILD_MEMPROFILE a heap profile when it exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/bench/internal/benchout"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/transfer"
	"github.com/hashicorp/go-hclog"
)

// childProfileEnv and childMemProfileEnv name path prefixes for child
// agents' CPU profiles and their heap profiles (written when they exit).
const (
	childProfileEnv    = "ARBORBENCH_CHILD_CPUPROFILE"
	childMemProfileEnv = "ARBORBENCH_CHILD_MEMPROFILE"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == spawn.AgentArg {
		os.Exit(runChild())
	}
	cpuprofile := ""
	for i, a := range os.Args {
		if (a == "-cpuprofile" || a == "--cpuprofile") && i+1 < len(os.Args) {
			cpuprofile = os.Args[i+1]
			os.Args = append(os.Args[:i:i], os.Args[i+2:]...)
			break
		}
	}
	f := benchout.Parse()
	if cpuprofile != "" {
		pf, err := os.Create(cpuprofile)
		if err != nil {
			benchout.Fatal(f.Workload, err)
		}
		pprof.StartCPUProfile(pf)
	}
	err := run(f, benchout.Out{Peer: "arbor"})
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		benchout.Fatal(f.Workload, err)
	}
}

func runChild() int {
	if prefix := os.Getenv(childProfileEnv); prefix != "" {
		pf, err := os.Create(fmt.Sprintf("%s.%d.prof", prefix, os.Getpid()))
		if err == nil {
			pprof.StartCPUProfile(pf)
			defer pprof.StopCPUProfile()
		}
	}
	err := agent.RunChildWith(registry())
	if prefix := os.Getenv(childMemProfileEnv); prefix != "" {
		if pf, err := os.Create(fmt.Sprintf("%s.%d.prof", prefix, os.Getpid())); err == nil {
			runtime.GC()
			pprof.WriteHeapProfile(pf)
			pf.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "arborbench agent:", err)
		return 1
	}
	return 0
}

func run(f benchout.Flags, o benchout.Out) error {
	switch f.Workload {
	case "W1":
		return w1(f, o)
	case "W2":
		return roundTrips(f, o, "W2", 1)
	case "W3":
		return roundTrips(f, o, "W3", 3)
	case "W4":
		return w4(f, o)
	case "W5":
		return w5(f, o)
	case "W6":
		return w6(o)
	case "W7":
		return w7(f, o)
	case "W8":
		return w8(f, o)
	}
	return fmt.Errorf("unknown workload %q", f.Workload)
}

// registry is what every node of the benchmark serves: the built-ins,
// file transfer, and bench.source.
func registry() *funcs.Registry {
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	transfer.Register(reg)
	registerSource(reg)
	funcs.Register(reg, "bench.heapprofile", func(_ context.Context, _ *funcs.Call, path string) (string, error) {
		path = fmt.Sprintf("%s.%d.live.prof", path, os.Getpid())
		pf, err := os.Create(path)
		if err != nil {
			return "", err
		}
		defer pf.Close()
		runtime.GC()
		return path, pprof.WriteHeapProfile(pf)
	})
	return reg
}

// withRoot runs fn with a fresh root serving registry(), which spawns over
// ssh with ssh, and a deadline that bounds every workload step (so a hang is
// an error, not a stall); then it closes the root and all it spawned.
func withRoot(ssh spawn.SSHOptions, fn func(ctx context.Context, root *agent.Node) error) error {
	root, err := agent.NewRoot(agent.Options{Logger: hclog.NewNullLogger(), Registry: registry(), SSH: ssh})
	if err != nil {
		return err
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return fn(ctx, root)
}

// withChain runs fn on a chain of hops local children of a fresh root (see
// withRoot).
func withChain(hops int, fn func(ctx context.Context, chain []*arborctx.Remote) error) error {
	return withRoot(spawn.SSHOptions{}, func(ctx context.Context, root *agent.Node) error {
		chain, err := root.SpawnPath(ctx, local(hops))
		if err != nil {
			return err
		}
		return fn(ctx, chain)
	})
}

func local(n int) []spawn.Hop {
	h := make([]spawn.Hop, n)
	for i := range h {
		h[i] = spawn.Hop{Method: "local"}
	}
	return h
}

func ms(d time.Duration) float64 { return benchout.Round(float64(d.Microseconds()) / 1000) }

// w1: spawn a fresh local child and complete one call, several times.
func w1(f benchout.Flags, o benchout.Out) error {
	return withRoot(spawn.SSHOptions{}, func(ctx context.Context, root *agent.Node) error {
		var lat []time.Duration
		for i := 0; i < f.Samples(20, 3); i++ {
			t := time.Now()
			res, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
			if err != nil {
				return err
			}
			rm := root.Remote(res.ID, res.Name)
			if err := rm.Call(ctx, "agent.ping", nil, nil); err != nil {
				return err
			}
			lat = append(lat, time.Since(t))
			if err := rm.Shutdown(ctx); err != nil {
				return fmt.Errorf("shutting down %s: %w", res.Name, err)
			}
		}
		o.Latency("W1", lat, "ms")
		return nil
	})
}

// roundTrips: sequential agent.ping calls to the last node of a chain of
// hops local children. W2 also reports MEM.
func roundTrips(f benchout.Flags, o benchout.Out, w string, hops int) error {
	return withChain(hops, func(ctx context.Context, chain []*arborctx.Remote) error {
		last := chain[len(chain)-1]
		lat := make([]time.Duration, 0, f.Calls)
		for i := 0; i < f.Calls+f.Calls/10; i++ { // the first tenth warms up
			t := time.Now()
			if err := last.Call(ctx, "agent.ping", nil, nil); err != nil {
				return err
			}
			if i >= f.Calls/10 {
				lat = append(lat, time.Since(t))
			}
		}
		o.Latency(w, lat, "us")
		if w != "W2" {
			return nil
		}
		var info builtin.Info
		if err := last.Call(ctx, "agent.info", nil, &info); err != nil {
			return err
		}
		if prefix := os.Getenv(childMemProfileEnv); prefix != "" {
			if err := last.Call(ctx, "bench.heapprofile", prefix, nil); err != nil {
				return err
			}
		}
		r, err := benchout.RSS(os.Getpid())
		if err != nil {
			return err
		}
		c, err := benchout.RSS(info.PID)
		if err != nil {
			return err
		}
		o.Emit("MEM", "root_rss", r, "MiB")
		o.Emit("MEM", "child_rss", c, "MiB")
		return nil
	})
}

// w4: keep 256 agent.ping calls in flight to one child for f.Seconds; one
// goroutine starts calls, one collects them in order.
func w4(f benchout.Flags, o benchout.Out) error {
	return withChain(1, func(ctx context.Context, chain []*arborctx.Remote) error {
		rm := chain[0]
		const window = 256
		pending := make(chan *arborctx.PendingCall, window)
		stop := make(chan struct{})
		serr := make(chan error, 1)
		go func() {
			defer close(pending)
			for {
				select {
				case <-stop:
					serr <- nil
					return
				default:
				}
				pc, err := rm.Start(ctx, "agent.ping", nil)
				if err != nil {
					serr <- err
					return
				}
				pending <- pc
			}
		}()
		var done, counted int
		var werr error
		start := time.Now()
		end := start.Add(time.Duration(f.Seconds * float64(time.Second)))
		var el time.Duration
		for pc := range pending {
			if err := pc.Wait(nil); err != nil && werr == nil {
				werr = err
			}
			done++
			if el == 0 && time.Now().After(end) {
				el, counted = time.Since(start), done
				close(stop)
			}
		}
		if err := errors.Join(<-serr, werr); err != nil {
			return err
		}
		o.Emit("W4", "rate", benchout.Round(float64(counted)/el.Seconds()), "calls/s")
		return nil
	})
}

// w6: spawn 32 local children in parallel and complete one call on each.
func w6(o benchout.Out) error {
	return withRoot(spawn.SSHOptions{}, func(ctx context.Context, root *agent.Node) error {
		t := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, 32)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "")
				if err == nil {
					err = root.Remote(res.ID, res.Name).Call(ctx, "agent.ping", nil, nil)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		el := time.Since(t)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		o.Emit("W6", "total", ms(el), "ms")
		return nil
	})
}

// w7: root → a → b; SIGKILL a; time until b's handle at the root reports
// the disconnect (DEL_ROUTE from the root's own link to a).
func w7(f benchout.Flags, o benchout.Out) error {
	return withRoot(spawn.SSHOptions{}, func(ctx context.Context, root *agent.Node) error {
		var lat []time.Duration
		for i := 0; i < f.Samples(10, 2); i++ {
			chain, err := root.SpawnPath(ctx, local(2))
			if err != nil {
				return err
			}
			a, b := chain[0], chain[1]
			var info builtin.Info
			if err := a.Call(ctx, "agent.info", nil, &info); err != nil {
				return err
			}
			if err := b.Call(ctx, "agent.ping", nil, nil); err != nil {
				return err
			}
			t := time.Now()
			if err := syscall.Kill(info.PID, syscall.SIGKILL); err != nil {
				return fmt.Errorf("killing %s (pid %d): %w", a.Name(), info.PID, err)
			}
			select {
			case <-b.Done():
				lat = append(lat, time.Since(t))
			case <-ctx.Done():
				return fmt.Errorf("W7: root never saw %s disconnect after SIGKILL of %s", b.Name(), a.Name())
			}
		}
		o.Latency("W7", lat, "ms")
		return nil
	})
}
