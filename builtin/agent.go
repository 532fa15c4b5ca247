package builtin

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"time"

	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/router"
)

// Version is the Arbor version reported by agent.info.
var Version = "0.1.0-dev"

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
	funcs.Register(reg, "agent.routes", func(_ context.Context, c *funcs.Call, _ Empty) (router.Table, error) {
		return c.Router.Table(), nil
	})
	funcs.Register(reg, "agent.sleep", sleep)
	registerExec(reg)
	registerFS(reg)
	registerStreams(reg)
}

// NodeInfo describes this process as node r.
func NodeInfo(r *router.Router) Info {
	host, _ := os.Hostname()
	in := Info{
		ID: r.ID(), Name: r.Name(), Hostname: host, OS: runtime.GOOS, Arch: runtime.GOARCH,
		PID: os.Getpid(), PPID: os.Getppid(), UID: os.Getuid(), Version: Version,
	}
	if u, err := user.LookupId(strconv.Itoa(in.UID)); err == nil {
		in.User = u.Username
	}
	return in
}

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
