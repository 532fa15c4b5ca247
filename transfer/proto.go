package transfer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
)

// The transfer stream (documented in stream/PROTOCOL.md, section 11.3) is
// a sequence of records: one type byte, a 4-byte big-endian body length,
// the body. The sender writes
//
//	'v' version (1 byte: 2)
//	'b' begin   CBOR begin
//	per entry:  'h' CBOR entry; for a file: 'd' data... then 's' check (8 bytes)
//	'e' end     CBOR end
//
// or 'x' (CBOR text) at any point when it fails, also in place of 'v'.
// The receiver answers on the other direction with 'v' and then one
// record: 'k' (CBOR Summary) once every file is in place, or 'x' with its
// error. A stream that ends before 'e' was cut short: nothing of the file
// being written is left under its real name.
//
// The check (see check) is the CRC-32C and the CRC-32 of a file's bytes;
// version 1 sent a SHA-256 in 's' and no 'v' records. Each end tells a
// version 1 peer by its first record (a sender's 'b', a receiver's 'k' or
// 'x') and fails with ErrVersion; a receiver answers a version 1 sender
// with a lone 'x', which version 1 reads, so either end of a mixed pair
// says what is wrong. A version 1 end refuses a version 2 stream at its
// first record.
//
// The receiver trusts nothing the stream says (see receive): the first
// entry is the root ".", a file or (with -r) a directory as the begin
// record says, never a symlink, and no entry after it is "." again; a
// file's 'd' records (each at most chunkSize) add up to exactly its
// entry's size, sizes and files stay within the begin record's totals and
// match them at the end; modes keep 0777 only, unless asked otherwise. A
// sender sends the first size bytes of a file, its size when listed.
const (
	recVersion = 'v'
	recBegin   = 'b'
	recEntry   = 'h'
	recData    = 'd'
	recSum     = 's'
	recEnd     = 'e'
	recError   = 'x'
	recOK      = 'k'
)

// Version is the transfer protocol's version, carried in 'v' records.
const Version = 2

const (
	// chunkSize is the data carried per 'd' record.
	chunkSize = 256 << 10
	// maxRecord bounds a record body a reader accepts.
	maxRecord = 1 << 20
	recHeader = 5
)

// Entry types.
const (
	typeFile    uint8 = 1
	typeDir     uint8 = 2
	typeSymlink uint8 = 3
)

type beginRec struct {
	Base  string `cbor:"1,keyasint"` // the source's base name
	Dir   bool   `cbor:"2,keyasint,omitempty"`
	Files int64  `cbor:"3,keyasint,omitempty"` // regular files to come
	Bytes int64  `cbor:"4,keyasint,omitempty"` // their total size
}

type entryRec struct {
	Path    string `cbor:"1,keyasint"` // slash-separated, relative to the transfer root; "." is the root
	Type    uint8  `cbor:"2,keyasint"`
	Mode    uint32 `cbor:"3,keyasint"` // permission bits with setuid, setgid, sticky (07777)
	MtimeNs int64  `cbor:"4,keyasint"`
	Size    int64  `cbor:"5,keyasint,omitempty"`
	Target  string `cbor:"6,keyasint,omitempty"` // a symlink's target
}

type endRec struct {
	Files  int64  `cbor:"1,keyasint,omitempty"`
	Bytes  int64  `cbor:"2,keyasint,omitempty"`
	Digest []byte `cbor:"3,keyasint"` // the file's check, or the manifest's (see Summary.Checksum)
}

// Errors a receiver refuses a sender's stream with. Each is matched with
// errors.Is and wrapped with the entry and local path it is about.
var (
	// ErrEscape matches an entry refused because it would land outside
	// the destination: a path with "..", an absolute path, one that goes
	// through a symlink, or a source name that is not a plain name.
	ErrEscape = errors.New("arbor: path escapes the destination")
	// ErrWrongKind matches a stream whose root is not what was asked
	// for: a directory where a file was asked for (no -r), a symlink
	// root, a root entry that is missing, comes twice or disagrees with
	// the begin record, or a second entry in a single-file transfer.
	ErrWrongKind = errors.New("arbor: transfer: the sender sent another kind of source than was asked for")
	// ErrSize matches a file whose data is longer or shorter than the
	// size its entry declared, or entries whose sizes and count exceed
	// the totals of the begin record.
	ErrSize = errors.New("arbor: transfer: the sender sent another size than it declared")
	// ErrChecksum matches a file whose bytes, as received, do not have
	// the check the sender computed as it read them: they were changed on
	// the way (see check). It matches a tree whose entries' paths or
	// symlink targets, as received, do not have the check of the
	// sender's listing (the end record's) too.
	ErrChecksum = errors.New("arbor: transfer: checksum mismatch")
	// ErrVersion matches a peer that speaks another version of the
	// transfer protocol (an agent of another Arbor release).
	ErrVersion = errors.New("arbor: transfer: the two ends speak different transfer versions")
)

// versionRecord is the body of a 'v' record.
var versionRecord = []byte{Version}

// checkVersion checks the body of the peer's 'v' record; role names the
// peer ("sender" or "receiver").
func checkVersion(role string, body []byte) error {
	if len(body) != 1 {
		return fmt.Errorf("arbor: transfer: version record of %d bytes from the %s", len(body), role)
	}
	if body[0] != Version {
		return fmt.Errorf("%w: the %s speaks version %d, this end version %d; run the same Arbor release at both ends",
			ErrVersion, role, body[0], Version)
	}
	return nil
}

// errCutShort: the channel ended before the protocol said it was done.
var errCutShort = errors.New("arbor: transfer cut short: channel closed before the end")

type recWriter struct {
	raw io.Writer
	w   *bufio.Writer
	hdr [recHeader]byte
}

func newRecWriter(w io.Writer) *recWriter {
	return &recWriter{raw: w, w: bufio.NewWriterSize(w, 64<<10)}
}

// writeFramed writes a record whose body is rec[recHeader:], filling in
// its header in place: data goes to the channel in one write, uncopied.
func (rw *recWriter) writeFramed(typ byte, rec []byte) error {
	if err := rw.w.Flush(); err != nil {
		return err
	}
	rec[0] = typ
	binary.BigEndian.PutUint32(rec[1:recHeader], uint32(len(rec)-recHeader))
	_, err := rw.raw.Write(rec)
	return err
}

func (rw *recWriter) write(typ byte, body []byte) error {
	rw.hdr[0] = typ
	binary.BigEndian.PutUint32(rw.hdr[1:], uint32(len(body)))
	if _, err := rw.w.Write(rw.hdr[:]); err != nil {
		return err
	}
	_, err := rw.w.Write(body)
	return err
}

func (rw *recWriter) writeCBOR(typ byte, v any) error {
	b, err := wire.Marshal(v)
	if err != nil {
		return err
	}
	return rw.write(typ, b)
}

func (rw *recWriter) flush() error { return rw.w.Flush() }

type recReader struct {
	r   *bufio.Reader
	hdr [recHeader]byte
	buf []byte
}

func newRecReader(r io.Reader) *recReader {
	// Smaller than a data record: most of a record's body is read
	// straight into its buffer, past bufio.
	return &recReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next reads one record. The body is valid until the next call. EOF
// anywhere is errCutShort: every stream ends with an explicit record.
func (rr *recReader) next() (byte, []byte, error) {
	if _, err := io.ReadFull(rr.r, rr.hdr[:]); err != nil {
		return 0, nil, cutShort(err)
	}
	n := binary.BigEndian.Uint32(rr.hdr[1:])
	if n > maxRecord {
		return 0, nil, fmt.Errorf("arbor: transfer: record of %d bytes exceeds %d", n, maxRecord)
	}
	if cap(rr.buf) < int(n) {
		rr.buf = make([]byte, n, max(int(n), chunkSize))
	}
	body := rr.buf[:n]
	if _, err := io.ReadFull(rr.r, body); err != nil {
		return 0, nil, cutShort(err)
	}
	return rr.hdr[0], body, nil
}

// nextInto is next, with a data record's body read into a buffer from
// get instead of the reader's own (so it can be handed to another
// goroutine).
func (rr *recReader) nextInto(get func() []byte) (byte, []byte, error) {
	if _, err := io.ReadFull(rr.r, rr.hdr[:]); err != nil {
		return 0, nil, cutShort(err)
	}
	n := binary.BigEndian.Uint32(rr.hdr[1:])
	if n > maxRecord {
		return 0, nil, fmt.Errorf("arbor: transfer: record of %d bytes exceeds %d", n, maxRecord)
	}
	var body []byte
	if rr.hdr[0] == recData {
		// A data record's buffer goes to the writer goroutine and back
		// to the pool: it must be a pool buffer, never the reader's own.
		if n > chunkSize {
			return 0, nil, fmt.Errorf("arbor: transfer: data record of %d bytes exceeds %d", n, chunkSize)
		}
		body = get()[:n]
	} else {
		if cap(rr.buf) < int(n) {
			rr.buf = make([]byte, n)
		}
		body = rr.buf[:n]
	}
	if _, err := io.ReadFull(rr.r, body); err != nil {
		return 0, nil, cutShort(err)
	}
	return rr.hdr[0], body, nil
}

func cutShort(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errCutShort
	}
	return &errs.Kind{Kind: errCutShort, Cause: err}
}

// peerError is the error the other end reported in an 'x' record.
type peerError struct {
	role string // "sender" or "receiver"
	msg  string
}

// Error is a leaf of this node: the peer's words follow its prefix, which
// they do not repeat.
func (e *peerError) Error() string {
	return errs.Prefix + e.role + ": " + strings.TrimPrefix(e.msg, errs.Prefix)
}

func decodePeerError(role string, body []byte) error {
	return &peerError{role: role, msg: peerMessage(body)}
}

// peerMessage is the text of an 'x' record.
func peerMessage(body []byte) string {
	var msg string
	if err := wire.Unmarshal(body, &msg); err != nil {
		msg = "undecodable error record: " + err.Error()
	}
	return msg
}

// localError marks a failure of this end's own file system work (a missing
// source, an unwritable destination, a full disk), as opposed to the
// channel or the other end failing.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func local(err error) error {
	if err == nil {
		return nil
	}
	var le *localError
	if errors.As(err, &le) {
		return err
	}
	return &localError{err}
}

// IsLocal reports whether err is a failure of this end's file system work
// rather than of the channel or the other end.
func IsLocal(err error) bool {
	var le *localError
	return errors.As(err, &le)
}
