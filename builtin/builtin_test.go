package builtin_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patience only stops a hang: nothing a test does is bounded by it.
const patience = 2 * time.Minute

// node serves the built-ins on a child of an in-process root.
func node(t *testing.T, maxMessage uint32) (*arborctx.Remote, context.Context) {
	t.Helper()
	o := testtree.Options{MaxMessage: maxMessage}
	root := testtree.Root(t, o)
	child := root.Spawn(t, o, "child")
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	d := funcs.Serve(child.R, reg, funcs.DefaultConfig(), nil)
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return arborctx.New(root.R, root.M, child.ID(), "child"), ctx
}

func TestFiles(t *testing.T) {
	rm, ctx := node(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "f.bin")
	data := []byte{0, 1, 2, 0xff, '\n', 'x'}

	if err := rm.Call(ctx, "fs.write", builtin.WriteArgs{Path: path, Data: data, Mode: 0o600}, nil); err != nil {
		t.Fatal(err)
	}
	var got builtin.FileData
	if err := rm.Call(ctx, "fs.read", builtin.PathArgs{Path: path}, &got); err != nil || !bytes.Equal(got.Data, data) {
		t.Fatalf("fs.read = %v, %v; want %v", got.Data, err, data)
	}
	var st builtin.FileInfo
	if err := rm.Call(ctx, "fs.stat", builtin.PathArgs{Path: path}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Name != "f.bin" || st.Size != int64(len(data)) || st.Mode != 0o600 || st.Octal != "0600" || st.Perms != "-rw-------" || st.Type != "file" || st.IsDir {
		t.Fatalf("fs.stat = %+v", st)
	}
	if err := os.Symlink("f.bin", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	var l builtin.Listing
	if err := rm.Call(ctx, "fs.list", builtin.PathArgs{Path: dir}, &l); err != nil {
		t.Fatal(err)
	}
	// Only the file and the link: the atomic write left no temporary behind.
	if len(l.Entries) != 2 || l.Entries[0].Name != "f.bin" || l.Entries[1].Name != "link" || l.Entries[1].Link != "f.bin" {
		t.Fatalf("fs.list = %+v", l.Entries)
	}

	// Errors name the file and come back typed.
	missing := filepath.Join(dir, "missing")
	err := rm.Call(ctx, "fs.read", builtin.PathArgs{Path: missing}, &got)
	if !errors.Is(err, funcs.ErrRemote) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("fs.read missing: %v", err)
	}
	err = rm.Call(ctx, "fs.write", builtin.WriteArgs{Path: filepath.Join(dir, "nodir", "x"), Data: data}, nil)
	if !errors.Is(err, funcs.ErrRemote) || !strings.Contains(err.Error(), "nodir") {
		t.Fatalf("fs.write into a missing directory: %v", err)
	}
}

func TestReadLargerThanLimit(t *testing.T) {
	rm, ctx := node(t, 8192)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	var got builtin.FileData
	err := rm.Call(ctx, "fs.read", builtin.PathArgs{Path: path}, &got)
	if err == nil || !strings.Contains(err.Error(), "is 10000 bytes, larger than the message limit (8192 bytes)") {
		t.Fatalf("fs.read of a file over the limit: %v", err)
	}
}

func TestExec(t *testing.T) {
	rm, ctx := node(t, 0)
	var res builtin.ExecResult
	args := builtin.ExecArgs{Argv: []string{"sh", "-c", `printf 'a\000b'; cat; echo err >&2; echo "$FOO" >&2; pwd >&2; exit 3`},
		Env: []string{"FOO=bar"}, Dir: "/", Stdin: []byte("in\x00put")}
	if err := rm.Call(ctx, "sys.exec", args, &res); err != nil {
		t.Fatal(err)
	}
	if res.ExitStatus != 3 || string(res.Stdout) != "a\x00bin\x00put" || string(res.Stderr) != "err\nbar\n/\n" {
		t.Fatalf("sys.exec = %+v", res)
	}
	err := rm.Call(ctx, "sys.exec", builtin.ExecArgs{Argv: []string{"no-such-command-xyz"}}, &res)
	if err == nil || !strings.Contains(err.Error(), "command not found: no-such-command-xyz") {
		t.Fatalf("missing command: %v", err)
	}
}
