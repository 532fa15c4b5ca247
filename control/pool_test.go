package control_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/spawn"
)

// waitFor polls cond until it holds (patience only stops a hang).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPoolBurstOneBuild: concurrent acquires of one cold path start one
// build and are all served by its node; a later acquire is served by the
// same node at once, and releases make it idle.
func TestPoolBurstOneBuild(t *testing.T) {
	path, _, srv := serve(t, control.Config{})
	var builds atomic.Int32
	unsub := srv.Pool().Subscribe(func(e control.PoolEvent) {
		if e.Kind == control.PoolBuild || e.Kind == control.PoolReplenish {
			builds.Add(1)
		}
	})
	defer unsub()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := dial(t, ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	root := c.Remote(0, "root")
	const n = 20
	res := make([]control.AcquireResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = root.Call(ctx, "serve.acquire", control.AcquireArgs{Path: "local"}, &res[i])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || res[i].ID != res[0].ID {
			t.Fatalf("acquire %d: %+v %v (first: %+v)", i, res[i], errs[i], res[0])
		}
	}
	if b := builds.Load(); b != 1 {
		t.Fatalf("%d builds for a burst of %d, want 1", b, n)
	}
	ps := srv.Pool().List()
	if len(ps) != 1 || len(ps[0].Nodes) != 1 || ps[0].Nodes[0].Users != n {
		t.Fatalf("pool: %+v", ps)
	}
	for i := range n {
		if err := root.Call(ctx, "serve.release", control.ReleaseArgs{Lease: res[i].Lease}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if ps := srv.Pool().List(); ps[0].Nodes[0].Users != 0 {
		t.Fatalf("after every release: %+v", ps)
	}
}

// TestPoolQueueUnblock: a request queued on a build that never ends fails
// at its deadline with the pool's message and leaves the queue; one whose
// client goes away leaves it at once.
func TestPoolQueueUnblock(t *testing.T) {
	hang := filepath.Join(t.TempDir(), "ssh")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path, _, srv := serveWith(t, control.Config{}, agent.Options{SSH: spawn.SSHOptions{Path: hang}, ConnectTimeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := dial(t, ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	dl := time.Now().Add(300 * time.Millisecond)
	err = c.Remote(0, "root").Call(ctx, "serve.acquire", control.AcquireArgs{Path: "ssh:slow", DeadlineUnixNano: dl.UnixNano()}, nil)
	if err == nil || !strings.Contains(err.Error(), "timed out waiting for a connection to ssh:slow (build in progress for") {
		t.Fatalf("want the pool's timeout, got %v", err)
	}
	if ps := srv.Pool().List(); len(ps) != 1 || len(ps[0].Queue) != 0 || ps[0].Building != 1 {
		t.Fatalf("after the deadline: %+v", ps)
	}

	gone, err := control.Dial(ctx, path, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- gone.Remote(0, "root").Call(ctx, "serve.acquire", control.AcquireArgs{Path: "ssh:slow"}, nil)
	}()
	waitFor(t, "queued", func() bool { ps := srv.Pool().List(); return len(ps) == 1 && len(ps[0].Queue) == 1 })
	gone.Close()
	<-done
	waitFor(t, "the queue empty after the client left", func() bool { return len(srv.Pool().List()[0].Queue) == 0 })
}

// TestPoolSkipsLeavingNode: a pool node that said it is shutting down
// (arbor kill, slowed by a stopped child below it) is not lent again; an
// acquire of its path gets another node.
func TestPoolSkipsLeavingNode(t *testing.T) {
	path, root, _ := serve(t, control.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := dial(t, ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	rm := c.Remote(0, "root")
	var first control.AcquireResult
	if err := rm.Call(ctx, "serve.acquire", control.AcquireArgs{Path: "local"}, &first); err != nil {
		t.Fatal(err)
	}
	if err := rm.Call(ctx, "serve.release", control.ReleaseArgs{Lease: first.Lease}, nil); err != nil {
		t.Fatal(err)
	}
	// A child below the pool node (the first hop is reused), stopped, so
	// that the pool node's shutdown waits for it.
	var below control.SpawnResult
	if err := rm.Call(ctx, "serve.spawn", control.SpawnArgs{Path: "local/local"}, &below); err != nil {
		t.Fatal(err)
	}
	if m, _ := root.Tree.Node(below.ID); m.Parent != first.ID || m.PID == 0 {
		t.Fatalf("the second hop %+v is not below the pool node %d", m, first.ID)
	} else {
		if err := syscall.Kill(m.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(m.PID, syscall.SIGCONT)
	}
	kill := root.Remote(first.ID, first.Name)
	defer kill.Release()
	killed := make(chan error, 1)
	go func() { killed <- kill.Shutdown(ctx) }()
	waitFor(t, "saw the pool node leaving", func() bool {
		m, _ := root.Tree.Node(first.ID)
		return m.State == agent.StateLeaving
	})
	var again control.AcquireResult
	if err := rm.Call(ctx, "serve.acquire", control.AcquireArgs{Path: "local"}, &again); err != nil {
		t.Fatal(err)
	}
	if again.ID == first.ID {
		t.Errorf("the pool lent node %d, which is shutting down", first.ID)
	}
	if m, _ := root.Tree.Node(below.ID); m.PID != 0 {
		syscall.Kill(m.PID, syscall.SIGCONT)
	}
	if err := <-killed; err != nil {
		t.Errorf("shutdown of the pool node: %v", err)
	}
}
