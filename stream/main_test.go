package stream_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: a
// link's loops, yamux's, or a helper's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
