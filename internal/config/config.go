// Package config reads arbor's config file: a TOML file named by arbor's
// --config flag, else $ARBOR_CONFIG, else $XDG_CONFIG_HOME/arbor/config.toml,
// else ~/.config/arbor/config.toml (a file named "config" there, the name
// used before config.toml, is read when there is no config.toml). A
// missing file is an empty config; a file that does not parse, or that
// holds a key this package does not know, is an error (a typo never goes
// unnoticed).
//
// Today it holds the cmd: hop methods, each an argv template:
//
//	[cmd]
//	jail = ["jexec", "{target}", "/bin/sh", "-c", "{script}"]
//	# or, as a dotted key: cmd.jail = [...]
//
// "cmd:jail:web/su:app" then runs `jexec web /bin/sh -c SCRIPT` to reach
// web: {target} is the text after "cmd:NAME:", {script} the bootstrap
// (one word, without a single quote in it). See spawn.ToolOptions.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/arbor-project/arbor/spawn"
)

// EnvVar names the config file, when set.
const EnvVar = "ARBOR_CONFIG"

// File is the config file's content.
type File struct {
	// Cmd are the cmd:NAME methods: NAME → argv template.
	Cmd map[string][]string `toml:"cmd"`
	// Flags are defaults for arbor's global flags, by flag name:
	//
	//	[flags]
	//	log-level = "info"
	//	connect-timeout = "10s"
	//	ssh-option = ["ConnectTimeout=5", "User=ops"]
	//
	// A flag on the command line wins over $ARBOR_<FLAG> (log-level:
	// ARBOR_LOG_LEVEL), which wins over this table.
	Flags map[string]any `toml:"flags"`
}

// FileName is the config file's name in arbor's config directory.
const FileName = "config.toml"

// legacyName is the name the file had before config.toml; it is read
// where no config.toml is.
const legacyName = "config"

// Path is where the config file is: $ARBOR_CONFIG, else DefaultPath().
func Path() string {
	if p := os.Getenv(EnvVar); p != "" {
		return p
	}
	return DefaultPath()
}

// DefaultPath is where the config file is when nothing names one:
// $XDG_CONFIG_HOME/arbor/config.toml, else ~/.config/arbor/config.toml;
// the older name "config" in that directory when it is a file and no
// config.toml exists; "" when there is no home directory to look in.
func DefaultPath() string {
	var dir string
	if x := os.Getenv("XDG_CONFIG_HOME"); strings.HasPrefix(x, "/") {
		dir = filepath.Join(x, "arbor")
	} else if home, err := os.UserHomeDir(); err == nil && home != "" {
		dir = filepath.Join(home, ".config", "arbor")
	} else {
		return ""
	}
	p := filepath.Join(dir, FileName)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		old := filepath.Join(dir, legacyName)
		if st, err := os.Stat(old); err == nil && st.Mode().IsRegular() {
			return old
		}
	}
	return p
}

// Load reads the config file at path. A missing file is an empty config,
// unless explicit says the user named it (--config, $ARBOR_CONFIG).
func Load(path string, explicit bool) (File, error) {
	var f File
	if path == "" {
		return f, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("arbor: reading the config file: %w", err)
	}
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return f, fmt.Errorf("arbor: config file %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return f, fmt.Errorf("arbor: config file %s: unknown keys %s", path, strings.Join(keys, ", "))
	}
	for name, tmpl := range f.Cmd {
		if err := spawn.CheckCommand(name, tmpl); err != nil {
			return f, fmt.Errorf("%w (config file %s)", err, path)
		}
	}
	return f, nil
}

// LoadDefault reads the config file at Path().
func LoadDefault() (File, error) {
	return Load(Path(), os.Getenv(EnvVar) != "")
}
