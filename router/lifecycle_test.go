package router_test

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"

	"github.com/arbor-project/arbor/internal/testtree"
)

// TestCloseRacesAttach: a child link attached while the router closes is
// either attached and then closed by Close, or refused with ErrClosed and
// closed; either way no link outlives the router and, under -race, Start
// and Close do not race. Before, a link attached after Close stayed open
// and Link.Start's WaitGroup.Add raced Close's Wait.
func TestCloseRacesAttach(t *testing.T) {
	for round := 0; round < 50; round++ {
		cfg := router.DefaultConfig()
		cfg.Logger = hclog.NewNullLogger()
		r, err := router.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		const children = 4
		links := make([]*stream.Link, children)
		peers := make([]*stream.Link, children)
		for i := range links {
			links[i], peers[i] = openPair(t, uint32(i+1))
		}
		var wg sync.WaitGroup
		errs := make([]error, children)
		for i := range links {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = r.AttachChild(links[i])
			}()
		}
		r.Close()
		wg.Wait()
		for i, l := range links {
			if errs[i] != nil && !errors.Is(errs[i], router.ErrClosed) {
				t.Fatalf("round %d: AttachChild: %v, want success or ErrClosed", round, errs[i])
			}
			select {
			case <-l.Done():
			default:
				t.Fatalf("round %d: child link %d still open after Close (attach: %v)", round, i+1, errs[i])
			}
			l.Close()
			peers[i].Close()
		}
	}
}

// openPair opens a link to a child id over a kernel pipe and returns both
// ends; the child end is not started.
func openPair(t *testing.T, id uint32) (parent, child *stream.Link) {
	t.Helper()
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	type accepted struct {
		l   *stream.Link
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		l, _, err := stream.Accept(cc, &stream.Config{MaxMessage: wire.DefaultMaxMessage, HelloTimeout: patience,
			WriteTimeout: patience, StreamWindow: 256 << 10, SendQueue: 16, Logger: hclog.NewNullLogger()}, os.Getpid())
		ch <- accepted{l, err}
	}()
	pcfg := stream.DefaultConfig()
	pcfg.Logger = hclog.NewNullLogger()
	hello := wire.Hello{ID: id, Name: "c", ParentID: wire.RootID, Ancestors: []uint32{wire.RootID}}
	pl, _, err := stream.Open(pc, hello, pcfg)
	a := <-ch
	if err != nil || a.err != nil {
		t.Fatalf("open: %v; accept: %v", err, a.err)
	}
	return pl, a.l
}
