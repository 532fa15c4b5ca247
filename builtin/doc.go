// Package builtin holds the functions every Arbor node serves: node info
// and diagnostics (agent.*), running commands (sys.exec) and small file
// operations (fs.*). Argument and result fields use text keys so that the
// CLI's JSON arguments map onto them by name.
package builtin
