package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/arbor-project/arbor/transfer"
)

// The pulls here run the real arbor binary against a hostile node: the
// hop is ssh through a stand-in ssh (--ssh-path) that answers the
// bootstrap with a cache hit and runs this test binary as the agent, with
// hostileEnv naming the scenario. That agent serves the built-ins, but an
// fs.send that writes the records the scenario forges, in the layout of
// stream/PROTOCOL.md section 11.3.

const (
	hostileEnv    = "ARBOR_TEST_HOSTILE_SENDER"
	hostileArgEnv = "ARBOR_TEST_HOSTILE_ARG"
)

func init() {
	if len(os.Args) < 2 || os.Args[1] != spawn.AgentArg || os.Getenv(hostileEnv) == "" {
		return
	}
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	funcs.Register(reg, transfer.FnSend, hostileSend)
	if err := agent.RunChildWith(reg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// The transfer records (stream/PROTOCOL.md 11.3), written as a sender.
type (
	wireBegin struct {
		Base  string `cbor:"1,keyasint"`
		Dir   bool   `cbor:"2,keyasint,omitempty"`
		Files int64  `cbor:"3,keyasint,omitempty"`
		Bytes int64  `cbor:"4,keyasint,omitempty"`
	}
	wireEntry struct {
		Path    string `cbor:"1,keyasint"`
		Type    uint8  `cbor:"2,keyasint"`
		Mode    uint32 `cbor:"3,keyasint"`
		MtimeNs int64  `cbor:"4,keyasint"`
		Size    int64  `cbor:"5,keyasint,omitempty"`
		Target  string `cbor:"6,keyasint,omitempty"`
	}
	wireEnd struct {
		Files  int64  `cbor:"1,keyasint,omitempty"`
		Bytes  int64  `cbor:"2,keyasint,omitempty"`
		Digest []byte `cbor:"3,keyasint"`
	}
)

const (
	wireFile    = 1
	wireDir     = 2
	wireSymlink = 3
)

// crcPair is the transfer's check (section 11.3): CRC-32C, then CRC-32
// (IEEE), big-endian.
type crcPair struct{ c, i uint32 }

func (k *crcPair) Write(p []byte) {
	k.c = crc32.Update(k.c, crc32.MakeTable(crc32.Castagnoli), p)
	k.i = crc32.Update(k.i, crc32.IEEETable, p)
}

func (k *crcPair) Sum() []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, k.c), k.i)
}

// forger writes a stream whose counts and digests agree with what it sent,
// so each scenario is hostile only in the way it means to be.
type forger struct {
	w            *bufio.Writer
	dir          bool
	files, bytes int64
	manifest     crcPair
	fileSum      []byte
	err          error // the first write error: the receiver gave up
}

func (f *forger) record(typ byte, body []byte) {
	if f.err != nil {
		return
	}
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	if _, f.err = f.w.Write(hdr[:]); f.err == nil {
		_, f.err = f.w.Write(body)
	}
}

func (f *forger) cbor(typ byte, v any) {
	b, err := wire.Marshal(v)
	if err != nil {
		panic(err) // our own structs
	}
	f.record(typ, b)
}

// begin starts a stream of transfer version 2.
func (f *forger) begin(b wireBegin) {
	f.dir = b.Dir
	f.record('v', []byte{2})
	f.cbor('b', b)
}

func (f *forger) entry(e wireEntry) {
	f.cbor('h', e)
	f.manifest.Write([]byte(e.Path))
	f.manifest.Write([]byte{0})
	if e.Type == wireSymlink {
		f.manifest.Write([]byte(e.Target))
	}
}

// file declares declared bytes and sends n bytes of pattern, in chunks,
// with their true check.
func (f *forger) file(path string, mode uint32, declared int64, pattern []byte, n int) {
	f.entry(wireEntry{Path: path, Type: wireFile, Mode: mode, Size: declared})
	var h crcPair
	const chunk = 256 << 10
	buf := make([]byte, 0, chunk)
	for sent := 0; sent < n && f.err == nil; {
		buf = buf[:0]
		for len(buf) < chunk && sent+len(buf) < n {
			buf = append(buf, pattern[(sent+len(buf))%len(pattern)])
		}
		h.Write(buf)
		f.record('d', buf)
		sent += len(buf)
	}
	sum := h.Sum()
	f.record('s', sum)
	f.manifest.Write(sum)
	f.fileSum = sum
	f.files++
	f.bytes += int64(n)
}

func (f *forger) end() {
	digest := f.manifest.Sum()
	if !f.dir {
		digest = f.fileSum
	}
	f.cbor('e', wireEnd{Files: f.files, Bytes: f.bytes, Digest: digest})
}

// hostileScenarios are what the hostile fs.send sends; arg is
// hostileArgEnv (a path in the test's sandbox).
var hostileScenarios = map[string]func(f *forger, arg string){
	// A tree whose root is a symlink to the sandbox's sibling directory,
	// then a file under it.
	"symlink-root": func(f *forger, arg string) {
		f.begin(wireBegin{Base: "t", Dir: true, Files: 1, Bytes: 5})
		f.entry(wireEntry{Path: ".", Type: wireSymlink, Mode: 0o777, Target: arg})
		f.file("pwned", 0o644, 5, []byte("pwned"), 5)
		f.end()
	},
	// 10 bytes declared, 64 MiB sent (a stand-in for gigabytes).
	"oversize": func(f *forger, _ string) {
		f.begin(wireBegin{Base: "f", Files: 1, Bytes: 10})
		f.file(".", 0o644, 10, []byte("0123456789abcdef"), 64<<20)
		f.end()
	},
	// A setuid and setgid file.
	"setuid": func(f *forger, _ string) {
		f.begin(wireBegin{Base: "f", Files: 1, Bytes: 4})
		f.file(".", 0o6755, 4, []byte("suid"), 4)
		f.end()
	},
	// The file asked for, under the name .bashrc.
	"bashrc": func(f *forger, _ string) {
		f.begin(wireBegin{Base: ".bashrc", Files: 1, Bytes: 5})
		f.file(".", 0o644, 5, []byte("notes"), 5)
		f.end()
	},
}

func hostileSend(ctx context.Context, c *funcs.Call, a transfer.SendArgs) (transfer.Summary, error) {
	scenario, ok := hostileScenarios[os.Getenv(hostileEnv)]
	if !ok {
		return transfer.Summary{}, fmt.Errorf("no hostile scenario %q", os.Getenv(hostileEnv))
	}
	ch, err := c.Router.ClaimChannel(c.Src, a.Channel)
	if err != nil {
		return transfer.Summary{}, err
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, ch.Abort)
	defer stop()
	f := &forger{w: bufio.NewWriterSize(ch, 64<<10)}
	scenario(f, os.Getenv(hostileArgEnv))
	if f.err == nil && f.w.Flush() == nil {
		_ = ch.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, ch) // the receiver's verdict, or its abort
	return transfer.Summary{}, nil
}

// pullSandbox is a destination directory beside a sibling, in a parent of
// their own, with a listing of everything outside the destination.
type pullSandbox struct {
	parent, dest, sibling, before string
}

func newPullSandbox(t *testing.T) *pullSandbox {
	t.Helper()
	p := t.TempDir()
	s := &pullSandbox{parent: p, dest: filepath.Join(p, "dest"), sibling: filepath.Join(p, "sibling")}
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
	s.before = s.list(t, p, s.dest)
	return s
}

// list describes the tree at root (skipping skip): path, mode, content.
func (s *pullSandbox) list(t *testing.T, root, skip string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			if len(data) > 64 {
				line += fmt.Sprintf(" (%d bytes)", len(data))
			} else {
				line += fmt.Sprintf(" %q", data)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// check fails if anything outside the destination changed, or the
// destination does not hold exactly want (lines of list, without ".").
func (s *pullSandbox) check(t *testing.T, want ...string) {
	t.Helper()
	if now := s.list(t, s.parent, s.dest); now != s.before {
		t.Errorf("wrote outside the destination:\n%s\nwas:\n%s", now, s.before)
	}
	lines := strings.Split(s.list(t, s.dest, ""), "\n")[1:] // without "."
	sort.Strings(want)
	if got := strings.Join(lines, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("destination holds\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

// hostileArbor runs arbor with the ssh hop "ssh:hostile" going to an agent
// that plays scenario.
func hostileArbor(t *testing.T, scenario, arg string, args ...string) result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ssh := writeScript(t, "ssh", fmt.Sprintf("echo 'ARBOR-BOOT1 hit %s %s'\nexec env %s=%s %s=%q %q %s\n",
		runtime.GOOS, runtime.GOARCH, hostileEnv, scenario, hostileArgEnv, arg, exe, spawn.AgentArg))
	return runArbor(t, append([]string{"--log-level", "off", "--ssh-path", ssh}, args...)...)
}

// TestPullHostileCLI runs `arbor pull` against a hostile node for each way
// a sender broke pull, and checks the exit status, the message, that
// nothing outside the destination changed, and what the destination holds.
func TestPullHostileCLI(t *testing.T) {
	t.Run("symlink root", func(t *testing.T) {
		s := newPullSandbox(t)
		res := hostileArbor(t, "symlink-root", s.sibling, "pull", "--to", "ssh:hostile", "-r", "/srv/t", s.dest)
		if res.code == 0 || !strings.Contains(string(res.stderr), "the root is a symlink") {
			t.Errorf("want a refusal of the symlink root; got %s", res)
		}
		s.check(t)
	})
	t.Run("oversize", func(t *testing.T) {
		s := newPullSandbox(t)
		if err := os.WriteFile(filepath.Join(s.dest, "f"), []byte("original"), 0o644); err != nil {
			t.Fatal(err)
		}
		res := hostileArbor(t, "oversize", "", "pull", "--to", "ssh:hostile", "/srv/f", s.dest)
		if res.code == 0 || !strings.Contains(string(res.stderr), "more than the 10 bytes declared") {
			t.Errorf("want a refusal of the oversized file; got %s", res)
		}
		s.check(t, `f -rw-r--r-- "original"`)
	})
	t.Run("setuid", func(t *testing.T) {
		s := newPullSandbox(t)
		res := hostileArbor(t, "setuid", "", "pull", "--to", "ssh:hostile", "/srv/f", filepath.Join(s.dest, "masked"))
		if res.code != 0 {
			t.Fatalf("pull: %s", res)
		}
		if fi, err := os.Stat(filepath.Join(s.dest, "masked")); err != nil {
			t.Error(err)
		} else if fi.Mode() != 0o755 {
			t.Errorf("without --preserve-special: mode %v, want 0755", fi.Mode())
		}
		res = hostileArbor(t, "setuid", "", "pull", "--to", "ssh:hostile", "--preserve-special", "/srv/f", filepath.Join(s.dest, "kept"))
		if res.code != 0 {
			t.Fatalf("pull --preserve-special: %s", res)
		}
		s.check(t, `masked -rwxr-xr-x "suid"`, `kept ugrwxr-xr-x "suid"`)
	})
	t.Run("name chosen by the node", func(t *testing.T) {
		s := newPullSandbox(t)
		res := hostileArbor(t, "bashrc", "", "pull", "--to", "ssh:hostile", "/home/u/notes.txt", s.dest)
		if res.code != 0 {
			t.Fatalf("pull: %s", res)
		}
		s.check(t, `notes.txt -rw-r--r-- "notes"`)
	})
}
