package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
	"golang.org/x/sys/unix"
)

// Receive reads a transfer from c into dest and answers the sender. dest
// follows scp: an existing directory receives the source under the name
// the sender gives it; otherwise dest is the new file's (or tree's) name.
// It is the node side of fs.recv, whose sender is the node's own root;
// Pull names the copy itself (see receive). Every file is written to a
// temporary name beside its destination and renamed into place only after
// its size and check (CRC-32C and CRC-32) match the sender's; a failure
// removes the file being written and keeps what was already in place.
func Receive(ctx context.Context, c Conn, dest string, o Options) (Summary, error) {
	return receive(ctx, c, dest, sendersName, o)
}

// receive is Receive with the name the source gets in an existing
// destination directory decided by name. Whatever the sender sends:
//
//   - everything is created through an os.Root on the directory the
//     source lands in, and a tree's entries through one on the tree's
//     top directory, so no entry leaves it, even through a symlink the
//     sender made; entry paths with "..", "." or empty components,
//     absolute paths and entries below a symlink are refused (ErrEscape);
//   - the root entry "." comes first, once, and is what was asked for: a
//     file, or with o.Recursive a file or a directory as the begin record
//     says; a symlink root is never accepted, since a sender follows the
//     source it was asked for (ErrWrongKind);
//   - a file's data is exactly the size its entry declares, and the
//     entries' sizes and count stay within the begin record's totals,
//     which the end must match (ErrSize);
//   - modes are masked to 0777 (no setuid, setgid or sticky bit) unless
//     o.PreserveSpecial.
func receive(ctx context.Context, c Conn, dest string, name nameFunc, o Options) (Summary, error) {
	start := time.Now()
	stop := context.AfterFunc(ctx, c.Abort)
	defer stop()
	rc := &receiver{o: o, rr: newRecReader(c), name: name}
	sum, err := rc.run(dest)
	rc.close()
	rw := newRecWriter(c)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		var pe *peerError
		if !errors.As(err, &pe) && !errors.Is(err, errCutShort) {
			if !rc.v1 {
				_ = rw.write(recVersion, versionRecord)
			}
			_ = rw.writeCBOR(recError, err.Error())
			_ = rw.flush()
		}
		c.Abort()
		return sum, err
	}
	sum.Seconds = time.Since(start).Seconds()
	if err := rw.write(recVersion, versionRecord); err != nil {
		return sum, &errs.Kind{Kind: errCutShort, Cause: err}
	}
	if err := rw.writeCBOR(recOK, sum); err != nil {
		return sum, &errs.Kind{Kind: errCutShort, Cause: err}
	}
	if err := rw.flush(); err != nil {
		return sum, &errs.Kind{Kind: errCutShort, Cause: err}
	}
	_ = c.CloseWrite()
	return sum, nil
}

// nameFunc decides the name a source gets in an existing destination
// directory, given the begin record.
type nameFunc func(b beginRec) (string, error)

// sendersName is the name the sender gives its source, if it is a plain
// name.
func sendersName(b beginRec) (string, error) {
	if !plainName(b.Base) {
		return "", fmt.Errorf("%w: source name %q", ErrEscape, b.Base)
	}
	return b.Base, nil
}

// usersName names the copy after the last element of src, the source
// path the user typed, whatever the sender calls it: scp let the sender
// choose (CVE-2019-6111), and a sender could then write .bashrc where
// notes.txt was asked for.
func usersName(src string) nameFunc {
	name := path.Base(path.Clean(src))
	return func(beginRec) (string, error) {
		if !plainName(name) {
			return "", fmt.Errorf("arbor: source %q has no name of its own for the copy in an existing directory: give the local copy's name as the destination", src)
		}
		return name, nil
	}
}

func plainName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

type receiver struct {
	o    Options
	rr   *recReader
	name nameFunc

	dir   *os.Root // the directory the source lands in
	base  string   // the source's name in dir
	shown string   // dir/base, for messages
	tree  *os.Root // a tree's top directory, dir/base, once its entry came

	tmpAt *os.Root
	tmp   string // the file being written (beneath tmpAt), removed on failure
	dirs  []dirTimes
	free  chan []byte // data buffers, shared by the files of one transfer
	v1    bool        // the sender speaks version 1: answer with a lone 'x'
}

type dirTimes struct {
	rel string // beneath tree
	e   entryRec
}

// close removes the file being written, if any, and closes the roots.
func (rc *receiver) close() {
	if rc.tmp != "" {
		_ = rc.tmpAt.Remove(rc.tmp)
		rc.tmp = ""
	}
	if rc.tree != nil {
		rc.tree.Close()
	}
	if rc.dir != nil {
		rc.dir.Close()
	}
}

// show is the local path of rel, an entry's place beneath the tree (or,
// for a single file, its name in dir), for messages.
func (rc *receiver) show(rel string) string {
	if rc.tree == nil {
		return rc.shown
	}
	return filepath.Join(rc.shown, filepath.FromSlash(rel))
}

// totals are what the entries so far declared, checked against the begin
// record's.
type totals struct {
	entries, files, bytes int64
}

func (rc *receiver) run(dest string) (Summary, error) {
	var sum Summary
	typ, body, err := rc.rr.next()
	if err != nil {
		return sum, err
	}
	switch typ {
	case recError: // a sender of any version that failed before it began
		return sum, decodePeerError("sender", body)
	case recBegin:
		rc.v1 = true
		return sum, fmt.Errorf("%w: the sender speaks version 1 (a SHA-256 per file), this end version %d (CRC-32C and CRC-32); run the same Arbor release at both ends",
			ErrVersion, Version)
	case recVersion:
		if err := checkVersion("sender", body); err != nil {
			return sum, err
		}
	default:
		return sum, fmt.Errorf("arbor: transfer: expected a version record, got %q", typ)
	}
	if typ, body, err = rc.rr.next(); err != nil {
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
	if b.Files < 0 || b.Bytes < 0 {
		return sum, fmt.Errorf("%w: the begin record declares %d files, %d bytes", ErrSize, b.Files, b.Bytes)
	}
	if b.Dir && !rc.o.Recursive {
		return sum, fmt.Errorf("%w: a directory, but a file was asked for (no -r)", ErrWrongKind)
	}
	if err := rc.open(dest, b); err != nil {
		return sum, local(err)
	}
	prog := Progress{TotalBytes: b.Bytes, TotalFiles: b.Files}
	man := newManifest(rc.o)
	var fileSums sums
	var decl totals
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
			if decl.entries == 0 {
				return sum, fmt.Errorf("%w: the transfer ended without a root entry", ErrWrongKind)
			}
			digest := man.sums()
			if !b.Dir {
				digest = fileSums
			}
			if e.Files != sum.Files || e.Bytes != sum.Bytes {
				return sum, fmt.Errorf("arbor: transfer: sender reports %d files, %d bytes; received %d files, %d bytes",
					e.Files, e.Bytes, sum.Files, sum.Bytes)
			}
			if !bytes.Equal(e.Digest, digest.check) {
				// Every file matched its own check: what differs is the
				// listing (an entry's path or a symlink's target), or a
				// sender contradicting itself.
				what := "listing (paths and symlink targets)"
				if !b.Dir {
					what = "file, in its end record,"
				}
				return sum, fmt.Errorf("%w: the sender's check of the %s %x, as received %x",
					ErrChecksum, what, e.Digest, digest.check)
			}
			if sum.Files != b.Files || sum.Bytes != b.Bytes {
				return sum, fmt.Errorf("%w: %d files, %d bytes announced; %d files, %d bytes sent",
					ErrSize, b.Files, b.Bytes, sum.Files, sum.Bytes)
			}
			if err := rc.finishDirs(); err != nil {
				return sum, local(err)
			}
			if digest.sha != nil {
				sum.SHA256 = hex.EncodeToString(digest.sha)
			}
			return sum, nil
		case recEntry:
		default:
			return sum, fmt.Errorf("arbor: transfer: unexpected record %q", typ)
		}
		e, err := decodeEntry(body)
		if err != nil {
			return sum, err
		}
		if err := checkEntry(e, decl.entries, b.Dir); err != nil {
			return sum, err
		}
		decl.entries++
		root, rel, err := rc.place(e)
		if err != nil {
			return sum, err
		}
		if e.Type == typeFile {
			decl.files++
			if decl.files > b.Files || e.Size > b.Bytes-decl.bytes {
				return sum, fmt.Errorf("%w: entry %q (%d bytes) goes past the %d files, %d bytes announced",
					ErrSize, e.Path, e.Size, b.Files, b.Bytes)
			}
			decl.bytes += e.Size
		}
		man.entry(e.Path)
		switch e.Type {
		case typeDir:
			if rel != "." {
				if err := rc.mkdir(rel, e); err != nil {
					return sum, local(err)
				}
			}
		case typeSymlink:
			man.target(e.Target)
			if err := rc.symlink(rel, e); err != nil {
				return sum, local(err)
			}
		case typeFile:
			h, n, err := rc.file(root, rel, e, &prog)
			if err != nil {
				return sum, err
			}
			man.file(h)
			fileSums = h
			sum.Files++
			sum.Bytes += n
			prog.Files++
			if rc.o.Progress != nil {
				rc.o.Progress(prog)
			}
		}
	}
}

// decodeEntry decodes an entry record and checks what can be checked
// without the file system: a known type, a size that is not negative,
// and a path that is the root "." or stays beneath it.
func decodeEntry(body []byte) (entryRec, error) {
	var e entryRec
	if err := wire.Unmarshal(body, &e); err != nil {
		return e, fmt.Errorf("%w (transfer: entry record)", err)
	}
	switch e.Type {
	case typeFile, typeDir, typeSymlink:
	default:
		return e, fmt.Errorf("arbor: transfer: entry %q has unknown type %d", e.Path, e.Type)
	}
	if e.Size < 0 || (e.Type != typeFile && e.Size != 0) {
		return e, fmt.Errorf("%w: entry %q (%s) declares %d bytes", ErrSize, e.Path, typeName(e.Type), e.Size)
	}
	if e.Path == "." {
		return e, nil
	}
	for _, part := range strings.Split(e.Path, "/") {
		if part == "" || part == "." || part == ".." || strings.ContainsRune(part, 0) {
			return e, fmt.Errorf("%w: refusing entry %q", ErrEscape, e.Path)
		}
	}
	return e, nil
}

// checkEntry holds entry number i (from 0) to what was asked for: the
// root "." first and once, of the begin record's kind (dir), never a
// symlink; nothing after the root of a single file.
func checkEntry(e entryRec, i int64, dir bool) error {
	want := uint8(typeFile)
	if dir {
		want = typeDir
	}
	switch {
	case i == 0 && e.Path != ".":
		return fmt.Errorf("%w: the first entry is %q, not the root", ErrWrongKind, e.Path)
	case i == 0 && e.Type == typeSymlink:
		return fmt.Errorf("%w: the root is a symlink (to %q), a %s was asked for", ErrWrongKind, e.Target, typeName(want))
	case i == 0 && e.Type != want:
		return fmt.Errorf("%w: the root is a %s, the begin record announced a %s", ErrWrongKind, typeName(e.Type), typeName(want))
	case i > 0 && !dir:
		return fmt.Errorf("%w: a second entry %q after a single file", ErrWrongKind, e.Path)
	case i > 0 && e.Path == ".":
		return fmt.Errorf("%w: the root entry came twice", ErrWrongKind)
	}
	return nil
}

func typeName(t uint8) string {
	switch t {
	case typeFile:
		return "file"
	case typeDir:
		return "directory"
	case typeSymlink:
		return "symlink"
	}
	return fmt.Sprintf("entry of type %d", t)
}

// open decides where the source lands (scp's rules) and opens the
// directory it lands in as a root.
func (rc *receiver) open(dest string, b beginRec) error {
	dest = filepath.Clean(dest)
	dir, base := filepath.Dir(dest), filepath.Base(dest)
	fi, err := os.Stat(dest)
	switch {
	case err == nil && fi.IsDir():
		name, err := rc.name(b)
		if err != nil {
			return err
		}
		dir, base = dest, name
	case err == nil && b.Dir:
		return fmt.Errorf("arbor: destination %s exists and is not a directory", dest)
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		if pfi, perr := os.Stat(dir); perr != nil || !pfi.IsDir() {
			return fmt.Errorf("arbor: destination directory %s does not exist", dir)
		}
	default:
		return fmt.Errorf("arbor: destination %s: %w", dest, unwrapPath(err))
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("arbor: destination directory %s: %w", dir, unwrapPath(err))
	}
	rc.dir, rc.base, rc.shown = r, base, filepath.Join(dir, base)
	// A tree never goes through a symlink under its name; a file replaces
	// a symlink (rename never follows one), never a directory.
	fi, err = r.Lstat(base)
	switch {
	case err == nil && b.Dir && !fi.IsDir():
		return fmt.Errorf("arbor: destination %s exists and is not a directory", rc.shown)
	case err == nil && !b.Dir && fi.IsDir():
		return fmt.Errorf("arbor: destination %s is a directory", rc.shown)
	}
	return nil
}

// place maps an entry to the root it is created through and its path
// beneath that root: a single file is base in dir; a tree's root entry
// creates the tree's top and opens it as a root, and the tree's other
// entries are their paths beneath it, below no symlink.
func (rc *receiver) place(e entryRec) (*os.Root, string, error) {
	if e.Path == "." && rc.tree == nil {
		if e.Type == typeFile {
			return rc.dir, rc.base, nil
		}
		if err := rc.makeTop(e); err != nil {
			return nil, "", local(err)
		}
		return rc.tree, ".", nil
	}
	parts := strings.Split(e.Path, "/")
	for i := 1; i < len(parts); i++ {
		parent := strings.Join(parts[:i], "/")
		fi, err := rc.tree.Lstat(parent)
		switch {
		case err != nil:
			return nil, "", fmt.Errorf("arbor: transfer: entry %q: parent %s: %w", e.Path, rc.show(parent), unwrapPath(err))
		case fi.Mode()&fs.ModeSymlink != 0:
			return nil, "", fmt.Errorf("%w: refusing entry %q: %s is a symlink", ErrEscape, e.Path, rc.show(parent))
		case !fi.IsDir():
			return nil, "", fmt.Errorf("arbor: transfer: entry %q: %s is not a directory", e.Path, rc.show(parent))
		}
	}
	return rc.tree, e.Path, nil
}

// makeTop creates (or reuses) the tree's top directory and opens it.
func (rc *receiver) makeTop(e entryRec) error {
	fi, err := rc.dir.Lstat(rc.base)
	switch {
	case err == nil && !fi.IsDir():
		return fmt.Errorf("arbor: destination %s exists and is not a directory", rc.shown)
	case errors.Is(err, fs.ErrNotExist):
		if err := rc.dir.Mkdir(rc.base, 0o700); err != nil {
			return fmt.Errorf("arbor: creating %s: %w", rc.shown, unwrapPath(err))
		}
	case err != nil:
		return fmt.Errorf("arbor: destination %s: %w", rc.shown, unwrapPath(err))
	}
	t, err := rc.dir.OpenRoot(rc.base)
	if err != nil {
		return fmt.Errorf("arbor: opening %s: %w", rc.shown, unwrapPath(err))
	}
	rc.tree = t
	rc.dirs = append(rc.dirs, dirTimes{".", e})
	return nil
}

func (rc *receiver) mkdir(rel string, e entryRec) error {
	fi, err := rc.tree.Lstat(rel)
	switch {
	case err == nil && fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symlink", ErrEscape, rc.show(rel))
	case err == nil && !fi.IsDir():
		return fmt.Errorf("arbor: %s exists and is not a directory", rc.show(rel))
	case err != nil:
		if err := rc.tree.Mkdir(rel, 0o700); err != nil {
			return fmt.Errorf("arbor: creating %s: %w", rc.show(rel), unwrapPath(err))
		}
	}
	rc.dirs = append(rc.dirs, dirTimes{rel, e})
	return nil
}

// finishDirs sets directory modes and times last, deepest first: adding
// entries changed their times, and a read-only mode would have stopped them.
func (rc *receiver) finishDirs() error {
	for i := len(rc.dirs) - 1; i >= 0; i-- {
		d := rc.dirs[i]
		if err := rc.tree.Chmod(d.rel, rc.mode(d.e.Mode)); err != nil {
			return fmt.Errorf("arbor: chmod %s: %w", rc.show(d.rel), unwrapPath(err))
		}
		if err := setTimes(rc.tree, d.rel, d.e.MtimeNs); err != nil {
			return fmt.Errorf("arbor: setting times of %s: %w", rc.show(d.rel), err)
		}
	}
	return nil
}

// mode is the mode a file or directory gets: the permission bits, and
// setuid, setgid and sticky only if o.PreserveSpecial.
func (rc *receiver) mode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if rc.o.PreserveSpecial {
		if m&syscall.S_ISUID != 0 {
			fm |= fs.ModeSetuid
		}
		if m&syscall.S_ISGID != 0 {
			fm |= fs.ModeSetgid
		}
		if m&syscall.S_ISVTX != 0 {
			fm |= fs.ModeSticky
		}
	}
	return fm
}

func (rc *receiver) symlink(rel string, e entryRec) error {
	if fi, err := rc.tree.Lstat(rel); err == nil && fi.IsDir() {
		return fmt.Errorf("arbor: %s exists and is a directory", rc.show(rel))
	}
	tmp, err := tempName(rel)
	if err != nil {
		return err
	}
	if err := rc.tree.Symlink(e.Target, tmp); err != nil {
		return fmt.Errorf("arbor: creating symlink %s: %w", rc.show(rel), unwrapPath(err))
	}
	rc.tmpAt, rc.tmp = rc.tree, tmp
	if err := setTimes(rc.tree, tmp, e.MtimeNs); err != nil {
		return fmt.Errorf("arbor: setting times of %s: %w", rc.show(rel), err)
	}
	if err := rc.tree.Rename(tmp, rel); err != nil {
		return fmt.Errorf("arbor: renaming into place %s: %w", rc.show(rel), unwrapPath(err))
	}
	rc.tmp = ""
	return nil
}

// file receives one file's data into a temporary file beside rel and
// renames it into place once its size and check match the sender's.
func (rc *receiver) file(root *os.Root, rel string, e entryRec, prog *Progress) (sums, int64, error) {
	shown := rc.show(rel)
	if fi, err := root.Lstat(rel); err == nil && fi.IsDir() {
		return sums{}, 0, local(fmt.Errorf("arbor: %s exists and is a directory", shown))
	}
	tmp, err := tempName(rel)
	if err != nil {
		return sums{}, 0, local(err)
	}
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return sums{}, 0, local(fmt.Errorf("arbor: creating %s: %w", shown, unwrapPath(err)))
	}
	rc.tmpAt, rc.tmp = root, tmp
	h, n, err := rc.fileData(f, shown, e.Size, prog)
	if err == nil && n != e.Size {
		err = fmt.Errorf("%w: %s: %d bytes declared, %d sent", ErrSize, shown, e.Size, n)
	}
	if err == nil && rc.o.Sync {
		if serr := f.Sync(); serr != nil {
			err = local(fmt.Errorf("arbor: writing %s: %w", shown, unwrapPath(serr)))
		}
	}
	if err == nil {
		if cerr := f.Chmod(rc.mode(e.Mode)); cerr != nil {
			err = local(fmt.Errorf("arbor: chmod %s: %w", shown, unwrapPath(cerr)))
		}
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = local(fmt.Errorf("arbor: writing %s: %w", shown, unwrapPath(cerr)))
	}
	if err != nil {
		return sums{}, n, err
	}
	if err := setTimes(root, tmp, e.MtimeNs); err != nil {
		return sums{}, n, local(fmt.Errorf("arbor: setting times of %s: %w", shown, err))
	}
	if err := root.Rename(tmp, rel); err != nil {
		return sums{}, n, local(fmt.Errorf("arbor: renaming into place %s: %w", shown, unwrapPath(err)))
	}
	rc.tmp = ""
	return h, n, nil
}

// fileData reads one file's records into f, refusing data past limit
// bytes. A writer goroutine sums and writes each chunk while the next is
// read from the channel. The sums are of the bytes as received, before
// they are written.
func (rc *receiver) fileData(f *os.File, shown string, limit int64, prog *Progress) (sums, int64, error) {
	if rc.free == nil {
		rc.free = make(chan []byte, pipelineDepth)
		for i := 0; i < pipelineDepth; i++ {
			rc.free <- make([]byte, chunkSize)
		}
	}
	full := make(chan []byte, pipelineDepth)
	type result struct {
		sum sums
		err error
	}
	written := make(chan result, 1)
	failed := make(chan struct{}) // closed on the writer's first error
	go func() {
		h := newDigests(rc.o)
		var err error
		for b := range full {
			if err == nil {
				h.write(b)
				if _, werr := f.Write(b); werr != nil {
					err = local(fmt.Errorf("arbor: writing %s: %w", shown, unwrapPath(werr)))
					close(failed)
				}
			}
			rc.free <- b[:cap(b)]
		}
		written <- result{h.sums(), err}
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
			return sums{}, n, err
		}
		switch typ {
		case recData:
			if int64(len(body)) > limit-n {
				rc.free <- body[:cap(body)] // never written
				finish()
				return sums{}, n, fmt.Errorf("%w: %s: more than the %d bytes declared", ErrSize, shown, limit)
			}
			select {
			case <-failed:
				full <- body
				res := finish()
				return sums{}, n, res.err
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
				return sums{}, n, res.err
			}
			if !bytes.Equal(body, res.sum.check) {
				return sums{}, n, fmt.Errorf("%w: %s: the sender's CRC-32C and CRC-32 %x, the bytes received %x",
					ErrChecksum, shown, body, res.sum.check)
			}
			return res.sum, n, nil
		case recError:
			finish()
			return sums{}, n, decodePeerError("sender", body)
		default:
			finish()
			return sums{}, n, fmt.Errorf("arbor: transfer: %s: unexpected record %q in file data", shown, typ)
		}
	}
}

// tempName is a fresh hidden name beside rel (slash-separated).
func tempName(rel string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	base := path.Base(rel)
	if len(base) > 200 {
		base = base[:200] // room for the suffix within NAME_MAX
	}
	return path.Join(path.Dir(rel), fmt.Sprintf(".%s.arbor-%x.tmp", base, b)), nil
}

// setTimes sets the access and modification times of rel beneath root,
// not following rel itself if it is a symlink. Its directory is opened
// through root (O_PATH: no read permission needed).
func setTimes(root *os.Root, rel string, mtimeNs int64) error {
	d, err := root.OpenFile(path.Dir(rel), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return unwrapPath(err)
	}
	defer d.Close()
	ts := []unix.Timespec{unix.NsecToTimespec(mtimeNs), unix.NsecToTimespec(mtimeNs)}
	return unix.UtimesNanoAt(int(d.Fd()), path.Base(rel), ts, unix.AT_SYMLINK_NOFOLLOW)
}
