package builtin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// FnFunctions lists a node's functions with their argument and result
// shapes ([]funcs.Shape), read from its registry.
const FnFunctions = "agent.functions"

// Empty is the argument and result of functions that take or give nothing.
type Empty struct{}

// Info is the result of agent.info.
type Info struct {
	ID       uint32 `cbor:"id" json:"id"`
	Name     string `cbor:"name" json:"name"`
	Hostname string `cbor:"hostname" json:"hostname"`
	OS       string `cbor:"os" json:"os"`
	Arch     string `cbor:"arch" json:"arch"`
	PID      int    `cbor:"pid" json:"pid"`
	PPID     int    `cbor:"ppid" json:"ppid"`
	UID      int    `cbor:"uid" json:"uid"`
	User     string `cbor:"user" json:"user"`
	Version  string `cbor:"version" json:"version"`
	// Commit and GoVersion come from the build information (see Build).
	Commit    string `cbor:"commit,omitempty" json:"commit,omitempty"`
	GoVersion string `cbor:"go_version,omitempty" json:"go_version,omitempty"`
}

// SleepArgs are the arguments of agent.sleep.
type SleepArgs struct {
	Seconds float64 `cbor:"seconds" json:"seconds"`
}

// SleepResult says how long agent.sleep slept and whether it was cancelled.
type SleepResult struct {
	Slept float64 `cbor:"slept" json:"slept"`
}

// Register adds every built-in to reg.
func Register(reg *funcs.Registry) {
	funcs.Register(reg, "agent.ping", func(context.Context, *funcs.Call, Empty) (Empty, error) {
		return Empty{}, nil
	})
	funcs.Register(reg, "agent.info", func(_ context.Context, c *funcs.Call, _ Empty) (Info, error) {
		return NodeInfo(c.Router), nil
	})
	funcs.Register(reg, "agent.routes", func(_ context.Context, c *funcs.Call, a PageArgs) (router.Table, error) {
		return RoutesPage(c.Router, a, nil)
	})
	funcs.Register(reg, "agent.sleep", sleep)
	funcs.Register(reg, FnFunctions, func(context.Context, *funcs.Call, Empty) ([]funcs.Shape, error) {
		return reg.Shapes(), nil
	})
	registerExec(reg)
	registerFS(reg)
	registerStreams(reg)
}

// NodeInfo describes this process as node r.
func NodeInfo(r *router.Router) Info {
	host, _ := os.Hostname()
	in := Info{
		ID: r.ID(), Name: r.Name(), Hostname: host, OS: runtime.GOOS, Arch: runtime.GOARCH,
		PID: os.Getpid(), PPID: os.Getppid(), UID: os.Getuid(),
	}
	b := Build()
	in.Version, in.Commit, in.GoVersion = b.Version, b.Commit, b.GoVersion
	in.User = userName()
	return in
}

// userName is this process's user name, looked up once: the lookup may
// read a large passwd file or ask a directory service, and agent.info
// runs on the link's read loop (funcs.DefaultConfig's Inline).
var userName = sync.OnceValue(func() string {
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		return u.Username
	}
	return ""
})

// sleep is agent.sleep: it logs that it started (at info, so a caller can
// see the call is running), sleeps, and returns early with an error when
// the call is cancelled, logging that it saw the cancel.
func sleep(ctx context.Context, c *funcs.Call, a SleepArgs) (SleepResult, error) {
	if a.Seconds < 0 || a.Seconds > 24*3600 {
		return SleepResult{}, fmt.Errorf("seconds must be between 0 and 86400, got %v", a.Seconds)
	}
	start := time.Now()
	c.Router.Logger().Info("agent.sleep started", "seconds", a.Seconds)
	t := time.NewTimer(time.Duration(a.Seconds * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return SleepResult{Slept: time.Since(start).Seconds()}, nil
	case <-ctx.Done():
		c.Router.Logger().Info("agent.sleep cancelled", "after", time.Since(start).String(), "cause", ctx.Err())
		return SleepResult{}, fmt.Errorf("cancelled after %s: %w", time.Since(start).Round(time.Millisecond), ctx.Err())
	}
}

// Listings that can outgrow one message (agent.routes here; serve.routes
// and serve.tree at arbor serve's root) answer in pages. A page holds the
// entries whose IDs are PageArgs.From or above, in ID order: at most Limit
// of them (Count), and no more than fit in one message (FitPage). A page
// holds at least one entry whenever one is left, or the call fails, so a
// caller reads a whole listing by asking again from after the last ID it
// got until a page comes back empty (ReadPages). The cursor is an ID, not
// a position: a listing that changes between pages never shows an entry
// twice and never keeps a reader going round; an entry added below the
// cursor waits for the next reading.

// PageArgs name one page of a listing. The zero value, what a caller from
// before paging sends (no arguments), asks for the whole listing in one
// answer, and is refused when it does not fit one message.
type PageArgs struct {
	From  uint32 `cbor:"from,omitempty" json:"from,omitempty"`
	Limit int    `cbor:"limit,omitempty" json:"limit,omitempty"`
}

// Page sizes, in entries. A page is also cut where it would outgrow one
// message: with the longest names (wire.MaxNameLen) an entry takes under a
// kilobyte, so at the default message size (wire.DefaultMaxMessage) the
// count is what bounds a page.
const (
	// DefaultPageLimit is the Limit ReadPages asks for.
	DefaultPageLimit = 500
	// MaxPageLimit is the largest page a node answers; a larger Limit is
	// taken as this one.
	MaxPageLimit = 1000
)

// pageReserve is what a page leaves free of entries for what surrounds
// them in the message: the call reply around the result (two bytes) and
// the length of the entries' array (at most five). The rest of the result
// (a table's header) is measured, not reserved.
const pageReserve = 64

// Count is how many entries page a may hold: Limit, at most MaxPageLimit,
// or 0 (every entry) for a call without Limit. A negative Limit is bad
// arguments.
func (a PageArgs) Count() (int, error) {
	switch {
	case a.Limit < 0:
		return 0, funcs.BadArgs(fmt.Errorf("page limit %d is negative", a.Limit))
	case a.Limit > MaxPageLimit:
		return MaxPageLimit, nil
	}
	return a.Limit, nil
}

// FitPage cuts entries, the page a asks for already bounded by Count, where
// the answer would outgrow maxMessage bytes; rest is the answer without its
// entries (nil when the answer is the entries alone). The page keeps at
// least one entry: an entry too large to travel alone is an error, and so
// is a listing asked for whole (a without Limit) that does not fit.
func FitPage[T any](entries []T, a PageArgs, maxMessage uint32, rest any) ([]T, error) {
	room := int64(maxMessage) - pageReserve
	if rest != nil {
		b, err := wire.Marshal(rest)
		if err != nil {
			return nil, err
		}
		room -= int64(len(b))
	}
	for i, e := range entries {
		b, err := wire.Marshal(e)
		if err != nil {
			return nil, err
		}
		if room -= int64(len(b)); room >= 0 {
			continue
		}
		switch {
		case a.Limit == 0:
			return nil, fmt.Errorf("%d entries from ID %d do not fit in one message of %d bytes: ask for them in pages (limit 1 to %d)",
				len(entries), a.From, maxMessage, MaxPageLimit)
		case i == 0:
			return nil, fmt.Errorf("entry of %d bytes does not fit in one message of %d bytes", len(b), maxMessage)
		}
		return entries[:i], nil
	}
	return entries, nil
}

// RoutesPage is page a of r's route table, of the routes keep admits (nil:
// all; see router.TablePage): what agent.routes answers, and serve.routes
// at the root. Every page carries the table's header.
func RoutesPage(r *router.Router, a PageArgs, keep func(id uint32) bool) (router.Table, error) {
	n, err := a.Count()
	if err != nil {
		return router.Table{}, err
	}
	t := r.TablePage(a.From, n, keep)
	routes := t.Routes
	t.Routes = nil
	if t.Routes, err = FitPage(routes, a, r.MaxMessage(), t); err != nil {
		return router.Table{}, err
	}
	return t, nil
}

// MaxListing is the most entries ReadPages keeps: far more than an honest
// listing (a 100,000-node tree has 111,110 routes), and a bounded amount
// of memory whatever a node answers.
const MaxListing = 1 << 21

// ReadPages reads a whole listing that answers in pages: page fetches the
// page its argument names, and ReadPages asks from ID 0, then from after
// the last ID it got, until a page brings nothing new. It keeps each ID
// once, in ascending order, and drops what a page holds below its cursor
// (a node from before paging answers every page with its whole listing;
// see CallPage), so it ends however the listing changes between pages.
//
// A listing past MaxListing entries is refused: the pages come from a node
// that may be hostile and could otherwise answer new IDs until the reader's
// memory ran out.
func ReadPages[T any](id func(T) uint32, page func(PageArgs) ([]T, error)) ([]T, error) {
	var all []T
	a := PageArgs{Limit: DefaultPageLimit}
	for {
		es, err := page(a)
		if err != nil {
			return nil, err
		}
		if len(all)+len(es) > MaxListing {
			return nil, fmt.Errorf("arbor: the listing has more than %d entries (after ID %d): refused", MaxListing, a.From)
		}
		slices.SortStableFunc(es, func(x, y T) int { return cmp.Compare(id(x), id(y)) })
		got := false
		for _, e := range es {
			if id(e) < a.From {
				continue
			}
			all = append(all, e)
			got = true
			if id(e) == math.MaxUint32 {
				return all, nil
			}
			a.From = id(e) + 1
		}
		if !got {
			return all, nil
		}
	}
}

// CallPage calls fn on rm for page a and decodes the answer into out. A
// node from before paging refuses a page's arguments as unknown fields:
// it is asked again without them, for its whole listing.
func CallPage(ctx context.Context, rm *arborctx.Remote, fn string, a PageArgs, out any) error {
	err := rm.Call(ctx, fn, a, out)
	var re *funcs.RemoteError
	if errors.As(err, &re) && re.Kind == funcs.KindBadArgs {
		return rm.Call(ctx, fn, nil, out)
	}
	return err
}

// ReadRoutes reads the whole route table that fn answers on rm (agent.routes,
// or serve.routes on arbor serve's root), page by page.
func ReadRoutes(ctx context.Context, rm *arborctx.Remote, fn string) (router.Table, error) {
	var head router.Table
	first := true
	routes, err := ReadPages(func(e router.RouteEntry) uint32 { return e.ID }, func(a PageArgs) ([]router.RouteEntry, error) {
		var t router.Table
		if err := CallPage(ctx, rm, fn, a, &t); err != nil {
			return nil, err
		}
		if first {
			head, first = t, false
		}
		return t.Routes, nil
	})
	if err != nil {
		return router.Table{}, err
	}
	if routes == nil {
		routes = []router.RouteEntry{} // JSON: "routes": [], as for an empty table
	}
	head.Routes = routes
	return head, nil
}
