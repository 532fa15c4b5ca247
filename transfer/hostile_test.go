package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
)

// These tests pull from a hostile node: node b of root → a → b serves an
// fs.send that writes crafted records with this package's own encoder
// over the real channel, and the root runs Pull. Each checks that nothing
// outside the destination changed, that no name holds content other than
// what was asked for, and the error the pull ends with.

// hostileNode builds root → a → b in process, b serving an fs.send that
// runs the sender set with set, and returns the root's handle for b.
func hostileNode(t *testing.T) (*arborctx.Remote, func(sender func(f *forge))) {
	root := testtree.Root(t, testtree.Options{})
	a := root.Spawn(t, testtree.Options{}, "a")
	b := a.Spawn(t, testtree.Options{}, "b")
	root.WaitRoute(t, b.ID())
	var mu sync.Mutex
	var sender func(f *forge)
	reg := funcs.NewRegistry()
	funcs.Register(reg, FnSend, func(ctx context.Context, c *funcs.Call, args SendArgs) (Summary, error) {
		ch, err := c.Router.ClaimChannel(c.Src, args.Channel)
		if err != nil {
			return Summary{}, err
		}
		defer ch.Close()
		stop := context.AfterFunc(ctx, ch.Abort)
		defer stop()
		mu.Lock()
		send := sender
		mu.Unlock()
		f := &forge{ctx: ctx, rw: newRecWriter(ch)}
		send(f)
		if f.rw.flush() == nil {
			_ = ch.CloseWrite()
		}
		_ = readVerdict(ch) // the receiver's word, or its abort
		return Summary{}, nil
	})
	d := funcs.Serve(b.R, reg, funcs.DefaultConfig(), nil)
	t.Cleanup(d.Close)
	return arborctx.New(root.R, root.M, b.ID(), b.R.Name()), func(s func(f *forge)) {
		mu.Lock()
		sender = s
		mu.Unlock()
	}
}

// forge writes a transfer stream as a sender would, keeping the counts
// and the manifest, so the end record it writes agrees with what it sent:
// each stream is hostile only in the way a test means it to be.
type forge struct {
	ctx          context.Context // the call's, on the node
	rw           *recWriter
	dir          bool
	files, bytes int64
	manifest     check
	fileSum      []byte
}

// begin starts a version 2 stream.
func (f *forge) begin(b beginRec) {
	f.dir = b.Dir
	f.rw.write(recVersion, versionRecord)
	f.rw.writeCBOR(recBegin, b)
}

func (f *forge) entry(e entryRec) {
	f.rw.writeCBOR(recEntry, e)
	f.manifest.Write([]byte(e.Path))
	f.manifest.Write([]byte{0})
	if e.Type == typeSymlink {
		f.manifest.Write([]byte(e.Target))
	}
}

func (f *forge) dirEntry(path string, mode uint32) {
	f.entry(entryRec{Path: path, Type: typeDir, Mode: mode})
}

func (f *forge) symlink(path, target string) {
	f.entry(entryRec{Path: path, Type: typeSymlink, Mode: 0o777, Target: target})
}

// file sends an entry declaring declared bytes, then data (whatever its
// length) and its true check. It stops at the first write error: the
// receiver gave up.
func (f *forge) file(path string, mode uint32, declared int64, data []byte) {
	f.fileAltered(path, mode, declared, data, data)
}

// fileAltered is file with the bytes sent changed on the way: sent goes
// out in data's place, with data's check (as if a hop had changed them).
func (f *forge) fileAltered(path string, mode uint32, declared int64, data, sent []byte) {
	f.entry(entryRec{Path: path, Type: typeFile, Mode: mode, Size: declared})
	for off := 0; off < len(sent); off += chunkSize {
		if err := f.rw.write(recData, sent[off:min(off+chunkSize, len(sent))]); err != nil {
			return
		}
	}
	var k check
	k.Write(data)
	h := k.Sum()
	f.rw.write(recSum, h)
	f.manifest.Write(h)
	f.fileSum = h
	f.files++
	f.bytes += int64(len(sent))
}

func (f *forge) end() {
	digest := f.manifest.Sum()
	if !f.dir {
		digest = f.fileSum
	}
	f.rw.writeCBOR(recEnd, endRec{Files: f.files, Bytes: f.bytes, Digest: digest})
}

// sandbox is a destination directory beside a sibling directory, both in
// a parent of their own, with a snapshot of everything outside the
// destination.
type sandbox struct {
	parent, dest, sibling string
	before                string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	p := t.TempDir()
	s := &sandbox{parent: p, dest: filepath.Join(p, "dest"), sibling: filepath.Join(p, "sibling")}
	for _, d := range []string{s.dest, s.sibling} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{"sibling/canary": "canary", "README": "parent"} {
		if err := os.WriteFile(filepath.Join(p, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.before = s.outside(t)
	return s
}

// outside lists everything under the parent but the destination's
// contents: path, type, mode, content.
func (s *sandbox) outside(t *testing.T) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(s.parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == s.dest {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.parent, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %q", data)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// untouched fails if anything outside the destination changed, or a
// temporary file is left inside it.
func (s *sandbox) untouched(t *testing.T) {
	t.Helper()
	if now := s.outside(t); now != s.before {
		t.Errorf("wrote outside the destination:\n%s\nwas:\n%s", now, s.before)
	}
	noTemps(t, s.dest)
}

// contents lists the destination: path and, for a file, its content; for
// a symlink, its target.
func (s *sandbox) contents(t *testing.T) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(s.dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == s.dest {
			return nil
		}
		rel, _ := filepath.Rel(s.dest, p)
		switch fi, _ := d.Info(); {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			rel += " -> " + target
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			if len(data) > 64 {
				rel += fmt.Sprintf(" (%d bytes)", len(data))
			} else {
				rel += fmt.Sprintf(" %q", data)
			}
		}
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out
}

func (s *sandbox) want(t *testing.T, want ...string) {
	t.Helper()
	got := s.contents(t)
	want = append([]string(nil), want...)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("destination holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestPullHostileSymlinkRoot: a root entry that is not what was asked for
// is refused before anything is written: a symlink root (to the sibling,
// absolute or relative) whose later entries would land outside, a second
// root entry, a tree where a file was asked for (no -r), a tree without a
// root entry.
func TestPullHostileSymlinkRoot(t *testing.T) {
	rm, setSender := hostileNode(t)
	for _, tc := range []struct {
		name      string
		recursive bool
		sender    func(s *sandbox) func(f *forge)
		want      error
		left      []string // what the destination holds after
	}{
		{"tree root is an absolute symlink", true, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
				f.symlink(".", s.sibling)
				f.file("pwned", 0o644, 5, []byte("pwned"))
				f.end()
			}
		}, ErrWrongKind, nil},
		{"tree root is a relative symlink", true, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
				f.symlink(".", "../sibling")
				f.file("pwned", 0o644, 5, []byte("pwned"))
				f.end()
			}
		}, ErrWrongKind, nil},
		{"file root is a symlink", false, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t"})
				f.symlink(".", filepath.Join(s.sibling, "canary"))
				f.end()
			}
		}, ErrWrongKind, nil},
		{"root entry twice", true, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
				f.dirEntry(".", 0o755)
				f.symlink(".", s.sibling)
				f.file("pwned", 0o644, 5, []byte("pwned"))
				f.end()
			}
		}, ErrWrongKind, []string{"t"}},
		{"tree where a file was asked for", false, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
				f.dirEntry(".", 0o755)
				f.file("x", 0o644, 5, []byte("hello"))
				f.end()
			}
		}, ErrWrongKind, nil},
		{"tree without a root entry", true, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
				f.file("x", 0o644, 5, []byte("hello"))
				f.end()
			}
		}, ErrWrongKind, nil},
		{"symlink below the root", true, func(s *sandbox) func(f *forge) {
			return func(f *forge) {
				f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
				f.dirEntry(".", 0o755)
				f.symlink("l", "../../sibling")
				f.file("l/pwned", 0o644, 5, []byte("pwned"))
				f.end()
			}
		}, ErrEscape, []string{"t", "t/l -> ../../sibling"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			setSender(tc.sender(s))
			_, err := Pull(ctxPatience(t), rm, "/srv/t", s.dest, Options{Recursive: tc.recursive})
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			t.Logf("error: %v", err)
			s.untouched(t)
			s.want(t, tc.left...)
		})
	}
}

// TestPullHostileOversize: a file that sends more (or fewer) bytes than
// its entry declared, with a true checksum, is refused: nothing appears
// under its name, no temporary is left, a file already at that name keeps
// its content, and files of the same pull already in place stay. Entries
// that declare more than the begin record's totals are refused too. (The
// data sent past the declared size stands in for gigabytes: the receiver
// stops at the first chunk past it.)
func TestPullHostileOversize(t *testing.T) {
	rm, setSender := hostileNode(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), (8<<20)/16)
	for _, tc := range []struct {
		name      string
		recursive bool
		existing  bool // a file "f" is in the destination already
		sender    func(f *forge)
		want      []string
	}{
		{"file sends 8 MiB for 10 declared", false, false, func(f *forge) {
			f.begin(beginRec{Base: "f", Files: 1, Bytes: 10})
			f.file(".", 0o644, 10, big)
			f.end()
		}, nil},
		{"over an existing file", false, true, func(f *forge) {
			f.begin(beginRec{Base: "f", Files: 1, Bytes: 10})
			f.file(".", 0o644, 10, big)
			f.end()
		}, []string{`f "original"`}},
		{"file sends 5 bytes for 10 declared", false, true, func(f *forge) {
			f.begin(beginRec{Base: "f", Files: 1, Bytes: 10})
			f.file(".", 0o644, 10, []byte("01234"))
			f.end()
		}, []string{`f "original"`}},
		{"second file of a tree oversized", true, false, func(f *forge) {
			f.begin(beginRec{Base: "f", Dir: true, Files: 2, Bytes: 14})
			f.dirEntry(".", 0o755)
			f.file("good", 0o644, 4, []byte("good"))
			f.file("bad", 0o644, 10, big)
			f.end()
		}, []string{"f", `f/good "good"`}},
		{"entries past the announced total", true, false, func(f *forge) {
			f.begin(beginRec{Base: "f", Dir: true, Files: 2, Bytes: 10})
			f.dirEntry(".", 0o755)
			f.file("a", 0o644, 10, []byte("0123456789"))
			f.file("b", 0o644, 10, []byte("0123456789"))
			f.end()
		}, []string{"f", `f/a "0123456789"`}},
		{"more files than announced", true, false, func(f *forge) {
			f.begin(beginRec{Base: "f", Dir: true, Files: 1, Bytes: 10})
			f.dirEntry(".", 0o755)
			f.file("a", 0o644, 5, []byte("01234"))
			f.file("b", 0o644, 5, []byte("56789"))
			f.end()
		}, []string{"f", `f/a "01234"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			if tc.existing {
				if err := os.WriteFile(filepath.Join(s.dest, "f"), []byte("original"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			setSender(tc.sender)
			_, err := Pull(ctxPatience(t), rm, "/srv/f", s.dest, Options{Recursive: tc.recursive})
			if !errors.Is(err, ErrSize) {
				t.Errorf("got %v, want ErrSize", err)
			}
			t.Logf("error: %v", err)
			s.untouched(t)
			s.want(t, tc.want...)
		})
	}
}

// TestPullHostileModes: setuid, setgid and sticky bits the node sends are
// dropped (the root runs as root), on files and directories, unless
// PreserveSpecial (arbor pull --preserve-special) asks to keep them.
func TestPullHostileModes(t *testing.T) {
	rm, setSender := hostileNode(t)
	setSender(func(f *forge) {
		f.begin(beginRec{Base: "t", Dir: true, Files: 2, Bytes: 8})
		f.dirEntry(".", 0o1777)
		f.dirEntry("sgid", 0o2755)
		f.file("sgid/suid", 0o4755, 4, []byte("suid"))
		f.file("both", 0o6711, 4, []byte("both"))
		f.end()
	})
	const special = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	for _, tc := range []struct {
		preserve bool
		want     map[string]fs.FileMode
	}{
		{false, map[string]fs.FileMode{
			"t": fs.ModeDir | 0o777, "t/sgid": fs.ModeDir | 0o755, "t/sgid/suid": 0o755, "t/both": 0o711}},
		{true, map[string]fs.FileMode{
			"t": fs.ModeDir | fs.ModeSticky | 0o777, "t/sgid": fs.ModeDir | fs.ModeSetgid | 0o755,
			"t/sgid/suid": fs.ModeSetuid | 0o755, "t/both": fs.ModeSetuid | fs.ModeSetgid | 0o711}},
	} {
		t.Run(fmt.Sprintf("preserve=%v", tc.preserve), func(t *testing.T) {
			s := newSandbox(t)
			if _, err := Pull(ctxPatience(t), rm, "/srv/t", s.dest, Options{Recursive: true, PreserveSpecial: tc.preserve}); err != nil {
				t.Fatal(err)
			}
			s.untouched(t)
			for name, want := range tc.want {
				fi, err := os.Lstat(filepath.Join(s.dest, name))
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode() & (fs.ModeType | special | fs.ModePerm); got != want {
					t.Errorf("%s: mode %v, want %v", name, got, want)
				}
			}
		})
	}
	// A single file too.
	setSender(func(f *forge) {
		f.begin(beginRec{Base: "f", Files: 1, Bytes: 4})
		f.file(".", 0o6755, 4, []byte("suid"))
		f.end()
	})
	s := newSandbox(t)
	if _, err := Pull(ctxPatience(t), rm, "/srv/f", s.dest, Options{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(s.dest, "f")); err != nil || fi.Mode() != 0o755 {
		t.Errorf("single file: %v %v, want mode 0755", fi, err)
	}
}

// TestPullHostileName: the copy is named after what the user asked for,
// never after the name the node sends (scp's CVE-2019-6111): in an
// existing directory the last element of the source path typed, else the
// destination; a source path with no last element of its own (/, ..)
// cannot name a copy in a directory and is refused before anything is
// written.
func TestPullHostileName(t *testing.T) {
	rm, setSender := hostileNode(t)
	fileAs := func(base string) func(f *forge) {
		return func(f *forge) {
			f.begin(beginRec{Base: base, Files: 1, Bytes: 5})
			f.file(".", 0o644, 5, []byte("notes"))
			f.end()
		}
	}
	for _, tc := range []struct {
		name       string
		src, dst   string // dst relative to the sandbox's destination
		recursive  bool
		sender     func(f *forge)
		wantErr    string
		wantResult []string
	}{
		{"file named .bashrc by the node", "/home/u/notes.txt", ".", false, fileAs(".bashrc"), "",
			[]string{`notes.txt "notes"`}},
		{"file named .. by the node", "/home/u/notes.txt/", ".", false, fileAs(".."), "",
			[]string{`notes.txt "notes"`}},
		{"file to a new name", "/home/u/notes.txt", "mine", false, fileAs(".bashrc"), "",
			[]string{`mine "notes"`}},
		{"tree named .ssh by the node", "/srv/proj", ".", true, func(f *forge) {
			f.begin(beginRec{Base: ".ssh", Dir: true, Files: 1, Bytes: 5})
			f.dirEntry(".", 0o700)
			f.file("authorized_keys", 0o600, 5, []byte("notes"))
			f.end()
		}, "", []string{"proj", `proj/authorized_keys "notes"`}},
		{"source /", "/", ".", false, fileAs("etc"), "has no name of its own", nil},
		{"source ..", "/srv/..", ".", false, fileAs("x"), "has no name of its own", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			setSender(tc.sender)
			_, err := Pull(ctxPatience(t), rm, tc.src, filepath.Join(s.dest, tc.dst), Options{Recursive: tc.recursive})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("pull: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error saying %q", err, tc.wantErr)
			}
			s.untouched(t)
			s.want(t, tc.wantResult...)
		})
	}
}

// TestPullUnblockQuietNode: a node that breaks the protocol and then
// neither answers the call nor closes the channel does not hold the pull:
// it returns the receiver's refusal, naming the node, once the node has
// had its grace to say more.
func TestPullUnblockQuietNode(t *testing.T) {
	rm, setSender := hostileNode(t)
	setSender(func(f *forge) {
		f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
		f.symlink(".", "/")
		f.rw.flush()
		<-f.ctx.Done() // quiet until the call is given up
	})
	s := newSandbox(t)
	_, err := Pull(ctxPatience(t), rm, "/srv/t", s.dest, Options{Recursive: true})
	if !errors.Is(err, ErrWrongKind) || !strings.Contains(err.Error(), "(pull from node") {
		t.Errorf("got %v, want ErrWrongKind naming the node", err)
	}
	s.untouched(t)
	s.want(t)
}

// TestDataRecordTooLarge: a data record longer than a chunk is refused
// rather than handed to the writer in the reader's own buffer.
func TestDataRecordTooLarge(t *testing.T) {
	rm, setSender := hostileNode(t)
	setSender(func(f *forge) {
		f.begin(beginRec{Base: "f", Files: 1, Bytes: 2 * chunkSize})
		f.entry(entryRec{Path: ".", Type: typeFile, Mode: 0o644, Size: 2 * chunkSize})
		f.rw.write(recData, make([]byte, 2*chunkSize))
		f.rw.write(recData, make([]byte, 10))
	})
	s := newSandbox(t)
	_, err := Pull(ctxPatience(t), rm, "/srv/f", s.dest, Options{})
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("got %v", err)
	}
	s.untouched(t)
	s.want(t)
}

// socketConn joins a sender to a receiver over a unix socket pair, which
// (unlike net.Pipe) half-closes.
func socketConn(t *testing.T) (*router.Channel, *router.Channel) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]*router.Channel
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = &router.Channel{Conn: c}
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// TestSendDeclaredSize: a sender sends a file as long as its entry says,
// the size it had when it was listed: one that grew since is sent cut to
// that size and received whole; one that shrank fails on the sender's
// side, naming the file, and nothing appears under its name.
func TestSendDeclaredSize(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("0123456789"), 0o644)
	run := func(p *Plan, dest string) (error, error) {
		snd, rcv := socketConn(t)
		recvErr := make(chan error, 1)
		go func() {
			_, err := Receive(ctxPatience(t), rcv, dest, Options{})
			recvErr <- err
		}()
		_, serr := Send(ctxPatience(t), snd, p, Options{})
		return serr, <-recvErr
	}
	p, err := NewPlan(src, false)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(src, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("grown"))
	f.Close()
	if serr, rerr := run(p, filepath.Join(dir, "grown")); serr != nil || rerr != nil {
		t.Fatalf("grown: send %v, receive %v", serr, rerr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "grown")); string(got) != "0123456789" {
		t.Errorf("grown: received %q", got)
	}

	p, _ = NewPlan(src, false)
	os.Truncate(src, 3)
	serr, rerr := run(p, filepath.Join(dir, "shrunk"))
	if !IsLocal(serr) || !strings.Contains(serr.Error(), "shrank") {
		t.Errorf("shrunk: send %v", serr)
	}
	if rerr == nil {
		t.Errorf("shrunk: the receiver succeeded")
	}
	if _, err := os.Lstat(filepath.Join(dir, "shrunk")); err == nil {
		t.Errorf("shrunk: a file appeared under the real name")
	}
	noTemps(t, dir)
}
