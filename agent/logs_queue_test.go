package agent_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// stalledWriter is a stderr that takes nothing until released.
type stalledWriter struct {
	release chan struct{}
	once    sync.Once
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func (w *stalledWriter) unblock() { w.once.Do(func() { close(w.release) }) }

// TestRootPrintQueueHoldsClippedRecords: while the root's stderr is
// stalled, a child sends many huge log records (each far over what the
// root prints of one). The root's print queue keeps them, but clipped as
// they will be printed: its live heap grows by a few MiB, not by the sum of
// the records. Before, the queue held each raw line (up to the largest
// message) until it was printed.
func TestRootPrintQueueHoldsClippedRecords(t *testing.T) {
	const (
		records = 200
		size    = 512 << 10 // 100 MiB in all
		// What the queue may hold: about 10 KiB a clipped record, with
		// room for everything else the test allocates.
		bound = 64 << 20 // unclipped, the same flood held 120 MiB; clipped, 12-27 MiB
	)
	w := &stalledWriter{release: make(chan struct{})}
	root, err := agent.NewRoot(agent.Options{Logger: hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Info})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	t.Cleanup(w.unblock) // runs first: nothing waits on the stalled stderr at Close
	noisy := attachChild(t, root, "noisy", nil)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if size > int(root.Router.MaxMessage())-1024 {
		t.Fatalf("records of %d bytes exceed the largest message", size)
	}

	line := append([]byte(`{"@level":"info","@message":"`), bytes.Repeat([]byte("\x1b[2J"), size/4)...)
	line = append(line, "\"}\n"...)
	body, err := wire.Marshal(wire.LogRecord{NodeID: noisy.Router.ID(), Node: "noisy", Line: line})
	if err != nil {
		t.Fatal(err)
	}
	line = nil
	before := liveHeap()
	for range records {
		if err := noisy.Router.SendContext(ctx, wire.Header{Dst: wire.RootID, Handle: wire.HandleForwardLog}, body); err != nil {
			t.Fatal(err)
		}
	}
	// A round trip on the same link: every record was taken in before it.
	if _, err := noisy.Router.Request(ctx, wire.RootID, wire.HandlePing, nil); err != nil {
		t.Fatal(err)
	}
	body = nil
	if grew := int64(liveHeap()) - int64(before); grew > bound {
		t.Fatalf("the root's live heap grew by %d MiB holding %d records of %d KiB for a stalled stderr; want under %d MiB",
			grew>>20, records, size>>10, bound>>20)
	}
}
