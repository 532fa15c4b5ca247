package control_test

import (
	"context"
	"testing"

	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// TestStoppingReachesEveryWatch: serve.stop tells every watch it is
// stopping, two watches of one client as well (each on its own handle),
// also after a third watch of that client has ended, and a watch that
// starts while the server is stopping is told at once.
func TestStoppingReachesEveryWatch(t *testing.T) {
	path, _, _ := serve(t, control.Config{})
	client, rm, ctx := rootClient(t, path)

	// watch starts serve.watch on a handle of its own and returns its
	// events once it is subscribed.
	watch := func(ctx context.Context) <-chan control.WatchEvent {
		events := make(chan control.WatchEvent, 64)
		h := client.Router.AddHandler(func(m *router.Message) {
			var e control.WatchEvent
			if m.Src == wire.RootID && wire.Unmarshal(m.Payload, &e) == nil {
				events <- e
			}
		}, router.Anyone)
		if _, err := rm.Start(ctx, "serve.watch", control.WatchArgs{Handle: h}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-events:
			if e.Event != control.EventSubscribed {
				t.Fatalf("first event %q, want %q", e.Event, control.EventSubscribed)
			}
		case <-ctx.Done():
			t.Fatal("watch never subscribed")
		}
		return events
	}
	first := watch(ctx)
	second := watch(ctx)
	thirdCtx, endThird := context.WithCancel(ctx)
	watch(thirdCtx)
	endThird()

	if err := rm.Call(ctx, "serve.stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	late := watch(ctx)
	for i, events := range []<-chan control.WatchEvent{first, second, late} {
		for stopped := false; !stopped; {
			select {
			case e := <-events:
				stopped = e.Event == control.EventStopping
			case <-ctx.Done():
				t.Fatalf("watch %d was never told the server is stopping", i+1)
			}
		}
	}
}
