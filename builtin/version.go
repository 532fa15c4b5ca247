package builtin

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// version, when set at link time (-ldflags "-X
// github.com/arbor-project/arbor/builtin.version=v1.2.3"), overrides the
// module version of the build information.
var version string

// BuildInfo says which build of arbor this process is: what `arbor
// version` prints and agent.info reports.
type BuildInfo struct {
	Version   string `cbor:"version" json:"version"`
	Commit    string `cbor:"commit,omitempty" json:"commit,omitempty"`
	Modified  bool   `cbor:"modified,omitempty" json:"modified,omitempty"`
	GoVersion string `cbor:"go_version" json:"go_version"`
	OS        string `cbor:"os" json:"os"`
	Arch      string `cbor:"arch" json:"arch"`
}

var buildOnce = sync.OnceValue(readBuild)

// Build returns this binary's build information, read once from
// runtime/debug: the main module's version ("(devel)" for a build from a
// work tree), the VCS commit and whether the tree was modified (when the
// go tool stamped them), the Go version, OS and architecture.
func Build() BuildInfo {
	return buildOnce()
}

func readBuild() BuildInfo {
	b := BuildInfo{Version: "(devel)", GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			b.Version = v
		}
		if bi.GoVersion != "" {
			b.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if version != "" {
		b.Version = version
	}
	return b
}
