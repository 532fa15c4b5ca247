package routemonitor_test

import (
	"context"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

func TestSmokeChain(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			o := testtree.Options{Transport: tr}
			root := testtree.Root(t, o)
			a := root.Spawn(t, o, "a")
			b := a.Spawn(t, o, "b")
			c := b.Spawn(t, o, "c")
			d := c.Spawn(t, o, "d")
			root.WaitRoute(t, d.ID())
			d.R.Handle(wire.HandlePing, func(m *router.Message) { d.R.Reply(m, m.Payload) }, nil)
			// A hang guard only: four spawns and a request through four
			// hops take what they take on a loaded machine.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rep, err := root.R.Request(ctx, d.ID(), wire.HandlePing, []byte{0x61, 'x'})
			if err != nil {
				t.Fatal(err)
			}
			if string(rep.Payload) != "\x61x" {
				t.Fatalf("payload %q", rep.Payload)
			}
			tb := root.R.Table()
			t.Logf("%+v", tb)
			_, err = root.R.Request(ctx, d.ID(), 555, nil)
			t.Log(err)
		})
	}
}
