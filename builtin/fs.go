package builtin

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/arbor-project/arbor/funcs"
)

// PathArgs names one file.
type PathArgs struct {
	Path string `cbor:"path" json:"path"`
}

// WriteArgs are the arguments of fs.write.
type WriteArgs struct {
	Path string `cbor:"path" json:"path"`
	Data []byte `cbor:"data" json:"data"`
	Mode uint32 `cbor:"mode,omitempty" json:"mode,omitempty"` // default 0644
}

// FileData is the result of fs.read.
type FileData struct {
	Data []byte `cbor:"data" json:"data"`
}

// FileInfo is the result of fs.stat and an entry of fs.list.
type FileInfo struct {
	Name string `cbor:"name" json:"name"`
	Size int64  `cbor:"size" json:"size"`
	// Mode is the Unix permission bits with setuid, setgid and sticky
	// (07777), as chmod takes them; Octal is the same as text ("0755"),
	// Perms as ls -l shows it with the file's type ("drwxr-xr-x").
	Mode    uint32 `cbor:"mode" json:"mode"`
	Octal   string `cbor:"octal" json:"octal"`
	Perms   string `cbor:"perms" json:"perms"`
	Type    string `cbor:"type" json:"type"`   // file, dir, symlink, fifo, socket, device, char_device, irregular
	ModTime int64  `cbor:"mtime" json:"mtime"` // Unix seconds
	IsDir   bool   `cbor:"is_dir" json:"is_dir"`
	Link    string `cbor:"link,omitempty" json:"link,omitempty"`
}

// Listing is the result of fs.list.
type Listing struct {
	Entries []FileInfo `cbor:"entries" json:"entries"`
}

func registerFS(reg *funcs.Registry) {
	funcs.Register(reg, "fs.read", readFile)
	funcs.Register(reg, "fs.write", writeFile)
	funcs.Register(reg, "fs.stat", func(_ context.Context, _ *funcs.Call, a PathArgs) (FileInfo, error) {
		st, err := os.Lstat(a.Path)
		if err != nil {
			return FileInfo{}, err
		}
		return infoOf(a.Path, st), nil
	})
	funcs.Register(reg, "fs.list", func(_ context.Context, _ *funcs.Call, a PathArgs) (Listing, error) {
		ents, err := os.ReadDir(a.Path)
		if err != nil {
			return Listing{}, err
		}
		l := Listing{Entries: make([]FileInfo, 0, len(ents))}
		for _, e := range ents {
			st, err := e.Info()
			if err != nil {
				continue // removed while listing
			}
			l.Entries = append(l.Entries, infoOf(filepath.Join(a.Path, e.Name()), st))
		}
		return l, nil
	})
}

func infoOf(path string, st fs.FileInfo) FileInfo {
	m := st.Mode()
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	fi := FileInfo{Name: st.Name(), Size: st.Size(), Mode: bits, Octal: fmt.Sprintf("%04o", bits), Perms: lsMode(m),
		Type: fileType(m), ModTime: st.ModTime().Unix(), IsDir: st.IsDir()}
	if st.Mode()&fs.ModeSymlink != 0 {
		fi.Link, _ = os.Readlink(path)
	}
	return fi
}

// readFile is fs.read. A file larger than the message limit is refused
// before it is read.
func readFile(_ context.Context, c *funcs.Call, a PathArgs) (FileData, error) {
	f, err := os.Open(a.Path)
	if err != nil {
		return FileData{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return FileData{}, err
	}
	if st.IsDir() {
		return FileData{}, fmt.Errorf("%s is a directory", a.Path)
	}
	if limit := int64(c.Router.MaxMessage()) - 4096; st.Size() > limit {
		return FileData{}, fmt.Errorf("%s is %d bytes, larger than the message limit (%d bytes); use push/pull to stream it", a.Path, st.Size(), c.Router.MaxMessage())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return FileData{}, err
	}
	return FileData{Data: data}, nil
}

// writeFile is fs.write: written to a temporary file beside the target and
// renamed into place, so a reader never sees half a file.
func writeFile(_ context.Context, _ *funcs.Call, a WriteArgs) (struct{}, error) {
	mode := fs.FileMode(a.Mode)
	if mode == 0 {
		mode = 0o644
	}
	dir := filepath.Dir(a.Path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(a.Path)+".arbor-*")
	if err != nil {
		return struct{}{}, err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(a.Data); err != nil {
		return struct{}{}, err
	}
	if err := tmp.Chmod(mode.Perm()); err != nil {
		return struct{}{}, err
	}
	if err := tmp.Close(); err != nil {
		return struct{}{}, err
	}
	if err := os.Rename(tmp.Name(), a.Path); err != nil {
		return struct{}{}, err
	}
	ok = true
	return struct{}{}, nil
}

// fileType names the kind of file m is.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "file"
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "char_device"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "irregular"
}

// lsMode writes m as ls -l does: a type letter, then rwx three times with
// s, S, t and T for setuid, setgid and sticky.
func lsMode(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) != 0 {
			b[i+1] = rwx[i]
		}
	}
	special := func(pos int, set bool, lower, upper byte) {
		if !set {
			return
		}
		if b[pos] != '-' {
			b[pos] = lower
		} else {
			b[pos] = upper
		}
	}
	special(3, m&fs.ModeSetuid != 0, 's', 'S')
	special(6, m&fs.ModeSetgid != 0, 's', 'S')
	special(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}
