// Added by the Arbor project (see ARBOR-PATCHES.md); MPL-2.0 like the rest
// of this package.

package yamux

import (
	"io"
	"sync"
)

// recvChunkSize is the size of the pieces a stream's received bytes are
// held in.
const recvChunkSize = 64 << 10

var recvChunkPool = sync.Pool{New: func() any {
	b := make([]byte, recvChunkSize)
	return &b
}}

// recvBuffer holds the bytes a stream has received and its reader has not
// read yet, in fixed chunks from a pool. Unlike the bytes.Buffer it
// replaces, it never grows by reallocating and clearing, nor slides what it
// holds: a stream whose reader lags a full window behind (a relaying node
// whose next hop is slower) cost a multi-MiB allocation, clear and copy
// every few frames. Each byte is copied once in (from the connection) and
// once out. It is guarded by the stream's recvLock.
type recvBuffer struct {
	chunks []*[]byte
	r      int // read offset in chunks[0]
	w      int // write offset in the last chunk
	n      int // unread bytes
}

// Len is how many bytes wait to be read.
func (b *recvBuffer) Len() int { return b.n }

// readFrom reads exactly n bytes from r into the buffer.
func (b *recvBuffer) readFrom(r io.Reader, n int) (int, error) {
	read := 0
	for read < n {
		if len(b.chunks) == 0 || b.w == recvChunkSize {
			b.chunks = append(b.chunks, recvChunkPool.Get().(*[]byte))
			b.w = 0
		}
		c := *b.chunks[len(b.chunks)-1]
		k, err := io.ReadFull(r, c[b.w:b.w+minInt(recvChunkSize-b.w, n-read)])
		b.w += k
		b.n += k
		read += k
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// take returns the first contiguous run of waiting bytes, which stay in
// the buffer until consumed. The receive loop may append while the caller
// uses them: it writes only past them.
func (b *recvBuffer) take() []byte {
	if b.n == 0 {
		return nil
	}
	return (*b.chunks[0])[b.r:b.end()]
}

// consumed marks the first k bytes, from take, as read.
func (b *recvBuffer) consumed(k int) {
	b.r += k
	b.n -= k
	if b.r == b.end() {
		b.drop()
	}
}

// end is where the bytes of the first chunk end.
func (b *recvBuffer) end() int {
	if len(b.chunks) == 1 {
		return b.w
	}
	return recvChunkSize
}

// Read copies waiting bytes into p.
func (b *recvBuffer) Read(p []byte) int {
	done := 0
	for done < len(p) && b.n > 0 {
		k := copy(p[done:], b.take())
		b.consumed(k)
		done += k
	}
	return done
}

// drop returns the first chunk, read to its end, to the pool: a stream
// with nothing waiting holds no chunk.
func (b *recvBuffer) drop() {
	recvChunkPool.Put(b.chunks[0])
	b.chunks[0] = nil
	b.chunks = b.chunks[1:]
	b.r = 0
	if len(b.chunks) == 0 {
		b.chunks, b.w = nil, 0
	}
}

// free returns every chunk to the pool; the buffer must hold nothing
// anyone will read.
func (b *recvBuffer) free() {
	for i, c := range b.chunks {
		recvChunkPool.Put(c)
		b.chunks[i] = nil
	}
	*b = recvBuffer{}
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}
