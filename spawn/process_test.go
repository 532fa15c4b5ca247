package spawn

import (
	"errors"
	"fmt"
	"testing"

	"github.com/arbor-project/arbor/stream"
)

// TestIsTimeoutByType: a hello that timed out is recognised by the link's
// sentinel, wrapped or not, never by an error's words.
func TestIsTimeoutByType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{stream.ErrConnectTimeout, true},
		{fmt.Errorf("%w with node 3 (local.1): %w", stream.ErrHello, stream.ErrConnectTimeout), true},
		{nil, false},
		{errors.New("child stderr: ssh: connect to host db1 port 22: connection timed out"), false},
		{fmt.Errorf("%w with node 3 (local.1): EOF", stream.ErrHello), false},
	} {
		if got := isTimeout(tc.err); got != tc.want {
			t.Errorf("isTimeout(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
