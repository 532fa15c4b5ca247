package router_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// link's loops, yamux's session goroutines and pending requests must have
// ended once the trees the tests built are closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
