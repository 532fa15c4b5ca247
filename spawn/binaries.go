package spawn

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// ThisPlatform is the platform this binary was built for, "GOOS/GOARCH".
var ThisPlatform = runtime.GOOS + "/" + runtime.GOARCH

// Binaries says which agent binaries a node can ship to a remote host,
// one per platform ("GOOS/GOARCH"). The zero value ships this executable
// only. It is safe for concurrent use once set up.
type Binaries struct {
	// Self is this node's own agent binary, built for ThisPlatform
	// (default: this executable).
	Self string
	// Dir holds agent binaries for other platforms, named
	// arbor-GOOS-GOARCH (the --agent-dir of the CLI).
	Dir string
	// Known lists binaries the tree can provide but this node may not
	// hold: platform → SHA-256 (hex). The root's table travels down to
	// intermediate nodes in spawn requests.
	Known map[string]string
	// Fetch gets a binary this node does not hold, by platform (an
	// intermediate node asks the root). Nil: none.
	Fetch func(ctx context.Context, platform string) ([]byte, error)
}

// Table lists every platform this node can ship an agent binary for to a
// remote host, with its SHA-256 (hex). For one platform, a file in Dir
// wins over Self (the user chose it), and Known wins over both (the root
// chose for the tree). A dynamically linked binary is left out: it would
// not run on a host with another libc (see static.go).
func (b *Binaries) Table() (map[string]string, error) {
	return b.table(false)
}

// table is Table; sameHost keeps this node's own binary even when it is
// dynamic, for a hop that runs it on this very host (sudo).
func (b *Binaries) table(sameHost bool) (map[string]string, error) {
	t := make(map[string]string, len(b.Known)+2)
	self, err := b.self()
	if err != nil {
		return nil, err
	}
	f, err := inspect(self)
	if err != nil {
		return nil, err
	}
	if !f.dynamic || sameHost {
		t[ThisPlatform] = f.hash
	}
	if b.Dir != "" {
		ents, err := os.ReadDir(b.Dir)
		if err != nil {
			return nil, fmt.Errorf("arbor: agent dir: %w", err)
		}
		for _, e := range ents {
			p, ok := platformOfFile(e.Name())
			if !ok || e.IsDir() {
				continue
			}
			f, err := inspect(filepath.Join(b.Dir, e.Name()))
			if err != nil {
				return nil, err
			}
			if !f.dynamic {
				t[p] = f.hash
			}
		}
	}
	for p, h := range b.Known {
		t[p] = h
	}
	return t, nil
}

// dynamic returns the binary this node holds for platform that Table
// left out because it is dynamically linked, and whether it is Self; ok
// is false when there is none.
func (b *Binaries) dynamic(platform string) (path string, self, ok bool) {
	if b.Dir != "" {
		p := filepath.Join(b.Dir, fileOfPlatform(platform))
		if f, err := inspect(p); err == nil && f.dynamic {
			return p, false, true
		}
	}
	if platform != ThisPlatform {
		return "", false, false
	}
	p, err := b.self()
	if err != nil {
		return "", false, false
	}
	if f, err := inspect(p); err == nil && f.dynamic {
		return p, true, true
	}
	return "", false, false
}

// Binary returns the agent binary for platform, checked against hash
// when hash is not empty. It looks at Self, then Dir, then asks Fetch.
func (b *Binaries) Binary(ctx context.Context, platform, hash string) ([]byte, error) {
	var paths []string
	if platform == ThisPlatform {
		self, err := b.self()
		if err != nil {
			return nil, err
		}
		paths = append(paths, self)
	}
	if b.Dir != "" {
		paths = append(paths, filepath.Join(b.Dir, fileOfPlatform(platform)))
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if hash == "" || sha256Hex(data) == hash {
			return data, nil
		}
	}
	if b.Fetch == nil {
		return nil, fmt.Errorf("%w %s", ErrNoBinary, platform)
	}
	data, err := b.Fetch(ctx, platform)
	if err != nil {
		return nil, err
	}
	if hash != "" && sha256Hex(data) != hash {
		return nil, fmt.Errorf("arbor: the agent binary for %s fetched from the root has SHA-256 %s, want %s", platform, sha256Hex(data), hash)
	}
	return data, nil
}

// MaxBinary bounds the size of an agent binary a node accepts from
// another (an intermediate node fetching one from the root): a length
// announced above it is refused before anything is allocated.
const MaxBinary = 512 << 20

// Open opens the agent binary this node holds for platform, the one Table
// lists, for streaming to another node without reading it into memory.
// It returns the file (the caller closes it), its size and its SHA-256 as
// Table computed them; a file replaced since is caught by the receiver's
// check of the hash. A platform Table does not list is ErrNoBinary.
func (b *Binaries) Open(platform string) (*os.File, int64, string, error) {
	table, err := b.Table()
	if err != nil {
		return nil, 0, "", err
	}
	hash, ok := table[platform]
	if !ok {
		return nil, 0, "", fmt.Errorf("%w %s", ErrNoBinary, platform)
	}
	// Table's order: a file in Dir wins over Self.
	var paths []string
	if b.Dir != "" {
		paths = append(paths, filepath.Join(b.Dir, fileOfPlatform(platform)))
	}
	if platform == ThisPlatform {
		self, err := b.self()
		if err != nil {
			return nil, 0, "", err
		}
		paths = append(paths, self)
	}
	for _, p := range paths {
		info, err := inspect(p)
		if err != nil || info.hash != hash || info.dynamic {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, 0, "", fmt.Errorf("arbor: agent binary: %w", err)
		}
		if info.size > MaxBinary {
			f.Close()
			return nil, 0, "", fmt.Errorf("arbor: agent binary %s is %d bytes, more than the %d a node accepts", p, info.size, MaxBinary)
		}
		return f, info.size, hash, nil
	}
	return nil, 0, "", fmt.Errorf("%w %s (the binary listed for it has changed or gone)", ErrNoBinary, platform)
}

func (b *Binaries) self() (string, error) {
	if b.Self != "" {
		return b.Self, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("arbor: finding this executable: %w", err)
	}
	return exe, nil
}

// platformOfFile reads "arbor-linux-arm64" as "linux/arm64".
func platformOfFile(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "arbor-")
	if !ok {
		return "", false
	}
	goos, goarch, ok := strings.Cut(rest, "-")
	if !ok || goos == "" || goarch == "" || strings.Contains(goarch, "-") {
		return "", false
	}
	return goos + "/" + goarch, true
}

// fileOfPlatform names the agent for "linux/arm64" "arbor-linux-arm64".
func fileOfPlatform(platform string) string {
	return "arbor-" + strings.ReplaceAll(platform, "/", "-")
}

// BuildHint says how to provide a binary for platform.
func BuildHint(platform string) string {
	goos, goarch, _ := strings.Cut(platform, "/")
	return fmt.Sprintf("build one with `CGO_ENABLED=0 GOOS=%s GOARCH=%s go build -o DIR/arbor-%s-%s ./cmd/arbor` and pass --agent-dir DIR",
		goos, goarch, goos, goarch)
}

func sha256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// inspected caches what inspect learned, by path, size and modification
// time: a binary is read once per process, not once per spawn.
var inspected struct {
	sync.Mutex
	m map[string]agentFile
}

// agentFile is what a node knows of an agent binary it holds.
type agentFile struct {
	size    int64
	mod     time.Time
	hash    string // SHA-256, hex
	dynamic bool   // see IsDynamic
}

// inspect hashes the agent binary at path and says whether it is
// dynamically linked.
func inspect(path string) (agentFile, error) {
	st, err := os.Stat(path)
	if err != nil {
		return agentFile{}, fmt.Errorf("arbor: agent binary: %w", err)
	}
	inspected.Lock()
	e, ok := inspected.m[path]
	inspected.Unlock()
	if ok && e.size == st.Size() && e.mod.Equal(st.ModTime()) {
		return e, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return agentFile{}, fmt.Errorf("arbor: agent binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return agentFile{}, fmt.Errorf("arbor: reading agent binary %s: %w", path, err)
	}
	dyn, err := IsDynamic(path)
	if err != nil {
		return agentFile{}, err
	}
	e = agentFile{size: st.Size(), mod: st.ModTime(), hash: hex.EncodeToString(h.Sum(nil)), dynamic: dyn}
	inspected.Lock()
	if inspected.m == nil {
		inspected.m = make(map[string]agentFile)
	}
	inspected.m[path] = e
	inspected.Unlock()
	return e, nil
}

// gzipped caches the compressed form of the last binaries uploaded, by
// hash: a tree that bootstraps many hosts compresses once.
var gzipped struct {
	sync.Mutex
	m map[string][]byte
}

func gzipBinary(hash string, data []byte) []byte {
	gzipped.Lock()
	defer gzipped.Unlock()
	if z, ok := gzipped.m[hash]; ok {
		return z
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(data)
	zw.Close()
	if gzipped.m == nil || len(gzipped.m) >= 4 {
		gzipped.m = make(map[string][]byte)
	}
	gzipped.m[hash] = buf.Bytes()
	return buf.Bytes()
}
