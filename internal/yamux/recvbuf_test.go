// Added by the Arbor project (see ARBOR-PATCHES.md); MPL-2.0 like the rest
// of this package.

package yamux

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
	"time"
)

// TestRecvBuffer appends frames of random sizes (across chunk boundaries,
// many chunks deep) and reads them back in reads of random sizes,
// interleaved, against a plain copy of the stream.
func TestRecvBuffer(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	src := make([]byte, 8<<20)
	rng.Read(src)
	var b recvBuffer
	in, out := 0, 0
	got := make([]byte, 0, len(src))
	p := make([]byte, 3*recvChunkSize)
	for out < len(src) {
		if in < len(src) && (rng.Intn(2) == 0 || b.Len() == 0) {
			n := minInt(len(src)-in, 1+rng.Intn(4*recvChunkSize))
			if rng.Intn(4) == 0 {
				n = minInt(len(src)-in, 1+rng.Intn(16))
			}
			k, err := b.readFrom(bytes.NewReader(src[in:in+n]), n)
			if err != nil || k != n {
				t.Fatalf("readFrom(%d) = %d, %v", n, k, err)
			}
			in += n
		}
		if b.Len() != in-out {
			t.Fatalf("Len() = %d, want %d", b.Len(), in-out)
		}
		k := b.Read(p[:1+rng.Intn(len(p)-1)])
		got = append(got, p[:k]...)
		out += k
	}
	if !bytes.Equal(got, src) {
		t.Fatal("bytes read back differ from those written")
	}
	if b.Len() != 0 || len(b.chunks) != 0 {
		t.Fatalf("drained buffer holds %d bytes in %d chunks, want none", b.Len(), len(b.chunks))
	}
}

// TestRecvBufferShortFrame: a connection that ends inside a frame reports
// its error with the bytes that did arrive, which stay readable.
func TestRecvBufferShortFrame(t *testing.T) {
	var b recvBuffer
	k, err := b.readFrom(bytes.NewReader([]byte("abc")), 10)
	if k != 3 || err != io.ErrUnexpectedEOF {
		t.Fatalf("readFrom = %d, %v; want 3, unexpected EOF", k, err)
	}
	p := make([]byte, 10)
	if n := b.Read(p); n != 3 || string(p[:n]) != "abc" {
		t.Fatalf("Read = %q", p[:n])
	}
}

// TestStreamWriteTo: io.Copy from a stream uses WriteTo, which hands the
// receive buffer's bytes to the writer in place: every byte arrives, in
// order, through a slow writer as through a fast one, and EOF ends it.
func TestStreamWriteTo(t *testing.T) {
	c1, c2 := testConnPipe(t)
	client, server := testClientServerConfig(t, c1, c2, testConf(), testConf())
	data := make([]byte, 3<<20+17)
	rand.New(rand.NewSource(2)).Read(data)
	for _, slow := range []bool{false, true} {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			st.Write(data)
			st.Close()
		}()
		in, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		var w io.Writer = &got
		if slow {
			w = &trickle{w: &got}
		}
		n, err := io.Copy(w, in)
		if err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("slow=%v: io.Copy = %d, %v; bytes equal: %v", slow, n, err, bytes.Equal(got.Bytes(), data))
		}
		in.Close()
	}
}

// trickle is a slow writer: the sender gets chunks ahead of it.
type trickle struct{ w io.Writer }

func (t *trickle) Write(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return t.w.Write(p)
}

// TestStreamWriteToErrors: WriteTo returns the writer's error, honours
// the read deadline as Read does, and returns when the session ends.
func TestStreamWriteToErrors(t *testing.T) {
	c1, c2 := testConnPipe(t)
	client, server := testClientServerConfig(t, c1, c2, testConf(), testConf())
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("hello"))
	in, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := in.WriteTo(failWriter{boom}); err != boom {
		t.Fatalf("WriteTo with a failing writer = %v, want %v", err, boom)
	}
	in.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := in.WriteTo(io.Discard); err != ErrTimeout || n != 5 {
		t.Fatalf("WriteTo past its deadline = %d, %v; want 5, %v", n, err, ErrTimeout)
	}
	in.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := in.WriteTo(io.Discard)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	client.Close()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("WriteTo did not return after the session ended")
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }
