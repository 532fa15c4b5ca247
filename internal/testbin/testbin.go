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
// into dir/arbor and returns that path. The go tool's output goes to
// stderr, so a build failure explains itself.
func Build(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "arbor")
	build := exec.Command("go", "build", "-o", exe, "./cmd/arbor")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building arbor: %w", err)
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
