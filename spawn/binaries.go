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

// Table lists every platform this node can provide a binary for, with
// its SHA-256 (hex). For one platform, a file in Dir wins over Self (the
// user chose it), and Known wins over both (the root chose for the tree).
func (b *Binaries) Table() (map[string]string, error) {
	t := make(map[string]string, len(b.Known)+2)
	self, err := b.self()
	if err != nil {
		return nil, err
	}
	h, err := fileHash(self)
	if err != nil {
		return nil, err
	}
	t[ThisPlatform] = h
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
			h, err := fileHash(filepath.Join(b.Dir, e.Name()))
			if err != nil {
				return nil, err
			}
			t[p] = h
		}
	}
	for p, h := range b.Known {
		t[p] = h
	}
	return t, nil
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
		paths = append(paths, filepath.Join(b.Dir, "arbor-"+strings.ReplaceAll(platform, "/", "-")))
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

// hashes caches file hashes by path, size and modification time: a binary
// is hashed once per process, not once per spawn.
var hashes struct {
	sync.Mutex
	m map[string]hashEntry
}

type hashEntry struct {
	size int64
	mod  time.Time
	hash string
}

func fileHash(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("arbor: agent binary: %w", err)
	}
	hashes.Lock()
	e, ok := hashes.m[path]
	hashes.Unlock()
	if ok && e.size == st.Size() && e.mod.Equal(st.ModTime()) {
		return e.hash, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("arbor: agent binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("arbor: reading agent binary %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	hashes.Lock()
	if hashes.m == nil {
		hashes.m = make(map[string]hashEntry)
	}
	hashes.m[path] = hashEntry{size: st.Size(), mod: st.ModTime(), hash: sum}
	hashes.Unlock()
	return sum, nil
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
