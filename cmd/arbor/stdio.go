package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/transfer"
)

// stdioTransfer wraps push or pull for "-": pull SRC - writes the file to
// stdout, push - DST reads stdin. The bytes go through a private temporary
// file, so the transfer keeps its checksum and atomic rename, and stdout
// gets nothing from a transfer that failed.
func stdioTransfer(verb string, fn transferFunc) transferFunc {
	return func(ctx context.Context, rm *arborctx.Remote, src, dst string, o transfer.Options) (transfer.Summary, error) {
		tmp, err := os.MkdirTemp("", "arbor-"+verb+"-")
		if err != nil {
			return transfer.Summary{}, localErr(err)
		}
		defer os.RemoveAll(tmp)
		if verb == "pull" {
			local := filepath.Join(tmp, "data")
			sum, err := fn(ctx, rm, src, local, o)
			if err != nil {
				return sum, err
			}
			f, err := os.Open(local)
			if err != nil {
				return sum, localErr(err)
			}
			defer f.Close()
			if _, err := io.Copy(os.Stdout, f); err != nil {
				return sum, localErr(fmt.Errorf("writing to stdout: %w", err))
			}
			return sum, nil
		}
		// The temporary copy is named as DST's last element, so a DST that
		// is an existing directory on the node receives a file of that name.
		local := filepath.Join(tmp, path.Base(dst))
		f, err := os.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return transfer.Summary{}, localErr(err)
		}
		_, cerr := io.Copy(f, os.Stdin)
		if err := f.Close(); cerr == nil {
			cerr = err
		}
		if cerr != nil {
			return transfer.Summary{}, localErr(fmt.Errorf("reading stdin: %w", cerr))
		}
		return fn(ctx, rm, local, dst, o)
	}
}

// localErr marks a failure on this machine: exit status 1, not 255.
func localErr(err error) error { return &exitError{code: exitRemote, err: err} }
