package router_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
)

// chainOf builds root → n1 → ... → nk over tr.
func chainOf(t *testing.T, tr testtree.Transport, k int) []*testtree.Node {
	o := testtree.Options{Transport: tr}
	nodes := []*testtree.Node{testtree.Root(t, o)}
	for i := 0; i < k; i++ {
		nodes = append(nodes, nodes[i].Spawn(t, o, "n"))
	}
	for _, n := range nodes[1:] {
		nodes[0].WaitRoute(t, n.ID())
	}
	return nodes
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// waitSplices waits until n splices nothing, bounded by patience.
func waitSplices(t *testing.T, n *testtree.Node, want int64) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for n.R.Splices() != want {
		if time.Now().After(deadline) {
			t.Fatalf("node %d still splices %d channels, want %d", n.ID(), n.R.Splices(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestChannelThroughHops moves data both ways at once through three
// spliced hops, with half closes passing EOF end to end in each direction.
func TestChannelThroughHops(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			nodes := chainOf(t, tr, 3)
			root, dst := nodes[0], nodes[3]
			ch, err := root.R.OpenChannel(ctxPatience(t), dst.ID(), "test")
			if err != nil {
				t.Fatal(err)
			}
			far, err := dst.R.ClaimChannel(root.ID(), ch.ID)
			if err != nil {
				t.Fatal(err)
			}
			if far.Service != "test" || far.Src != root.ID() {
				t.Errorf("far end: service %q src %d", far.Service, far.Src)
			}
			down := randomBytes(t, 8<<20)
			up := randomBytes(t, 3<<20)
			type got struct {
				b   []byte
				err error
			}
			atFar, atRoot := make(chan got, 1), make(chan got, 1)
			go func() {
				b, err := io.ReadAll(far)
				atFar <- got{b, err}
			}()
			go func() {
				b, err := io.ReadAll(ch)
				atRoot <- got{b, err}
			}()
			go func() {
				far.Write(up)
				far.CloseWrite()
			}()
			if _, err := ch.Write(down); err != nil {
				t.Fatal(err)
			}
			ch.CloseWrite()
			for _, c := range []struct {
				name string
				ch   chan got
				want []byte
			}{{"far end", atFar, down}, {"opener", atRoot, up}} {
				select {
				case g := <-c.ch:
					if g.err != nil || !bytes.Equal(g.b, c.want) {
						t.Fatalf("%s read %d bytes (err %v), want the %d sent", c.name, len(g.b), g.err, len(c.want))
					}
				case <-time.After(patience):
					t.Fatalf("%s: no EOF", c.name)
				}
			}
			ch.Close()
			far.Close()
			for _, n := range nodes[1:3] {
				waitSplices(t, n, 0)
			}
		})
	}
}

// TestChannelCopy: io.Copy into and out of a channel goes through its
// ReadFrom and WriteTo (files on both ends, as bench.source and a pull
// into a file would), and moves every byte once, ending at EOF.
func TestChannelCopy(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			nodes := chainOf(t, tr, 2)
			root, dst := nodes[0], nodes[2]
			ch, err := root.R.OpenChannel(ctxPatience(t), dst.ID(), "test")
			if err != nil {
				t.Fatal(err)
			}
			far, err := dst.R.ClaimChannel(root.ID(), ch.ID)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			data := randomBytes(t, 5<<20+7)
			src := filepath.Join(dir, "src")
			if err := os.WriteFile(src, data, 0o644); err != nil {
				t.Fatal(err)
			}
			sent := make(chan error, 1)
			go func() {
				f, err := os.Open(src)
				if err != nil {
					sent <- err
					return
				}
				defer f.Close()
				n, err := io.Copy(far, f) // os.File.WriteTo, then far.ReadFrom
				if err == nil && n != int64(len(data)) {
					err = fmt.Errorf("sent %d bytes", n)
				}
				far.CloseWrite()
				sent <- err
			}()
			out, err := os.Create(filepath.Join(dir, "dst"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			n, err := io.Copy(out, ch) // os.File.ReadFrom, then ch.WriteTo
			if err != nil || n != int64(len(data)) {
				t.Fatalf("received %d bytes, err %v; want %d", n, err, len(data))
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "dst")); !bytes.Equal(got, data) {
				t.Fatal("the copy differs")
			}
			// The other way, into io.Discard (whose ReadFrom reads 8 KiB
			// at a time without WriteTo).
			go func() {
				_, err := ch.ReadFrom(bytes.NewReader(data))
				ch.CloseWrite()
				sent <- err
			}()
			if n, err := io.Copy(io.Discard, far); err != nil || n != int64(len(data)) {
				t.Fatalf("far end read %d bytes, err %v; want %d", n, err, len(data))
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			ch.Close()
			far.Close()
			waitSplices(t, nodes[1], 0)
		})
	}
}

// TestChannelRefusals: no route, policy, and sibling routing are refused
// with the reason, by the node that refused.
func TestChannelRefusals(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	a := root.Spawn(t, testtree.Options{}, "a")
	b := root.Spawn(t, testtree.Options{}, "b")
	root.WaitRoute(t, b.ID())
	cases := []struct {
		name     string
		from     *testtree.Node
		to       uint32
		node     uint32
		contains string
	}{
		{"no route", root, 999, root.ID(), "no route to 999"},
		{"child to ancestor", a, root.ID(), root.ID(), router.ReasonRefused},
		{"sibling", a, b.ID(), root.ID(), "routing mode prevents forwarding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.from.R.OpenChannel(ctxPatience(t), c.to, "x")
			var de *router.DeadError
			if !errors.Is(err, router.ErrChannelRefused) || !errors.As(err, &de) {
				t.Fatalf("got %v, want a channel refusal", err)
			}
			if de.Node != c.node || !strings.Contains(de.Reason, c.contains) {
				t.Fatalf("refused by node %d: %q; want node %d: %q", de.Node, de.Reason, c.node, c.contains)
			}
		})
	}
	if _, err := b.R.ClaimChannel(root.ID(), 12345); err == nil {
		t.Fatal("claiming a channel never opened succeeded")
	}
}

// TestChannelToSelf works without a link.
func TestChannelToSelf(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	ch, err := root.R.OpenChannel(ctxPatience(t), root.ID(), "self")
	if err != nil {
		t.Fatal(err)
	}
	far, err := root.R.ClaimChannel(root.ID(), ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		far.Write([]byte("hello"))
		far.Close()
	}()
	b, err := io.ReadAll(ch)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	ch.Close()
}

// TestChannelBackpressure: a receiver that does not read stops the sender
// after at most the windows and splice buffers of the path are full.
func TestChannelBackpressure(t *testing.T) {
	nodes := chainOf(t, testtree.Transports[1], 2)
	root, dst := nodes[0], nodes[2]
	ch, err := root.R.OpenChannel(ctxPatience(t), dst.ID(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	far, err := dst.R.ClaimChannel(root.ID(), ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	defer ch.Close()
	// The write deadline ends the test's writing; the bound is what it checks.
	_ = ch.SetWriteDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1<<20)
	var written int64
	for written < 1<<30 {
		n, err := ch.Write(buf)
		written += int64(n)
		if err != nil {
			break
		}
	}
	window := int64(stream.DefaultConfig().StreamWindow)
	// Two hops: the far end's receive buffer and the intermediate's, plus
	// one splice buffer in flight at the intermediate.
	bound := 2*window + router.SpliceBuffer + int64(len(buf))
	if written > bound {
		t.Fatalf("sender wrote %d bytes into a channel nobody reads; bound %d", written, bound)
	}
	t.Logf("a stalled receiver stopped the sender after %d bytes (bound %d)", written, bound)
}

// TestChannelHopLost: losing a link on the path ends the channel at both
// ends and tears the splice down.
func TestChannelHopLost(t *testing.T) {
	nodes := chainOf(t, testtree.Transports[1], 3)
	root, mid, dst := nodes[0], nodes[1], nodes[3]
	ch, err := root.R.OpenChannel(ctxPatience(t), dst.ID(), "lost")
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	far, err := dst.R.ClaimChannel(root.ID(), ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	if _, err := ch.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	// The link between nodes 2 and 3 of the path goes away.
	nodes[2].R.Close()
	for _, end := range []*router.Channel{ch, far} {
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, end)
			done <- err
		}()
		select {
		case <-done:
		case <-time.After(patience):
			t.Fatalf("channel end on node %d still open after a hop was lost", end.Dst)
		}
	}
	waitSplices(t, mid, 0)
}
