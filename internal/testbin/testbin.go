// Package testbin builds the arbor binary for tests and benchmarks that run
// real agents: every child agent is this binary, re-executed.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles ./cmd/arbor of the module around the working directory
// into dir/arbor and returns that path. It builds static, as the README
// says to (CGO_ENABLED=0): the agent a root ships to a remote host must
// run there whatever libc it has, and a root refuses to ship a dynamic
// one (spawn.ErrDynamicAgent). The go tool's output goes to stderr, so a
// build failure explains itself.
func Build(dir string) (string, error) {
	return build(filepath.Join(dir, "arbor"), "0")
}

// BuildDynamic compiles ./cmd/arbor with cgo on into dir/arbor-dynamic, as
// a plain `go build` does on a host with a C compiler: a binary linked
// against this host's libc, for tests that check it never goes to a remote
// host. It fails without a C compiler.
func BuildDynamic(dir string) (string, error) {
	return build(filepath.Join(dir, "arbor-dynamic"), "1")
}

func build(exe, cgo string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	build := exec.Command("go", "build", "-o", exe, "./cmd/arbor")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building arbor (CGO_ENABLED=%s): %w", cgo, err)
	}
	return exe, nil
}

// moduleRoot finds go.mod above the working directory (a test's package
// directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}
