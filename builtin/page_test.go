package builtin_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// longName is a route name of the longest length a route may carry.
func longName(id uint32) string {
	s := fmt.Sprintf("hub/leaf/r%d-", id)
	return s + strings.Repeat("x", wire.MaxHopNameLen-len(s))
}

// answerSize is the size of the CALL reply that carries v: what has to fit
// in one message.
func answerSize(t *testing.T, v any) int {
	t.Helper()
	res, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	body, err := wire.Marshal(wire.CallReply{Result: res})
	if err != nil {
		t.Fatal(err)
	}
	return len(body)
}

func TestPageArgsCount(t *testing.T) {
	for _, c := range []struct {
		limit, want int
		bad         bool
	}{
		{0, 0, false},
		{1, 1, false},
		{builtin.DefaultPageLimit, builtin.DefaultPageLimit, false},
		{builtin.MaxPageLimit, builtin.MaxPageLimit, false},
		{builtin.MaxPageLimit + 1, builtin.MaxPageLimit, false},
		{1 << 40, builtin.MaxPageLimit, false},
		{-1, 0, true},
	} {
		got, err := builtin.PageArgs{Limit: c.limit}.Count()
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("Count of limit %d = %d, %v; want %d, error %v", c.limit, got, err, c.want, c.bad)
		}
	}
}

// TestFitPage cuts a synthetic listing of longest-name routes into pages
// for a 16 KiB message: every answer fits, every page holds at least one
// entry and as many as fit, and the pages join up to the listing. A whole
// listing asked for without a limit, and an entry larger than a message,
// are errors, not answers too large to send.
func TestFitPage(t *testing.T) {
	const maxMessage = 16 << 10
	var all []router.RouteEntry
	for id := uint32(1); id <= 300; id++ {
		all = append(all, router.RouteEntry{ID: id, Name: longName(id), Via: 1})
	}
	head := router.Table{ID: 7, Name: longName(7)}
	var got []router.RouteEntry
	for rest := all; len(rest) > 0; {
		a := builtin.PageArgs{From: rest[0].ID, Limit: builtin.MaxPageLimit}
		page, err := builtin.FitPage(rest, a, maxMessage, head)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			t.Fatalf("empty page from ID %d with %d entries left", a.From, len(rest))
		}
		tb := head
		tb.Routes = page
		if n := answerSize(t, tb); n > maxMessage {
			t.Fatalf("page from ID %d: answer of %d bytes, max %d", a.From, n, maxMessage)
		} else if len(page) < len(rest) && n+answerSize(t, rest[len(page)]) < maxMessage-100 {
			t.Fatalf("page from ID %d cut at %d bytes with room for the next entry", a.From, n)
		}
		got = append(got, page...)
		rest = rest[len(page):]
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatalf("pages hold %d entries, want the %d of the listing in order", len(got), len(all))
	}

	if _, err := builtin.FitPage(all, builtin.PageArgs{}, maxMessage, head); err == nil || !strings.Contains(err.Error(), "in pages") {
		t.Errorf("whole listing without a limit: %v, want an error saying to ask in pages", err)
	}
	if page, err := builtin.FitPage(all[:3], builtin.PageArgs{}, maxMessage, head); err != nil || len(page) != 3 {
		t.Errorf("small listing without a limit: %d entries, %v; want all 3", len(page), err)
	}
	if _, err := builtin.FitPage(all, builtin.PageArgs{Limit: 10}, 256, head); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("entry larger than a message: %v, want an error", err)
	}
}

// listing is a synthetic paged listing of IDs that a test changes between
// pages.
type listing struct {
	ids   map[uint32]bool
	calls int
}

func (l *listing) page(a builtin.PageArgs) ([]uint32, error) {
	l.calls++
	var out []uint32
	for id := range l.ids {
		if id >= a.From {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	n, err := a.Count()
	if err != nil {
		return nil, err
	}
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}

func self(id uint32) uint32 { return id }

// TestReadPagesChanging: a listing that changes between pages (entries
// added below the cursor and above it, entries removed ahead of it) is
// read to the end, each ID once and in order: every ID present throughout
// and every one added ahead of the cursor, none removed before the cursor
// reached it.
func TestReadPagesChanging(t *testing.T) {
	l := &listing{ids: map[uint32]bool{}}
	for id := uint32(10); id < 10+3*builtin.DefaultPageLimit; id++ {
		l.ids[id] = true
	}
	changed := false
	got, err := builtin.ReadPages(self, func(a builtin.PageArgs) ([]uint32, error) {
		if a.From > 10 && !changed {
			changed = true
			l.ids[1] = true                              // below the cursor: next reading
			l.ids[5000] = true                           // ahead: this reading
			delete(l.ids, a.From+100)                    // ahead: gone
			l.ids[a.From-1] = true                       // already there: no repeat
			l.ids[^uint32(0)] = true                     // the last ID there is: the loop ends on it
			delete(l.ids, 10+builtin.DefaultPageLimit/2) // already read: stays read
		}
		return l.page(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !changed {
		t.Fatal("the listing came in one page")
	}
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("IDs not ascending and unique: %v", got)
	}
	want := map[uint32]bool{5000: true, ^uint32(0): true, 10 + builtin.DefaultPageLimit/2: true}
	for id := range l.ids {
		if id >= 10 {
			want[id] = true
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read %d IDs, want %d", len(got), len(want))
	}
	for _, id := range got {
		if !want[id] {
			t.Fatalf("read %d, which it should not have", id)
		}
	}
	if l.calls != 4 {
		t.Errorf("%d calls for 3 full pages and the last ID, want 4", l.calls)
	}
}

// TestReadPagesIgnoringCursor: a node that answers every page with its
// whole listing, out of order and with repeats (one from before paging, or
// a hostile one), is read once: each ID once, in order, in two calls.
func TestReadPagesIgnoringCursor(t *testing.T) {
	whole := []uint32{7, 3, 3, 9, 1, 7}
	calls := 0
	got, err := builtin.ReadPages(self, func(builtin.PageArgs) ([]uint32, error) {
		calls++
		if calls > 10 {
			t.Fatal("ReadPages keeps asking")
		}
		return slices.Clone(whole), nil
	})
	if err != nil || !reflect.DeepEqual(got, []uint32{1, 3, 7, 9}) || calls != 2 {
		t.Fatalf("ReadPages = %v, %v in %d calls; want [1 3 7 9] in 2", got, err, calls)
	}
	boom := errors.New("boom")
	if _, err := builtin.ReadPages(self, func(builtin.PageArgs) ([]uint32, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("ReadPages with a failing page: %v", err)
	}
}

// manyRoutes gives hub (a child of an in-process root, serving the
// built-ins) a table of n+1 routes: its child leaf, and n IDs that leaf
// takes from its own blocks (the real path: leaf asks hub, hub asks the
// root) and announces with ADD_ROUTE frames of its own making, each with
// a name of the longest length allowed. It returns hub's handle on the
// root.
func manyRoutes(t *testing.T, maxMessage uint32, n int) (*testtree.Node, *arborctx.Remote, context.Context) {
	t.Helper()
	o := testtree.Options{MaxMessage: maxMessage}
	root := testtree.Root(t, o)
	hub := root.Spawn(t, o, "hub")
	leaf := hub.Spawn(t, o, "leaf")
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	d := funcs.Serve(hub.R, reg, funcs.DefaultConfig(), nil)
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	var last uint32
	for i := 0; i < n; i++ {
		id, err := leaf.R.AllocateID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body, err := wire.Marshal(wire.AddRoute{ID: id, Name: longName(id), Parent: leaf.ID()})
		if err != nil {
			t.Fatal(err)
		}
		h := wire.Header{Dst: hub.ID(), Src: leaf.ID(), Auth: leaf.ID(), Handle: wire.HandleAddRoute}
		if err := leaf.Down.Link.Send(h, body); err != nil {
			t.Fatal(err)
		}
		last = id
	}
	hub.WaitRoute(t, last) // routes are handled in order: the last one is the last
	if got := len(hub.R.Table().Routes); got != n+1 {
		t.Fatalf("hub routes %d, want %d", got, n+1)
	}
	rm := arborctx.New(root.R, root.M, hub.ID(), hub.R.Name())
	t.Cleanup(rm.Release)
	return hub, rm, ctx
}

// TestRoutesPages: a table of 1,201 routes with the longest names is four
// times a 64 KiB message. agent.routes answers it in pages that each fit
// (the page is cut by size, well below its count), ReadRoutes gets every
// route once, as the node's own table has them, and asking for the whole
// table at once is refused with a reason instead of failing to send.
func TestRoutesPages(t *testing.T) {
	const maxMessage = 64 << 10
	hub, rm, ctx := manyRoutes(t, maxMessage, 1200)
	want := hub.R.Table()
	if n := answerSize(t, want); n < 4*maxMessage {
		t.Fatalf("the whole table is %d bytes: not larger than a few messages of %d", n, maxMessage)
	}

	got, err := builtin.ReadRoutes(ctx, rm, "agent.routes")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadRoutes: %d routes, header %d %q; want the node's %d", len(got.Routes), got.ID, got.Name, len(want.Routes))
	}

	pages := 0
	for a := (builtin.PageArgs{Limit: builtin.MaxPageLimit}); ; pages++ {
		var tb router.Table
		if err := rm.Call(ctx, "agent.routes", a, &tb); err != nil {
			t.Fatal(err)
		}
		if len(tb.Routes) == 0 {
			break
		}
		if n := answerSize(t, tb); n > maxMessage {
			t.Fatalf("page from %d: %d bytes, max %d", a.From, n, maxMessage)
		}
		if len(tb.Routes) >= builtin.MaxPageLimit {
			t.Fatalf("page from %d: %d routes, not cut by size", a.From, len(tb.Routes))
		}
		a.From = tb.Routes[len(tb.Routes)-1].ID + 1
	}
	if pages < 4 {
		t.Fatalf("%d pages for a table of four messages", pages)
	}

	var tb router.Table
	if err := rm.Call(ctx, "agent.routes", builtin.PageArgs{Limit: 7}, &tb); err != nil || !reflect.DeepEqual(tb.Routes, want.Routes[:7]) {
		t.Fatalf("page of 7: %d routes, %v; want the table's first 7", len(tb.Routes), err)
	}
	err = rm.Call(ctx, "agent.routes", nil, &tb)
	var re *funcs.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "in pages") {
		t.Fatalf("whole table in one answer: %v, want a refusal saying to ask in pages", err)
	}
	if err := rm.Call(ctx, "agent.routes", builtin.PageArgs{Limit: -1}, &tb); !errors.As(err, &re) || re.Kind != funcs.KindBadArgs {
		t.Fatalf("negative limit: %v, want bad arguments", err)
	}
}

// TestRoutesPageCount: at the default message size the count bounds a
// page: MaxPageLimit for a larger Limit, DefaultPageLimit for ReadRoutes.
// A small table still comes whole to a call without arguments, as before
// paging.
func TestRoutesPageCount(t *testing.T) {
	hub, rm, ctx := manyRoutes(t, 0, 1100)
	var tb router.Table
	if err := rm.Call(ctx, "agent.routes", builtin.PageArgs{From: 1, Limit: 5000}, &tb); err != nil || len(tb.Routes) != builtin.MaxPageLimit {
		t.Fatalf("page with limit 5000: %d routes, %v; want %d", len(tb.Routes), err, builtin.MaxPageLimit)
	}
	if err := rm.Call(ctx, "agent.routes", nil, &tb); err != nil || !reflect.DeepEqual(tb, hub.R.Table()) {
		t.Fatalf("call without arguments: %d routes, %v; want the whole table", len(tb.Routes), err)
	}
	got, err := builtin.ReadRoutes(ctx, rm, "agent.routes")
	if err != nil || !reflect.DeepEqual(got, hub.R.Table()) {
		t.Fatalf("ReadRoutes: %d routes, %v; want the whole table", len(got.Routes), err)
	}
}

// TestReadPagesEndless: a node that answers every page with new, higher
// IDs (as many as a page holds) is cut off at MaxListing entries with an
// error, not read until memory runs out.
func TestReadPagesEndless(t *testing.T) {
	calls := 0
	got, err := builtin.ReadPages(self, func(a builtin.PageArgs) ([]uint32, error) {
		calls++
		if calls > builtin.MaxListing/1000+2 {
			t.Fatal("ReadPages keeps asking past MaxListing")
		}
		page := make([]uint32, 1000)
		for i := range page {
			page[i] = a.From + uint32(i)
		}
		return page, nil
	})
	if err == nil || got != nil || !strings.Contains(err.Error(), "more than 2097152 entries") {
		t.Fatalf("ReadPages of an endless listing = %d entries, %v; want an error", len(got), err)
	}
}
