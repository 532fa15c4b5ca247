// Package test holds Arbor's end-to-end tests: they build the real arbor
// binary once and run it, and the trees it spawns, as real processes.
package test

import (
	"fmt"
	"os"
	"testing"

	"github.com/arbor-project/arbor/internal/testbin"

	"go.uber.org/goleak"
)

// arborBin is the binary built by TestMain; every local child in these
// tests is this file re-executed.
var arborBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "arbor-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if arborBin, err = testbin.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		return 1
	}
	code := m.Run()
	// Roots built in this process must stop every goroutine they started.
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "test: goroutines leaked:", err)
		code = 1
	}
	// No test may leave an arbor process behind, whatever it did.
	if left := leftoverAgents(arborBin, patience); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "test: arbor processes left behind: %v\n", left)
		if code == 0 {
			code = 1
		}
	}
	return code
}
