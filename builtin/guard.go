package builtin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// GuardArg is the hidden subcommand that runs this binary as the guard of
// a command (see startGuarded). Any binary that links this package serves
// it: the package's init runs the guard and exits before main.
const GuardArg = "__guard"

// The guard's inherited descriptors.
const (
	// guardLifelineFD is the read end of the lifeline: EOF on it (the
	// node closed its end, or died) makes the guard kill its group.
	guardLifelineFD = 3
	// guardStatusFD is where the guard reports how the command ended.
	guardStatusFD = 4
)

// Status records the guard writes on guardStatusFD: one type byte, then a
// 4-byte big-endian wait status ('w'), or the text of the error that kept
// the command from starting ('e').
const (
	guardWaitStatus = 'w'
	guardStartError = 'e'
)

func init() {
	if len(os.Args) > 2 && os.Args[1] == GuardArg {
		os.Exit(runGuard(os.Args[2], os.Args[3:]))
	}
}

// runGuard is the guard's main. The node starts it as the leader of a new
// process group; it starts the command (path, run as argv) in that group
// and stays until the command and everything it left behind have exited,
// so that the group can be killed whole when the node goes away:
//
//   - EOF on the lifeline (the node cancelled the command, or the node
//     died, however it died) kills the whole group, the guard included;
//   - the command also gets SIGKILL if the guard itself dies (its parent
//     death signal, from the guard's only thread that forks);
//   - the guard is a child subreaper, so whatever the command forked and
//     left behind stays below it and keeps it alive and watching.
//
// The command's wait status is reported on the status pipe as soon as it
// exits; the guard's own exit status carries nothing.
func runGuard(path string, argv []string) int {
	// The parent death signal fires when the forking thread exits, not
	// the process: fork from a thread that lives as long as the guard.
	runtime.LockOSThread()
	status := os.NewFile(guardStatusFD, "status")
	lifeline := os.NewFile(guardLifelineFD, "lifeline")
	if status == nil || lifeline == nil || len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "arbor: the guard is started by the node that runs a command")
		return 2
	}
	// Neither descriptor goes on to the command.
	syscall.CloseOnExec(guardLifelineFD)
	syscall.CloseOnExec(guardStatusFD)
	// Signals meant for the command's group do not stop the guard early.
	// (Handled, not ignored: an ignored signal stays ignored across exec.)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	go func() {
		for range sigs {
		}
	}()
	go func() {
		_, _ = io.Copy(io.Discard, lifeline)
		_ = syscall.Kill(0, syscall.SIGKILL) // the whole group, this guard last
	}()
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		_, _ = status.Write(append([]byte{guardStartError}, err.Error()...))
		return 1
	}
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil: // ECHILD: nothing is left below the guard
			return 0
		case wpid == pid:
			var rec [5]byte
			rec[0] = guardWaitStatus
			binary.BigEndian.PutUint32(rec[1:], uint32(ws))
			_, _ = status.Write(rec[:])
			status.Close()
		}
	}
}
