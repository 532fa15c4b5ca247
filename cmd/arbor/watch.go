package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/spf13/cobra"
)

func newWatchCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch [--json]",
		Short: "Stream route and heartbeat-state events of the running tree as they happen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDaemon(func(d *daemon) error {
				// Events arrive as messages from the root on a handle of our
				// own; the handler only queues them, a loop prints.
				events := make(chan control.WatchEvent, 4096)
				var lost atomic.Int64
				// After a stopping event the daemon's going is the end the
				// user asked for (arbor stop), not a failure. Set on the
				// read loop: a stopping event dropped from a full queue
				// counts too.
				var stopSeen atomic.Bool
				h := d.node.Router.AddHandler(func(m *router.Message) {
					var e control.WatchEvent
					if m.Src != wire.RootID || wire.Unmarshal(m.Payload, &e) != nil {
						return
					}
					if e.Event == control.EventStopping {
						stopSeen.Store(true)
					}
					select {
					case events <- e:
					default:
						lost.Add(1) // printing cannot keep up; counted, reported below
					}
				}, router.Anyone)
				call, err := d.root().Start(d.ctx, "serve.watch", control.WatchArgs{Handle: h})
				if err != nil {
					return callErr(err)
				}
				show := func(e control.WatchEvent) {
					if n := lost.Swap(0); n > 0 {
						d.log.Warn("events lost: this watch could not print them as fast as they came", "lost", n)
					}
					if e.Event == control.EventSubscribed {
						d.log.Info("watching the tree", "socket", d.socket)
						return
					}
					printWatchEvent(e, asJSON)
				}
				// drain shows what arrived before the end: the stopping
				// event comes just before the link closes.
				drain := func() {
					for {
						select {
						case e := <-events:
							show(e)
						default:
							return
						}
					}
				}
				done := make(chan error, 1)
				go func() { done <- call.Wait(nil) }()
				for {
					select {
					case e := <-events:
						show(e)
					case err := <-done:
						drain()
						if d.ctx.Err() != nil || stopSeen.Load() {
							return nil // interrupted, --timeout or arbor stop: the watch is over
						}
						if err != nil {
							return callErr(err)
						}
						return &exitError{code: exitUnreachable, err: fmt.Errorf("arbor serve at %s ended the watch", d.socket)}
					case <-d.node.ParentLost():
						drain()
						if stopSeen.Load() {
							return nil
						}
						return &exitError{code: exitUnreachable, err: fmt.Errorf("arbor serve at %s went away", d.socket)}
					}
				}
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, one object per line")
	return cmd
}

// printWatchEvent prints one event: a JSON line, or a line of text with
// everything that came from the tree escaped again, so what reaches a
// terminal is never a peer's raw text.
func printWatchEvent(e control.WatchEvent, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(e)
		os.Stdout.Write(append(b, '\n'))
		return
	}
	line := fmt.Sprintf("%s %-12s %d %s", logsafe.Escape(e.Time), logsafe.Escape(e.Event), e.ID, logsafe.Escape(e.Name))
	if e.Path != "" && e.Path != e.Name {
		line += " (" + logsafe.Escape(e.Path) + ")"
	}
	if e.Cause != "" {
		line += ": " + logsafe.Escape(e.Cause)
	}
	fmt.Println(line)
}
