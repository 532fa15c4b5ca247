// Package builtin holds the functions every Arbor node serves: node info
// and diagnostics (agent.*), running commands (sys.exec) and small file
// operations (fs.*). Argument and result fields use text keys so that the
// CLI's JSON arguments map onto them by name.
//
// Every command runs under a guard (guard.go): this binary re-executed as
// the leader of the command's process group, which kills the whole group
// when the call is cancelled or the node dies, however it dies. Any binary
// that links this package serves the guard's hidden subcommand (GuardArg)
// from the package's init.
package builtin
