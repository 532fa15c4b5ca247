package spawn

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strings"
)

// IsDynamic reports whether the file at path is an ELF executable that
// needs a dynamic loader (it has a PT_INTERP program header), so it runs
// only where the libc it was linked against is installed. A file that is
// not ELF is not dynamic. A node never ships a dynamic binary to a remote
// host (see "Static agents" in the package doc).
func IsDynamic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("arbor: agent binary: %w", err)
	}
	defer f.Close()
	magic := make([]byte, len(elf.ELFMAG))
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != elf.ELFMAG {
		return false, nil // shorter than a header, or not ELF
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return false, fmt.Errorf("arbor: reading agent binary %s: %w", path, err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// dynamicHint says why a dynamic binary at path cannot go to a remote host
// of platform, and how to provide a static one. self says whether path is
// this node's own executable.
func dynamicHint(platform, path string, self bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "the remote host is %s and ", platform)
	if self {
		fmt.Fprintf(&b, "this arbor executable %s", path)
	} else {
		fmt.Fprintf(&b, "the agent binary %s", path)
	}
	b.WriteString(" is dynamically linked (built with cgo), so it would not run on a host with another libc or none; ")
	if self {
		b.WriteString("build arbor static with `CGO_ENABLED=0 go build -o arbor ./cmd/arbor`, or ")
	}
	b.WriteString(BuildHint(platform))
	return b.String()
}
