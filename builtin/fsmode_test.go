package builtin

import (
	"io/fs"
	"testing"
)

func TestLsMode(t *testing.T) {
	for _, c := range []struct {
		m    fs.FileMode
		want string
	}{
		{0o755, "-rwxr-xr-x"},
		{fs.ModeDir | 0o700, "drwx------"},
		{fs.ModeSymlink | 0o777, "lrwxrwxrwx"},
		{fs.ModeSetuid | 0o755, "-rwsr-xr-x"},
		{fs.ModeSetgid | 0o640, "-rw-r-S---"},
		{fs.ModeDir | fs.ModeSticky | 0o777, "drwxrwxrwt"},
		{fs.ModeNamedPipe | 0o600, "prw-------"},
	} {
		if got := lsMode(c.m); got != c.want {
			t.Errorf("lsMode(%v) = %q, want %q", c.m, got, c.want)
		}
	}
}
