// Package spawn starts child agents and opens the link to them.
//
//   - local: this binary re-executed over stdio pipes (local.go).
//   - ssh: the system ssh (so ~/.ssh/config, agents, ProxyJump and
//     ControlMaster work), never with a PTY, in BatchMode (ssh.go).
//   - sudo: sudo -n, running the agent as another user (sudo.go).
//
// ssh and sudo hops need nothing installed on the other side but /bin/sh:
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
package spawn
