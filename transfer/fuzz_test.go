package transfer

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/stream/wire"
)

// FuzzDecodeEntry: whatever an entry record holds, decodeEntry and
// checkEntry return an error or an entry whose path is the root or a
// local path that stays beneath any directory it is joined to.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range []entryRec{
		{Path: ".", Type: typeDir, Mode: 0o755},
		{Path: "a/b/c", Type: typeFile, Mode: 0o4755, Size: 10},
		{Path: "l", Type: typeSymlink, Target: "/etc"},
		{Path: "../x", Type: typeFile},
		{Path: "/abs", Type: typeFile},
		{Path: "a//b", Type: typeDir},
		{Path: "a/./b", Type: typeDir},
		{Path: "a\x00b", Type: typeFile},
		{Path: "x", Type: 9},
		{Path: "x", Type: typeFile, Size: -1},
	} {
		b, err := wire.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := decodeEntry(body)
		if err != nil {
			return
		}
		if e.Size < 0 {
			t.Fatalf("accepted a negative size: %+v", e)
		}
		for i := int64(0); i < 2; i++ {
			for _, dir := range []bool{false, true} {
				_ = checkEntry(e, i, dir)
			}
		}
		if e.Path == "." {
			return
		}
		if !filepath.IsLocal(e.Path) || strings.ContainsRune(e.Path, 0) {
			t.Fatalf("accepted path %q", e.Path)
		}
		const root = "/nonexistent/root"
		if j := filepath.Join(root, e.Path); !strings.HasPrefix(j, root+"/") {
			t.Fatalf("path %q joins to %q", e.Path, j)
		}
		for _, part := range strings.Split(e.Path, "/") {
			if part == "" || part == "." || part == ".." {
				t.Fatalf("accepted path %q", e.Path)
			}
		}
	})
}

// streamConn is a Conn that reads a fixed stream and discards what is
// written to it.
type streamConn struct{ r io.Reader }

func (c *streamConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *streamConn) CloseWrite() error           { return nil }
func (c *streamConn) Abort()                      {}

// fuzzSeeds are whole streams: an honest tree as Send writes it, and the
// hostile ones of hostile_test.go.
func fuzzSeeds(f *testing.F) [][]byte {
	src := f.TempDir()
	os.MkdirAll(filepath.Join(src, "t", "d"), 0o755)
	os.WriteFile(filepath.Join(src, "t", "d", "f"), []byte("data"), 0o4755)
	os.Symlink("d/f", filepath.Join(src, "t", "l"))
	p, err := NewPlan(filepath.Join(src, "t"), true)
	if err != nil {
		f.Fatal(err)
	}
	var honest bytes.Buffer
	if _, err := sendAll(context.Background(), &bufConn{&honest}, p, Options{}); err != nil {
		f.Fatal(err)
	}
	forged := func(send func(fg *forge)) []byte {
		var b bytes.Buffer
		fg := &forge{rw: newRecWriter(&b)}
		send(fg)
		fg.rw.flush()
		return b.Bytes()
	}
	return [][]byte{
		honest.Bytes(),
		forged(func(fg *forge) {
			fg.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
			fg.symlink(".", "../sibling")
			fg.file("pwned", 0o644, 5, []byte("pwned"))
			fg.end()
		}),
		forged(func(fg *forge) {
			fg.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
			fg.dirEntry(".", 0o1777)
			fg.symlink("l", "../../sibling")
			fg.file("l/pwned", 0o644, 5, []byte("pwned"))
			fg.end()
		}),
		forged(func(fg *forge) {
			fg.begin(beginRec{Base: ".bashrc", Files: 1, Bytes: 3})
			fg.file(".", 0o6755, 3, []byte("0123456789"))
			fg.end()
		}),
	}
}

// bufConn is a Conn whose writes go to a buffer.
type bufConn struct{ w io.Writer }

func (c *bufConn) Read(p []byte) (int, error)  { return 0, io.EOF }
func (c *bufConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *bufConn) CloseWrite() error           { return nil }
func (c *bufConn) Abort()                      {}

// FuzzReceive: whatever stream a sender writes, a pull writes nothing
// outside its destination, leaves no temporary file, and keeps no
// setuid, setgid or sticky bit.
func FuzzReceive(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, stream []byte, recursive bool) {
		s := newSandbox(t)
		_, _ = receive(context.Background(), &streamConn{bytes.NewReader(stream)}, s.dest,
			usersName("/srv/src"), Options{Recursive: recursive})
		s.untouched(t)
		filepath.WalkDir(s.dest, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Errorf("%s kept mode %v", p, fi.Mode())
			}
			return nil
		})
	})
}
