// Package spawn starts child agents and opens the link to them.
//
//   - local: this binary re-executed over stdio pipes (local.go).
//   - ssh: the system ssh (so ~/.ssh/config, agents, ProxyJump and
//     ControlMaster work), never with a PTY, in BatchMode (ssh.go).
//   - sudo: sudo -n, running the agent as another user (sudo.go).
//   - su, doas, docker, podman, kubectl, lxc, incus, nsenter, chroot and
//     the config file's cmd: methods: entries of one table (methods.go),
//     each a tool that runs the bootstrap's /bin/sh -c SCRIPT with stdio
//     attached. ssh and sudo are entries of it too.
//
// Paths (hop.go) join hops with "/"; a target holding a "/" is written in
// braces, METHOD:{TARGET}, the one escape every method shares.
//
// Every remote hop needs nothing installed on the other side but /bin/sh:
// a short bootstrap script (bootstrap.sh, protocol in bootstrap.go) finds
// the agent binary in a per-user cache keyed by its SHA-256 or has the
// parent stream it over the same pipes, then execs it. Binaries for other
// platforms come from an agent directory or, below the root, from the
// root (binaries.go). Failures are typed (errors.go): match them with
// errors.Is.
//
// Every child process (the agent, or the ssh or sudo process that carries
// its link) starts in its own process group and is killed as a group, so
// no process outlives its tree (process.go).
//
// # Static agents
//
// The agent a node ships to a remote host must run there with nothing but
// /bin/sh, whatever libc the host has or lacks. A Go binary is static
// unless cgo linked it against the build host's libc, which `go build`
// does by default on a machine with a C compiler. Nothing in Arbor needs
// cgo: it uses the packages of the standard library that can use cgo
// (net, os/user) only for Unix sockets, pipes and reading /etc/passwd,
// which their pure Go code does as well. So every build the project
// documents or does is static (CGO_ENABLED=0: README, internal/testbin,
// bench/run), and because a user may still build arbor another way, a
// node checks at run time what it would ship:
//
//   - A binary is dynamic ([IsDynamic], static.go) when it is an ELF file
//     with a PT_INTERP program header (it names a dynamic loader such as
//     /lib64/ld-linux-x86-64.so.2). A file that is not ELF (a Mach-O agent
//     for darwin, a script) is shipped as it is.
//   - A dynamic binary is never offered to a remote host over ssh: it is
//     left out of the table of binaries the bootstrap script may run or
//     ask for, so it is neither uploaded nor run from a remote cache. A
//     static arbor-GOOS-GOARCH in the agent directory serves that platform
//     instead, for this node and, through the root's table, for the nodes
//     below it.
//   - When the remote host then needs a platform whose only binary here is
//     dynamic, the hop fails with [ErrDynamicAgent], naming the file and how
//     to build a static one, instead of an agent that dies on the remote
//     side with "not found".
//   - sudo hops re-execute the agent on the host it already runs on, so a
//     dynamic binary of this node still serves them, as it serves local
//     hops.
package spawn
