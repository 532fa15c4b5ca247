package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
)

// TestCheckLayout pins the check: CRC-32C then CRC-32 (IEEE), big-endian,
// of the bytes written, in whatever pieces.
func TestCheckLayout(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"", "0000000000000000"},
		{"123456789", "e3069283cbf43926"}, // the two CRCs' published check values
	} {
		var k check
		for i := range tc.data {
			k.Write([]byte(tc.data[i : i+1]))
		}
		if got := hexOf(k.Sum()); got != tc.want {
			t.Errorf("check(%q) = %s, want %s", tc.data, got, tc.want)
		}
	}
}

// TestCheckCatchesCorruption: a flipped bit anywhere, two chunks swapped,
// a chunk repeated in place of another, and a cut-and-padded file all
// change the check.
func TestCheckCatchesCorruption(t *testing.T) {
	data := randomBytes(3 * chunkSize)
	sum := func(b []byte) string {
		var k check
		k.Write(b)
		return hexOf(k.Sum())
	}
	orig := sum(data)
	altered := map[string][]byte{}
	for _, bit := range []int{0, 7, 8*chunkSize - 1, 8*len(data) - 1} {
		b := bytes.Clone(data)
		b[bit/8] ^= 1 << (bit % 8)
		altered[fmt.Sprintf("bit %d flipped", bit)] = b
	}
	swapped := append(append(append([]byte(nil), data[chunkSize:2*chunkSize]...), data[:chunkSize]...), data[2*chunkSize:]...)
	altered["chunks swapped"] = swapped
	repeated := append(append(append([]byte(nil), data[:chunkSize]...), data[:chunkSize]...), data[2*chunkSize:]...)
	altered["chunk repeated"] = repeated
	padded := append(bytes.Clone(data[:len(data)-100]), make([]byte, 100)...)
	altered["cut and zero-padded"] = padded
	for name, b := range altered {
		if sum(b) == orig {
			t.Errorf("%s: same check %s", name, orig)
		}
	}
}

// TestPullHostileChecksum: bytes changed on the way (a flipped bit, two
// chunks swapped) under their true check are refused with ErrChecksum:
// nothing appears under the file's name, a file already there keeps its
// content, no temporary is left, and a file of the same tree already in
// place stays.
func TestPullHostileChecksum(t *testing.T) {
	rm, setSender := hostileNode(t)
	data := randomBytes(2 * chunkSize)
	flipped := bytes.Clone(data)
	flipped[chunkSize+3] ^= 0x10
	swapped := append(bytes.Clone(data[chunkSize:]), data[:chunkSize]...)
	for _, tc := range []struct {
		name      string
		recursive bool
		sender    func(f *forge)
		want      []string
	}{
		{"flipped bit", false, func(f *forge) {
			f.begin(beginRec{Base: "f", Files: 1, Bytes: int64(len(data))})
			f.fileAltered(".", 0o644, int64(len(data)), data, flipped)
			f.end()
		}, []string{`f "original"`}},
		{"chunks swapped", false, func(f *forge) {
			f.begin(beginRec{Base: "f", Files: 1, Bytes: int64(len(data))})
			f.fileAltered(".", 0o644, int64(len(data)), data, swapped)
			f.end()
		}, []string{`f "original"`}},
		{"second file of a tree", true, func(f *forge) {
			f.begin(beginRec{Base: "t", Dir: true, Files: 2, Bytes: 5 + int64(len(data))})
			f.dirEntry(".", 0o755)
			f.file("a", 0o644, 5, []byte("hello"))
			f.fileAltered("b", 0o644, int64(len(data)), data, flipped)
			f.end()
		}, []string{`f "original"`, "t", `t/a "hello"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			if err := os.WriteFile(filepath.Join(s.dest, "f"), []byte("original"), 0o644); err != nil {
				t.Fatal(err)
			}
			setSender(tc.sender)
			src := "/srv/f"
			if tc.recursive {
				src = "/srv/t"
			}
			_, err := Pull(ctxPatience(t), rm, src, s.dest, Options{Recursive: tc.recursive})
			if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "(pull from node") {
				t.Errorf("got %v, want ErrChecksum naming the node", err)
			}
			t.Logf("error: %v", err)
			s.untouched(t)
			s.want(t, tc.want...)
		})
	}
}

// TestVersion1Sender: a sender of transfer version 1 (a begin record
// first, no version record) is refused with ErrVersion before anything is
// written, and is answered with a lone 'x', which a version 1 sender
// reads as the receiver's error.
func TestVersion1Sender(t *testing.T) {
	dir := t.TempDir()
	snd, rcv := pipeConn()
	done := make(chan error, 1)
	go func() {
		_, err := Receive(ctxPatience(t), rcv, filepath.Join(dir, "f"), Options{})
		done <- err
	}()
	rw := newRecWriter(snd)
	rw.writeCBOR(recBegin, beginRec{Base: "f", Files: 1, Bytes: 5})
	if err := rw.flush(); err != nil {
		t.Fatal(err)
	}
	typ, body, err := newRecReader(snd).next()
	if err != nil || typ != recError {
		t.Fatalf("answer %q %q %v, want a lone 'x'", typ, body, err)
	}
	if msg := peerMessage(body); !strings.Contains(msg, "speaks version 1") {
		t.Errorf("answer %q does not say which versions", msg)
	}
	snd.Close()
	if err := <-done; !errors.Is(err, ErrVersion) {
		t.Errorf("Receive: %v, want ErrVersion", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// TestFutureSender: a version record of another version is refused.
func TestFutureSender(t *testing.T) {
	err := craftRaw(t, filepath.Join(t.TempDir(), "f"), func(rw *recWriter) {
		rw.write(recVersion, []byte{Version + 1})
	})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "speaks version 3") {
		t.Errorf("got %v, want ErrVersion naming version 3", err)
	}
}

// TestVersion1Receiver: a sender whose receiver answers as version 1 does
// (an 'x' that refuses the version record, or an answer without a version
// record of its own) fails with ErrVersion, and so does one whose
// receiver states another version.
func TestVersion1Receiver(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	writeRandom(t, src, 3*chunkSize)
	for _, tc := range []struct {
		name   string
		answer func(rw *recWriter)
		want   string
	}{
		{"version 1 refusal", func(rw *recWriter) {
			rw.writeCBOR(recError, `arbor: transfer: expected a begin record, got 'v'`)
		}, "speaks version 1"},
		{"another version", func(rw *recWriter) {
			rw.write(recVersion, []byte{Version + 1})
			rw.writeCBOR(recOK, Summary{})
		}, "speaks version 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snd, rcv := socketConn(t)
			go func() {
				// A receiver that reads the first record and answers.
				_, _, _ = newRecReader(rcv).next()
				rw := newRecWriter(rcv)
				tc.answer(rw)
				rw.flush()
				rcv.Abort()
			}()
			p, err := NewPlan(src, false)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Send(ctxPatience(t), snd, p, Options{})
			if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrVersion saying %q", err, tc.want)
			}
		})
	}
}

// TestPushPullVersion1Node: push to and pull from a node whose fs.recv
// and fs.send speak transfer version 1 fail with ErrVersion naming the
// node, and nothing appears at the destination.
func TestPushPullVersion1Node(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	a := root.Spawn(t, testtree.Options{}, "a")
	root.WaitRoute(t, a.ID())
	reg := funcs.NewRegistry()
	// fs.recv as version 1 has it: the first record must be 'b'.
	funcs.Register(reg, FnRecv, func(ctx context.Context, c *funcs.Call, args RecvArgs) (Summary, error) {
		ch, err := c.Router.ClaimChannel(c.Src, args.Channel)
		if err != nil {
			return Summary{}, err
		}
		defer ch.Close()
		typ, _, err := newRecReader(ch).next()
		if err != nil {
			return Summary{}, err
		}
		msg := "arbor: transfer: expected a begin record, got '" + string(rune(typ)) + "'"
		rw := newRecWriter(ch)
		rw.writeCBOR(recError, msg)
		rw.flush()
		ch.Abort()
		return Summary{}, errors.New(msg)
	})
	// fs.send as version 1 has it: a begin record first, SHA-256 sums.
	funcs.Register(reg, FnSend, func(ctx context.Context, c *funcs.Call, args SendArgs) (Summary, error) {
		ch, err := c.Router.ClaimChannel(c.Src, args.Channel)
		if err != nil {
			return Summary{}, err
		}
		defer ch.Close()
		rw := newRecWriter(ch)
		rw.writeCBOR(recBegin, beginRec{Base: "f", Files: 1, Bytes: 5})
		rw.writeCBOR(recEntry, entryRec{Path: ".", Type: typeFile, Mode: 0o644, Size: 5})
		rw.write(recData, []byte("hello"))
		rw.flush()
		_ = ch.CloseWrite()
		err = readVersion1Verdict(ch)
		return Summary{}, err
	})
	d := funcs.Serve(a.R, reg, funcs.DefaultConfig(), nil)
	t.Cleanup(d.Close)
	rm := arborctx.New(root.R, root.M, a.ID(), a.R.Name())

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeRandom(t, src, 2*chunkSize)
	for _, c := range []struct {
		verb, names string
		run         func(dst string) error
	}{
		{"push", "(push to node", func(dst string) error { _, err := Push(ctxPatience(t), rm, src, dst, Options{}); return err }},
		{"pull", "(pull from node", func(dst string) error { _, err := Pull(ctxPatience(t), rm, "/srv/f", dst, Options{}); return err }},
	} {
		dst := filepath.Join(dir, c.verb)
		err := c.run(dst)
		if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "speaks version 1") || !strings.Contains(err.Error(), c.names) {
			t.Errorf("%s: got %v, want ErrVersion naming the node", c.verb, err)
		}
		t.Logf("%s: %v", c.verb, err)
		if _, err := os.Lstat(dst); err == nil {
			t.Errorf("%s: %s exists", c.verb, dst)
		}
	}
	noTemps(t, dir)
}

// readVersion1Verdict reads a receiver's answer as a version 1 sender
// does: one record, 'k' or 'x'.
func readVersion1Verdict(c Conn) error {
	typ, body, err := newRecReader(c).next()
	switch {
	case err != nil:
		return err
	case typ == recOK:
		return nil
	case typ == recError:
		return decodePeerError("receiver", body)
	}
	return errors.New("arbor: transfer: unexpected record from the receiver")
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestPullHostileManifest: a tree whose files all arrive intact but
// whose names or link targets changed on the way (the end record's check
// is of the manifest the sender listed) is refused with ErrChecksum,
// saying what did not match, not as a count that differs when the counts
// agree.
func TestPullHostileManifest(t *testing.T) {
	rm, setSender := hostileNode(t)
	for _, tc := range []struct {
		name   string
		sender func(f *forge)
	}{
		{"symlink target", func(f *forge) {
			f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
			f.dirEntry(".", 0o755)
			f.file("a", 0o644, 5, []byte("hello"))
			// Sent as "b", listed by the sender as "a".
			f.rw.writeCBOR(recEntry, entryRec{Path: "l", Type: typeSymlink, Mode: 0o777, Target: "b"})
			f.manifest.Write([]byte("l\x00a"))
			f.end()
		}},
		{"file name", func(f *forge) {
			f.begin(beginRec{Base: "t", Dir: true, Files: 1, Bytes: 5})
			f.dirEntry(".", 0o755)
			f.manifest.Write([]byte("b\x00"))
			f.file("a", 0o644, 5, []byte("hello"))
			f.end()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			setSender(tc.sender)
			_, err := Pull(ctxPatience(t), rm, "/srv/t", s.dest, Options{Recursive: true})
			if !errors.Is(err, ErrChecksum) || strings.Contains(err.Error(), "files, 5 bytes; received 1 files, 5 bytes") {
				t.Errorf("got %v, want ErrChecksum about the names", err)
			}
			t.Logf("error: %v", err)
			s.untouched(t)
		})
	}
}
