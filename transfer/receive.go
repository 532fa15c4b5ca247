package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
	"golang.org/x/sys/unix"
)

// ErrEscape matches an entry refused because it would land outside the
// destination: a path with "..", an absolute path, or one that goes
// through a symlink.
var ErrEscape = errors.New("arbor: path escapes the destination")

// Receive reads a transfer from c into dest and answers the sender. dest
// follows scp: an existing directory receives the source under its own
// name; otherwise dest is the new file's (or tree's) name. Every file is
// written to a temporary name beside its destination and renamed into
// place only after its SHA-256 matches the sender's; a failure removes the
// file being written.
func Receive(ctx context.Context, c Conn, dest string, o Options) (Summary, error) {
	start := time.Now()
	stop := context.AfterFunc(ctx, c.Abort)
	defer stop()
	rc := &receiver{o: o, rr: newRecReader(c)}
	sum, err := rc.run(dest)
	rc.cleanup()
	rw := newRecWriter(c)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		var pe *peerError
		if !errors.As(err, &pe) && !errors.Is(err, errCutShort) {
			_ = rw.writeCBOR(recError, err.Error())
			_ = rw.flush()
		}
		c.Abort()
		return sum, err
	}
	sum.Seconds = time.Since(start).Seconds()
	if err := rw.writeCBOR(recOK, sum); err != nil {
		return sum, &errs.Kind{Kind: errCutShort, Cause: err}
	}
	if err := rw.flush(); err != nil {
		return sum, &errs.Kind{Kind: errCutShort, Cause: err}
	}
	_ = c.CloseWrite()
	return sum, nil
}

type receiver struct {
	o    Options
	rr   *recReader
	root string
	tmp  string // the file being written, removed on failure
	dirs []dirTimes
	free chan []byte // data buffers, shared by the files of one transfer
}

type dirTimes struct {
	path string
	e    entryRec
}

func (rc *receiver) cleanup() {
	if rc.tmp != "" {
		os.Remove(rc.tmp)
		rc.tmp = ""
	}
}

func (rc *receiver) run(dest string) (Summary, error) {
	var sum Summary
	typ, body, err := rc.rr.next()
	if err != nil {
		return sum, err
	}
	if typ == recError {
		return sum, decodePeerError("sender", body)
	}
	var b beginRec
	if typ != recBegin {
		return sum, fmt.Errorf("arbor: transfer: expected a begin record, got %q", typ)
	}
	if err := wire.Unmarshal(body, &b); err != nil {
		return sum, fmt.Errorf("%w (transfer: begin record)", err)
	}
	if err := rc.resolveRoot(dest, b); err != nil {
		return sum, local(err)
	}
	prog := Progress{TotalBytes: b.Bytes, TotalFiles: b.Files}
	manifest := sha256.New()
	var fileSum []byte
	for {
		typ, body, err := rc.rr.next()
		if err != nil {
			return sum, err
		}
		switch typ {
		case recError:
			return sum, decodePeerError("sender", body)
		case recEnd:
			var e endRec
			if err := wire.Unmarshal(body, &e); err != nil {
				return sum, fmt.Errorf("%w (transfer: end record)", err)
			}
			digest := manifest.Sum(nil)
			if !b.Dir {
				digest = fileSum
			}
			if e.Files != sum.Files || e.Bytes != sum.Bytes || !bytes.Equal(e.Digest, digest) {
				return sum, fmt.Errorf("arbor: transfer: sender reports %d files, %d bytes; received %d files, %d bytes",
					e.Files, e.Bytes, sum.Files, sum.Bytes)
			}
			if err := rc.finishDirs(); err != nil {
				return sum, local(err)
			}
			sum.SHA256 = hex.EncodeToString(digest)
			return sum, nil
		case recEntry:
		default:
			return sum, fmt.Errorf("arbor: transfer: unexpected record %q", typ)
		}
		var e entryRec
		if err := wire.Unmarshal(body, &e); err != nil {
			return sum, fmt.Errorf("%w (transfer: entry record)", err)
		}
		if !b.Dir && (e.Path != "." || e.Type != typeFile) {
			return sum, fmt.Errorf("arbor: transfer: single-file transfer sent entry %q", e.Path)
		}
		target, err := rc.target(e.Path)
		if err != nil {
			return sum, err
		}
		manifest.Write([]byte(e.Path))
		manifest.Write([]byte{0})
		switch e.Type {
		case typeDir:
			if err := rc.mkdir(target, e); err != nil {
				return sum, local(err)
			}
		case typeSymlink:
			manifest.Write([]byte(e.Target))
			if err := rc.symlink(target, e); err != nil {
				return sum, local(err)
			}
		case typeFile:
			h, n, err := rc.file(target, e, &prog)
			if err != nil {
				return sum, err
			}
			manifest.Write(h)
			fileSum = h
			sum.Files++
			sum.Bytes += n
			prog.Files++
			if rc.o.Progress != nil {
				rc.o.Progress(prog)
			}
		default:
			return sum, fmt.Errorf("arbor: transfer: entry %q has unknown type %d", e.Path, e.Type)
		}
	}
}

// resolveRoot decides where the source lands (scp's rules).
func (rc *receiver) resolveRoot(dest string, b beginRec) error {
	if b.Base == "" || b.Base == "." || b.Base == ".." || strings.ContainsRune(b.Base, '/') {
		return fmt.Errorf("%w: source name %q", ErrEscape, b.Base)
	}
	dest = filepath.Clean(dest)
	fi, err := os.Stat(dest)
	switch {
	case err == nil && fi.IsDir():
		rc.root = filepath.Join(dest, b.Base)
	case err == nil && b.Dir:
		return fmt.Errorf("destination %s exists and is not a directory", dest)
	case err == nil:
		rc.root = dest
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(dest)
		pfi, perr := os.Stat(parent)
		if perr != nil || !pfi.IsDir() {
			return fmt.Errorf("destination directory %s does not exist", parent)
		}
		rc.root = dest
	default:
		return fmt.Errorf("destination %s: %w", dest, unwrapPath(err))
	}
	if b.Dir {
		// Never write through a symlink under the name the tree gets.
		if fi, err := os.Lstat(rc.root); err == nil && !fi.IsDir() {
			return fmt.Errorf("destination %s exists and is not a directory", rc.root)
		}
	} else if fi, err := os.Stat(rc.root); err == nil && fi.IsDir() {
		return fmt.Errorf("destination %s is a directory", rc.root)
	}
	return nil
}

// target maps an entry path to the file system, refusing anything that
// would leave the destination.
func (rc *receiver) target(p string) (string, error) {
	if p == "." {
		return rc.root, nil
	}
	parts := strings.Split(p, "/")
	for _, part := range parts {
		if part == "" || part == "." || part == ".." || strings.ContainsRune(part, 0) {
			return "", fmt.Errorf("%w: refusing entry %q", ErrEscape, p)
		}
	}
	cur := rc.root
	for _, part := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		switch {
		case err != nil:
			return "", fmt.Errorf("arbor: transfer: entry %q: parent %s: %w", p, cur, unwrapPath(err))
		case fi.Mode()&fs.ModeSymlink != 0:
			return "", fmt.Errorf("%w: refusing entry %q: %s is a symlink", ErrEscape, p, cur)
		case !fi.IsDir():
			return "", fmt.Errorf("arbor: transfer: entry %q: %s is not a directory", p, cur)
		}
	}
	return filepath.Join(rc.root, filepath.FromSlash(p)), nil
}

func (rc *receiver) mkdir(path string, e entryRec) error {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symlink", ErrEscape, path)
	case err == nil && !fi.IsDir():
		return fmt.Errorf("%s exists and is not a directory", path)
	case err != nil:
		if err := os.Mkdir(path, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", path, unwrapPath(err))
		}
	}
	rc.dirs = append(rc.dirs, dirTimes{path, e})
	return nil
}

// finishDirs sets directory modes and times last, deepest first: adding
// entries changed their times, and a read-only mode would have stopped them.
func (rc *receiver) finishDirs() error {
	for i := len(rc.dirs) - 1; i >= 0; i-- {
		d := rc.dirs[i]
		if err := syscall.Chmod(d.path, d.e.Mode); err != nil {
			return fmt.Errorf("chmod %s: %w", d.path, err)
		}
		if err := setTimes(d.path, d.e.MtimeNs, false); err != nil {
			return err
		}
	}
	return nil
}

func (rc *receiver) symlink(path string, e entryRec) error {
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%s exists and is a directory", path)
	}
	tmp, err := tempName(path)
	if err != nil {
		return err
	}
	if err := os.Symlink(e.Target, tmp); err != nil {
		return fmt.Errorf("creating symlink %s: %w", path, unwrapPath(err))
	}
	rc.tmp = tmp
	if err := setTimes(tmp, e.MtimeNs, true); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming into place %s: %w", path, unwrapPath(err))
	}
	rc.tmp = ""
	return nil
}

// file receives one file's data into a temporary file and renames it into
// place once its SHA-256 matches the sender's.
func (rc *receiver) file(path string, e entryRec, prog *Progress) ([]byte, int64, error) {
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		return nil, 0, local(fmt.Errorf("%s exists and is a directory", path))
	}
	tmp, err := tempName(path)
	if err != nil {
		return nil, 0, local(err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, 0, local(fmt.Errorf("creating %s: %w", path, unwrapPath(err)))
	}
	rc.tmp = tmp
	h, n, err := rc.fileData(f, path, prog)
	if err == nil && rc.o.Sync {
		if serr := f.Sync(); serr != nil {
			err = local(fmt.Errorf("writing %s: %w", path, unwrapPath(serr)))
		}
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = local(fmt.Errorf("writing %s: %w", path, unwrapPath(cerr)))
	}
	if err != nil {
		return nil, n, err
	}
	if err := syscall.Chmod(tmp, e.Mode); err != nil {
		return nil, n, local(fmt.Errorf("chmod %s: %w", path, err))
	}
	if err := setTimes(tmp, e.MtimeNs, false); err != nil {
		return nil, n, local(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, n, local(fmt.Errorf("renaming into place %s: %w", path, unwrapPath(err)))
	}
	rc.tmp = ""
	return h, n, nil
}

// fileData reads one file's records into f. A writer goroutine hashes
// and writes each chunk while the next is read from the channel.
func (rc *receiver) fileData(f *os.File, path string, prog *Progress) ([]byte, int64, error) {
	if rc.free == nil {
		rc.free = make(chan []byte, pipelineDepth)
		for i := 0; i < pipelineDepth; i++ {
			rc.free <- make([]byte, chunkSize)
		}
	}
	full := make(chan []byte, pipelineDepth)
	type result struct {
		sum []byte
		err error
	}
	written := make(chan result, 1)
	failed := make(chan struct{}) // closed on the writer's first error
	go func() {
		var h hash.Hash = sha256.New()
		var err error
		for b := range full {
			if err == nil {
				h.Write(b)
				if _, werr := f.Write(b); werr != nil {
					err = local(fmt.Errorf("writing %s: %w", path, unwrapPath(werr)))
					close(failed)
				}
			}
			rc.free <- b[:cap(b)]
		}
		written <- result{h.Sum(nil), err}
	}()
	var n int64
	finish := func() result {
		close(full)
		return <-written
	}
	for {
		typ, body, err := rc.rr.nextInto(func() []byte { return <-rc.free })
		if err != nil {
			finish()
			return nil, n, err
		}
		switch typ {
		case recData:
			select {
			case <-failed:
				full <- body
				res := finish()
				return nil, n, res.err
			default:
			}
			full <- body
			n += int64(len(body))
			prog.Bytes += int64(len(body))
			if rc.o.Progress != nil {
				rc.o.Progress(*prog)
			}
		case recSum:
			res := finish()
			if res.err != nil {
				return nil, n, res.err
			}
			if !bytes.Equal(body, res.sum) {
				return nil, n, fmt.Errorf("arbor: transfer: %s: SHA-256 mismatch: sender %x, received %x", path, body, res.sum)
			}
			return res.sum, n, nil
		case recError:
			finish()
			return nil, n, decodePeerError("sender", body)
		default:
			finish()
			return nil, n, fmt.Errorf("arbor: transfer: %s: unexpected record %q in file data", path, typ)
		}
	}
}

// tempName is a fresh hidden name beside path.
func tempName(path string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	base := filepath.Base(path)
	if len(base) > 200 {
		base = base[:200] // room for the suffix within NAME_MAX
	}
	return filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.arbor-%x.tmp", base, b)), nil
}

func setTimes(path string, mtimeNs int64, symlink bool) error {
	ts := []unix.Timespec{unix.NsecToTimespec(mtimeNs), unix.NsecToTimespec(mtimeNs)}
	flags := 0
	if symlink {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, flags); err != nil {
		return fmt.Errorf("setting times of %s: %w", path, err)
	}
	return nil
}
