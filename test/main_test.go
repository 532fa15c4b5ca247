// Package test holds Arbor's end-to-end tests: they build the real arbor
// binary once and run it, and the trees it spawns, as real processes.
package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// arborBin is the binary built by TestMain; every local child in these
// tests is this file re-executed.
var arborBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "arbor-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	arborBin = filepath.Join(dir, "arbor")
	build := exec.Command("go", "build", "-o", arborBin, "./cmd/arbor")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "test: building arbor:", err)
		return 1
	}
	code := m.Run()
	// Roots built in this process must stop every goroutine they started.
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "test: goroutines leaked:", err)
		code = 1
	}
	// No test may leave an arbor process behind, whatever it did.
	if left := leftoverAgents(arborBin, 10*time.Second); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "test: arbor processes left behind: %v\n", left)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// moduleRoot finds go.mod above the working directory (the test's package
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
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		dir = parent
	}
}
