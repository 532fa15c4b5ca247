package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvSocket names the environment variable that overrides the default
// socket path.
const EnvSocket = "ARBOR_SOCKET"

// SocketPath is the control socket to use: flag if set, else
// $ARBOR_SOCKET, else $XDG_RUNTIME_DIR/arbor/arbor.sock, else
// ~/.arbor/arbor.sock.
func SocketPath(flag string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}
	if v := os.Getenv(EnvSocket); v != "" {
		return filepath.Abs(v)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "arbor", "arbor.sock"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("arbor: no control socket path: set --socket or %s (%w)", EnvSocket, err)
	}
	return filepath.Join(home, ".arbor", "arbor.sock"), nil
}

// prepareDir makes the socket's directory, mode 0700, if it is missing. An
// existing directory that others can enter is reported, not changed: it
// may be shared (/tmp), and the socket's own 0600 mode still protects it.
func prepareDir(dir string) (warning string, err error) {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("arbor: creating socket directory %s: %w", dir, err)
		}
		// MkdirAll applies the umask; make the mode exact.
		return "", os.Chmod(dir, 0o700)
	}
	if err != nil {
		return "", fmt.Errorf("arbor: socket directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("arbor: socket directory %s is not a directory", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Sprintf("socket directory %s has mode %v (want 0700); the socket itself is 0600", dir, st.Mode().Perm()), nil
	}
	return "", nil
}
