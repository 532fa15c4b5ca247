// Added by the Arbor project (see ARBOR-PATCHES.md); MPL-2.0 like the rest
// of this package.

package yamux

import (
	"bytes"
	"io"
	"math/rand"
	"testing"
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
	if b.Len() != 0 || len(b.chunks) != 1 {
		t.Fatalf("drained buffer holds %d bytes in %d chunks, want 0 in 1 (kept for the next frame)", b.Len(), len(b.chunks))
	}
	b.free()
	if b.Len() != 0 || b.chunks != nil {
		t.Fatal("free left chunks behind")
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
