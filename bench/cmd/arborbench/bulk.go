package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/arbor-project/arbor/bench/internal/benchout"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/transfer"
)

// fnSource is the benchmark's own node function for W5: it writes a file
// to a channel its caller opened, raw, with nothing on top. It is Arbor's
// fastest path from a node to the root; transfer.Pull (checksums, a file
// written under a temporary name) is measured beside it.
const fnSource = "bench.source"

// SourceArgs name the channel and the file for bench.source.
type SourceArgs struct {
	Channel uint32 `cbor:"channel"`
	Path    string `cbor:"path"`
}

// registerSource adds bench.source to reg.
func registerSource(reg *funcs.Registry) {
	funcs.Register(reg, fnSource, func(ctx context.Context, c *funcs.Call, a SourceArgs) (int64, error) {
		ch, err := c.Router.ClaimChannel(c.Src, a.Channel)
		if err != nil {
			return 0, err
		}
		defer ch.Close()
		stop := context.AfterFunc(ctx, ch.Abort)
		defer stop()
		f, err := os.Open(a.Path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		n, err := io.CopyBuffer(ch, f, make([]byte, 1<<20))
		if err != nil {
			return n, fmt.Errorf("writing %s to channel %d: %w", a.Path, a.Channel, err)
		}
		return n, ch.CloseWrite()
	})
}

// w5: the data file from the node 2 hops down to the root, over a raw
// channel (stat rate) and with transfer.Pull into a file (stat pull_rate).
func w5(f benchout.Flags, o benchout.Out) error {
	if f.Data == "" {
		return fmt.Errorf("W5 needs -data")
	}
	st, err := os.Stat(f.Data)
	if err != nil {
		return err
	}
	return withChain(2, func(ctx context.Context, chain []*arborctx.Remote) error {
		b := chain[1]

		t := time.Now()
		cc, err := b.StartChannel(ctx, fnSource, func(id uint32) any { return SourceArgs{Channel: id, Path: f.Data} })
		if err != nil {
			return err
		}
		got, err := io.CopyBuffer(io.Discard, cc.Channel, make([]byte, 1<<20))
		if err != nil {
			cc.Abort()
		}
		var sent int64
		if werr := cc.Wait(&sent); werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
		el := time.Since(t)
		if got != st.Size() || sent != st.Size() {
			return fmt.Errorf("W5: %s sent %d bytes, the root got %d, the file has %d", b.Name(), sent, got, st.Size())
		}
		o.Emit("W5", "rate", benchout.Round(float64(got)/1e6/el.Seconds()), "MB/s")

		dir, err := os.MkdirTemp(filepath.Dir(f.Data), "arborbench-pull-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dst := filepath.Join(dir, "data")
		t = time.Now()
		// As `arbor pull` does: the transfer's check, no summary SHA-256.
		if _, err := transfer.Pull(ctx, b, f.Data, dst, transfer.Options{SkipSHA256: true}); err != nil {
			return err
		}
		el = time.Since(t)
		if fi, err := os.Stat(dst); err != nil || fi.Size() != st.Size() {
			return fmt.Errorf("W5: pulled file %s is wrong: %v", dst, err)
		}
		o.Emit("W5", "pull_rate", benchout.Round(float64(st.Size())/1e6/el.Seconds()), "MB/s")
		return nil
	})
}
