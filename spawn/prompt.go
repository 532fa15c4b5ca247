package spawn

import (
	"bytes"
	"regexp"
	"sync/atomic"
)

// passwordPrompt matches a password prompt at the end of a tool's stderr:
// "Password: ", "[sudo] password for bob: ", "bob@host's password:". A
// prompt ends without a newline, so it is matched on the line in progress.
var passwordPrompt = regexp.MustCompile(`(?i)(password|passphrase|passwort|mot de passe)[^\n]{0,200}:\s*$`)

// promptWatchMax bounds the line in progress a promptWatch keeps.
const promptWatchMax = 512

// promptWatch sees a child's stderr as it is read (an io.TeeReader in
// front of the tail's pump), and calls onPrompt once when the line in
// progress matches re before the link is up. It never blocks and keeps
// at most promptWatchMax bytes.
type promptWatch struct {
	re       *regexp.Regexp
	up       *atomic.Bool
	onPrompt func()
	line     []byte
	fired    bool
}

func (w *promptWatch) Write(b []byte) (int, error) {
	if w.fired || w.up.Load() {
		return len(b), nil
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		w.line = append(w.line[:0], b[i+1:]...)
	} else {
		w.line = append(w.line, b...)
	}
	if len(w.line) > promptWatchMax {
		w.line = append(w.line[:0], w.line[len(w.line)-promptWatchMax:]...)
	}
	if len(w.line) > 0 && w.re.Match(w.line) {
		w.fired = true
		w.onPrompt()
	}
	return len(b), nil
}
