package transfer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
)

// Conn is what a transfer runs over: a *router.Channel, or any byte
// stream with a half close and an abort.
type Conn interface {
	io.ReadWriter
	// CloseWrite sends EOF to the peer.
	CloseWrite() error
	// Abort ends both directions at once, unblocking reads and writes.
	Abort()
}

// Progress is how far a transfer has come.
type Progress struct {
	Bytes, TotalBytes int64
	Files, TotalFiles int64
}

// Options tune a transfer.
type Options struct {
	// Recursive copies directory trees; without it a directory source is
	// refused.
	Recursive bool
	// Sync fsyncs every file before it is renamed into place.
	Sync bool
	// PreserveSpecial keeps the setuid, setgid and sticky bits of what is
	// received; without it modes are masked to 0777. (fs.recv, whose
	// sender is the node's own root, always keeps them.)
	PreserveSpecial bool
	// Progress, when set, is called on the local end after every chunk.
	// It must be quick.
	Progress func(Progress)
	// SkipSHA256 leaves Summary.SHA256 empty, and spares this end
	// hashing every byte with SHA-256 (a core for every 1.8 GB/s with
	// SHA-NI). The integrity check does not depend on it: it is the
	// CRC-32C and CRC-32 both ends compute (see the package doc). The
	// node's side of Push and Pull always skips it.
	SkipSHA256 bool
}

// Summary describes a finished transfer.
type Summary struct {
	Files int64 `cbor:"files" json:"files"`
	Bytes int64 `cbor:"bytes" json:"bytes"`
	// Skipped counts special files (devices, sockets, FIFOs) left out.
	Skipped int64   `cbor:"skipped,omitempty" json:"skipped,omitempty"`
	Seconds float64 `cbor:"seconds" json:"seconds"`
	// SHA256 is the file's SHA-256 as this end read or wrote it, for a
	// single file. For a tree it is the SHA-256 of its manifest: for
	// every entry in order, its path, a zero byte, and the file's SHA-256
	// or the symlink's target. It is empty with Options.SkipSHA256.
	SHA256 string `cbor:"sha256" json:"sha256"`
}

// Plan is a source checked and listed before anything is sent.
type Plan struct {
	root    string
	begin   beginRec
	entries []planned
	skipped int64
}

type planned struct {
	rec   entryRec
	local string
}

// NewPlan lists what sending src copies. A directory needs recursive. It
// fails, naming the path, when src is missing or unreadable.
func NewPlan(src string, recursive bool) (*Plan, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return nil, local(fmt.Errorf("source %s: %w", src, err))
	}
	// The source itself is followed if it is a symlink: the user named it.
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, local(fmt.Errorf("source %s: %w", src, unwrapPath(err)))
	}
	p := &Plan{root: abs, begin: beginRec{Base: filepath.Base(abs)}}
	if p.begin.Base == "/" || p.begin.Base == "." {
		return nil, local(fmt.Errorf("source %s: cannot copy the file system root", src))
	}
	switch {
	case fi.Mode().IsRegular():
		if f, err := os.Open(abs); err != nil {
			return nil, local(fmt.Errorf("source %s: %w", src, unwrapPath(err)))
		} else {
			f.Close()
		}
		p.add(".", abs, fi, "")
		return p, nil
	case fi.IsDir():
		if !recursive {
			return nil, local(fmt.Errorf("source %s is a directory (use -r)", src))
		}
	default:
		return nil, local(fmt.Errorf("source %s is not a regular file or directory", src))
	}
	p.begin.Dir = true
	p.add(".", abs, fi, "")
	err = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == abs {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(abs, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case info.Mode().IsRegular(), info.IsDir():
			p.add(rel, path, info, "")
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			p.add(rel, path, info, target)
		default:
			p.skipped++
		}
		return nil
	})
	if err != nil {
		return nil, local(fmt.Errorf("source %s: %w", src, err))
	}
	return p, nil
}

func (p *Plan) add(rel, path string, fi fs.FileInfo, target string) {
	e := entryRec{Path: rel, Mode: modeBits(fi), MtimeNs: fi.ModTime().UnixNano()}
	switch {
	case fi.Mode().IsRegular():
		e.Type, e.Size = typeFile, fi.Size()
		p.begin.Files++
		p.begin.Bytes += fi.Size()
	case fi.IsDir():
		e.Type = typeDir
	default:
		e.Type, e.Target = typeSymlink, target
	}
	p.entries = append(p.entries, planned{rec: e, local: path})
}

// Totals are the files and bytes the plan sends.
func (p *Plan) Totals() (files, bytes int64) { return p.begin.Files, p.begin.Bytes }

func modeBits(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Mode & 07777
	}
	return uint32(fi.Mode().Perm())
}

// unwrapPath drops the *fs.PathError wrapper, whose path the caller names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Send sends p over c and waits for the receiver's verdict. It returns the
// receiver's error when it reported one, errCutShort-wrapped errors when
// the channel ended early, and local errors (IsLocal) for its own reads.
func Send(ctx context.Context, c Conn, p *Plan, o Options) (Summary, error) {
	start := time.Now()
	reply := make(chan error, 1)
	go func() {
		err := readVerdict(c)
		if err != nil {
			c.Abort() // unblock our writes: the receiver is gone or failed
		}
		reply <- err
	}()
	sum, err := sendAll(ctx, c, p, o)
	if err != nil {
		if !IsLocal(err) {
			// The channel failed under us; the receiver's own word, if it
			// sent one, says more.
			select {
			case rerr := <-reply:
				if rerr != nil && !errors.Is(rerr, errCutShort) {
					err = rerr
				}
				return sum, err
			case <-time.After(verdictGrace):
			}
		}
		c.Abort()
		<-reply
		return sum, err
	}
	select {
	case err = <-reply:
	case <-ctx.Done():
		c.Abort()
		<-reply
		err = ctx.Err()
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, err
}

// readVerdict reads the receiver's answer: 'v', then 'k' or 'x'. A
// version 1 receiver answers 'x' (it refuses the 'v' that starts this
// stream) without a 'v' of its own.
func readVerdict(c Conn) error {
	rr := newRecReader(c)
	typ, body, err := rr.next()
	switch {
	case err != nil:
		return err
	case typ == recError || typ == recOK:
		said := "a bare 'k'"
		if typ == recError {
			said = strings.TrimPrefix(peerMessage(body), errs.Prefix)
		}
		return fmt.Errorf("%w: the receiver speaks version 1, this end version %d; run the same Arbor release at both ends (the receiver answered: %s)",
			ErrVersion, Version, said)
	case typ != recVersion:
		return fmt.Errorf("arbor: transfer: unexpected record %q from the receiver", typ)
	}
	if err := checkVersion("receiver", body); err != nil {
		return err
	}
	typ, body, err = rr.next()
	switch {
	case err != nil:
		return err
	case typ == recOK:
		return nil
	case typ == recError:
		return decodePeerError("receiver", body)
	}
	return fmt.Errorf("arbor: transfer: unexpected record %q from the receiver", typ)
}

func sendAll(ctx context.Context, c Conn, p *Plan, o Options) (Summary, error) {
	rw := newRecWriter(c)
	fail := func(err error) error {
		// Tell the receiver why, so it does not report a mere cut.
		if IsLocal(err) {
			_ = rw.writeCBOR(recError, err.Error())
			_ = rw.flush()
		}
		return err
	}
	if err := rw.write(recVersion, versionRecord); err != nil {
		return Summary{}, err
	}
	if err := rw.writeCBOR(recBegin, p.begin); err != nil {
		return Summary{}, err
	}
	sum := Summary{Skipped: p.skipped}
	man := newManifest(o)
	var fileSums sums
	prog := Progress{TotalBytes: p.begin.Bytes, TotalFiles: p.begin.Files}
	for _, e := range p.entries {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		if err := rw.writeCBOR(recEntry, e.rec); err != nil {
			return sum, err
		}
		man.entry(e.rec.Path)
		switch e.rec.Type {
		case typeSymlink:
			man.target(e.rec.Target)
			continue
		case typeDir:
			continue
		}
		h, n, err := sendFile(rw, e.local, e.rec.Size, o, func(n int64) {
			prog.Bytes += n
			if o.Progress != nil {
				o.Progress(prog)
			}
		})
		if err != nil {
			return sum, fail(err)
		}
		if err := rw.write(recSum, h.check); err != nil {
			return sum, err
		}
		man.file(h)
		fileSums = h
		sum.Files++
		sum.Bytes += n
		prog.Files++
		if o.Progress != nil {
			o.Progress(prog)
		}
	}
	digest := man.sums()
	if !p.begin.Dir {
		digest = fileSums
	}
	if digest.sha != nil {
		sum.SHA256 = hex.EncodeToString(digest.sha)
	}
	if err := rw.writeCBOR(recEnd, endRec{Files: sum.Files, Bytes: sum.Bytes, Digest: digest.check}); err != nil {
		return sum, err
	}
	if err := rw.flush(); err != nil {
		return sum, err
	}
	return sum, c.CloseWrite()
}

// sendFile streams the first size bytes of one file (the size its entry
// declared: the receiver refuses more or less) as 'd' records and returns
// their sums. A file that grew since it was listed is sent as it was
// then long; one that shrank is a local error. A reader goroutine reads
// and sums the next chunks while this one sends, so disk, sums and
// channel overlap; pipelineDepth bounds the chunks in flight.
func sendFile(rw *recWriter, path string, size int64, o Options, progress func(int64)) (sums, int64, error) {
	file, err := os.Open(path)
	if err != nil {
		return sums{}, 0, local(fmt.Errorf("source %s: %w", path, unwrapPath(err)))
	}
	defer file.Close()
	f := io.LimitReader(file, size)
	type chunk struct {
		rec []byte // header space, then data
		err error
		sum *sums // set on the last message
	}
	free := make(chan []byte, pipelineDepth)
	for i := 0; i < pipelineDepth; i++ {
		free <- make([]byte, recHeader+chunkSize)
	}
	full := make(chan chunk, pipelineDepth+1) // the chunks, then one last message: sends never block
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		h := newDigests(o)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			n, err := io.ReadFull(f, buf[recHeader:])
			if n > 0 {
				h.write(buf[recHeader : recHeader+n])
				full <- chunk{rec: buf[:recHeader+n]}
			}
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				s := h.sums()
				full <- chunk{sum: &s}
				return
			case err != nil:
				full <- chunk{err: local(fmt.Errorf("reading %s: %w", path, unwrapPath(err)))}
				return
			}
		}
	}()
	var total int64
	for c := range full {
		switch {
		case c.err != nil:
			return sums{}, total, c.err
		case c.sum != nil && total < size:
			return sums{}, total, local(fmt.Errorf("arbor: source %s: shrank from %d to %d bytes while it was sent", path, size, total))
		case c.sum != nil:
			return *c.sum, total, nil
		}
		if err := rw.writeFramed(recData, c.rec); err != nil {
			return sums{}, total, err
		}
		n := int64(len(c.rec) - recHeader)
		total += n
		progress(n)
		free <- c.rec[:cap(c.rec)]
	}
	return sums{}, total, errors.New("arbor: transfer: internal: reader ended")
}

// pipelineDepth is the chunks a file's reader or writer may hold ahead.
const pipelineDepth = 4
