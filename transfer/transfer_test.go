package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const patience = 2 * time.Minute

func ctxPatience(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// tree builds root → a → b in process, b serving fs.recv and fs.send, and
// returns the root's handle for b.
func tree(t *testing.T) *arborctx.Remote {
	root := testtree.Root(t, testtree.Options{})
	a := root.Spawn(t, testtree.Options{}, "a")
	b := a.Spawn(t, testtree.Options{}, "b")
	root.WaitRoute(t, b.ID())
	reg := funcs.NewRegistry()
	Register(reg)
	d := funcs.Serve(b.R, reg, funcs.DefaultConfig(), nil)
	t.Cleanup(d.Close)
	return arborctx.New(root.R, root.M, b.ID(), b.R.Name())
}

func writeRandom(t *testing.T, path string, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return b
}

// noTemps fails if dir holds a leftover temporary file.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".arbor-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestPushPullFile(t *testing.T) {
	rm := tree(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := writeRandom(t, src, 5<<20+123)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	os.Chtimes(src, mtime, mtime)
	var last Progress
	sum, err := Push(ctxPatience(t), rm, src, filepath.Join(dir, "pushed"), Options{Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if sum.SHA256 != hexOf(want[:]) || sum.Bytes != int64(len(data)) || sum.Files != 1 {
		t.Fatalf("summary %+v", sum)
	}
	if last.Bytes != last.TotalBytes || last.TotalBytes != int64(len(data)) {
		t.Errorf("last progress %+v", last)
	}
	sum, err = Pull(ctxPatience(t), rm, filepath.Join(dir, "pushed"), filepath.Join(dir, "pulled"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.SHA256 != hexOf(want[:]) || sum.Bytes != int64(len(data)) {
		t.Fatalf("pull: summary %+v", sum)
	}
	// Without the summary's SHA-256, the same copy, checked the same way.
	for _, run := range []func(string, string, Options) (Summary, error){
		func(src, dst string, o Options) (Summary, error) { return Push(ctxPatience(t), rm, src, dst, o) },
		func(src, dst string, o Options) (Summary, error) { return Pull(ctxPatience(t), rm, src, dst, o) },
	} {
		dst := filepath.Join(dir, "skipped")
		sum, err := run(src, dst, Options{SkipSHA256: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst); sum.SHA256 != "" || !bytes.Equal(got, data) {
			t.Errorf("SkipSHA256: summary %+v, %d bytes copied", sum, len(got))
		}
		os.Remove(dst)
	}
	for _, name := range []string{"pushed", "pulled"} {
		p := filepath.Join(dir, name)
		got, _ := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if !bytes.Equal(got, data) || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: %d bytes, mode %v, mtime %v", name, len(got), fi.Mode(), fi.ModTime())
		}
	}
	// Into an existing directory, under the source's name.
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	if _, err := Push(ctxPatience(t), rm, src, filepath.Join(dir, "d"), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "d", "src")); err != nil {
		t.Fatal(err)
	}
	noTemps(t, dir)
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestTreeRoundTrip(t *testing.T) {
	rm := tree(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"a/b/c", "e"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	writeRandom(t, filepath.Join(src, "a/b/c/f"), 1000)
	os.WriteFile(filepath.Join(src, "empty"), nil, 0o600)
	os.Chmod(filepath.Join(src, "e"), 0o711)
	os.Symlink("a/b/c/f", filepath.Join(src, "link"))
	os.Symlink("/nonexistent/target", filepath.Join(src, "dangling"))
	if _, err := Push(ctxPatience(t), rm, src, filepath.Join(dir, "pushed"), Options{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(ctxPatience(t), rm, filepath.Join(dir, "pushed"), filepath.Join(dir, "pulled"), Options{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	want := listing(t, src)
	for _, name := range []string{"pushed", "pulled"} {
		if got := listing(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s differs:\n%s\nwant:\n%s", name, got, want)
		}
	}
}

// listing describes a tree: path, type, mode, size, mtime, link target.
func listing(t *testing.T, root string) string {
	out, err := exec.Command("find", root, "-printf", "%P %y %m %s %T@ %l\n").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	// Directory sizes and times depend on the file system's history.
	for i, l := range lines {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "l" {
			f[4] = "-" // symlink times are kept, but not by every kernel
			lines[i] = strings.Join(f, " ")
		}
	}
	return strings.Join(sortStrings(lines), "\n")
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// pipeConn joins a crafted sender to Receive.
func pipeConn() (*router.Channel, *router.Channel) {
	a, b := net.Pipe()
	return &router.Channel{Conn: a}, &router.Channel{Conn: b}
}

// craft sends a version record and records to Receive into dest and
// returns its error.
func craft(t *testing.T, dest string, records func(rw *recWriter)) error {
	t.Helper()
	return craftRaw(t, dest, func(rw *recWriter) {
		rw.write(recVersion, versionRecord)
		records(rw)
	})
}

// craftRaw sends records, and nothing else, to Receive into dest and
// returns its error.
func craftRaw(t *testing.T, dest string, records func(rw *recWriter)) error {
	t.Helper()
	snd, rcv := pipeConn()
	done := make(chan error, 1)
	go func() {
		_, err := Receive(ctxPatience(t), rcv, dest, Options{Recursive: true})
		done <- err
	}()
	go func() {
		rw := newRecWriter(snd)
		records(rw)
		rw.flush()
		snd.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(patience):
		t.Fatal("Receive did not return")
	}
	return nil
}

func TestEscapesRefused(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	file := func(rw *recWriter, path string) {
		rw.writeCBOR(recEntry, entryRec{Path: path, Type: typeFile, Mode: 0o644})
		rw.write(recData, []byte("pwned"))
		var k check
		k.Write([]byte("pwned"))
		rw.write(recSum, k.Sum())
	}
	root := func(rw *recWriter) {
		rw.writeCBOR(recBegin, beginRec{Base: "t", Dir: true})
		rw.writeCBOR(recEntry, entryRec{Path: ".", Type: typeDir, Mode: 0o755})
	}
	rel, _ := filepath.Rel(filepath.Join(dir, "t"), filepath.Join(outside, "evil"))
	cases := map[string]func(rw *recWriter){
		"dotdot": func(rw *recWriter) { root(rw); file(rw, rel) },
		"inner": func(rw *recWriter) {
			root(rw)
			rw.writeCBOR(recEntry, entryRec{Path: "a", Type: typeDir})
			file(rw, "a/../../x")
		},
		"absolute": func(rw *recWriter) { root(rw); file(rw, filepath.Join(outside, "evil")) },
		"symlink": func(rw *recWriter) {
			root(rw)
			rw.writeCBOR(recEntry, entryRec{Path: "link", Type: typeSymlink, Target: outside})
			file(rw, "link/evil")
		},
		"symlink dir": func(rw *recWriter) {
			root(rw)
			rw.writeCBOR(recEntry, entryRec{Path: "l2", Type: typeSymlink, Target: outside})
			rw.writeCBOR(recEntry, entryRec{Path: "l2", Type: typeDir, Mode: 0o755})
		},
		"base": func(rw *recWriter) { rw.writeCBOR(recBegin, beginRec{Base: "..", Dir: true}) },
	}
	for name, records := range cases {
		t.Run(name, func(t *testing.T) {
			os.RemoveAll(filepath.Join(dir, "t"))
			err := craft(t, dir, records)
			if !errors.Is(err, ErrEscape) {
				t.Fatalf("got %v, want ErrEscape", err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("wrote outside the destination: %v", ents)
			}
		})
	}
}

// TestCutShortLeavesNothing: a stream that ends inside a file, or with a
// wrong checksum, leaves no file under the real name and no temporary.
func TestCutShortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	head := func(rw *recWriter) {
		rw.writeCBOR(recBegin, beginRec{Base: "f", Files: 1, Bytes: 10})
		rw.writeCBOR(recEntry, entryRec{Path: ".", Type: typeFile, Mode: 0o644, Size: 10})
		rw.write(recData, []byte("01234"))
	}
	err := craft(t, filepath.Join(dir, "f"), head)
	if !errors.Is(err, errCutShort) {
		t.Fatalf("cut: got %v", err)
	}
	err = craft(t, filepath.Join(dir, "f"), func(rw *recWriter) {
		head(rw)
		rw.write(recData, []byte("56789"))
		rw.write(recSum, make([]byte, checkSize))
	})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("bad sum: got %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestErrors(t *testing.T) {
	rm := tree(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeRandom(t, src, 4<<20)
	var re *funcs.RemoteError

	_, err := Push(ctxPatience(t), rm, filepath.Join(dir, "missing"), filepath.Join(dir, "x"), Options{})
	if !IsLocal(err) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing source: %v", err)
	}
	_, err = Pull(ctxPatience(t), rm, filepath.Join(dir, "missing"), filepath.Join(dir, "x"), Options{})
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing remote source: %v", err)
	}
	_, err = Push(ctxPatience(t), rm, dir, filepath.Join(dir, "x"), Options{})
	if err == nil || !strings.Contains(err.Error(), "use -r") {
		t.Errorf("directory without -r: %v", err)
	}
	_, err = Push(ctxPatience(t), rm, src, filepath.Join(dir, "no", "such", "dir"), Options{})
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing destination directory: %v", err)
	}

	// A full disk and a read-only one need mounts (root only).
	full := filepath.Join(dir, "full")
	ro := filepath.Join(dir, "ro")
	os.Mkdir(full, 0o755)
	os.Mkdir(ro, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", full).Run()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a read-only tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", ro).Run()
	_, err = Push(ctxPatience(t), rm, src, filepath.Join(full, "big"), Options{})
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("full disk: %v", err)
	}
	if ents, _ := os.ReadDir(full); len(ents) != 0 {
		t.Errorf("full disk: left behind %v", ents)
	}
	_, err = Pull(ctxPatience(t), rm, src, filepath.Join(full, "big"), Options{})
	if !IsLocal(err) || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("full local disk: %v", err)
	}
	_, err = Push(ctxPatience(t), rm, src, filepath.Join(ro, "x"), Options{})
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "read-only file system") {
		t.Errorf("read-only destination: %v", err)
	}
	t.Logf("read-only destination: %v", err)
}
