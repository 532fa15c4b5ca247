package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/sshdtest"
)

// partitionGuard bounds how long the far side of a partition may take to
// exit on its own. It only stops a hang, but it is shorter than the 40 s
// after which a transport keepalive used to cut such a link on its own
// clock, so it tells the heartbeat's decision from that one.
const partitionGuard = 25 * time.Second

// netns makes a network namespace with its loopback up, for this test
// only, and deletes it at the end.
func netns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (.ci/run installs iproute2 and iptables)", tool)
		}
	}
	name := fmt.Sprintf("arbor-part-%d", os.Getpid())
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func mustRun(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
}

// TestSilentPartition: an ssh hop across a partition that drops every
// packet and closes no socket. The parent's configured thresholds decide:
// the node goes UNRESPONSIVE, then DOWN with a heartbeat cause, and a
// command streaming from it fails naming the heartbeat. On the far side,
// the agent hears nothing from its parent and exits on its own within the
// threshold, killing the command it ran: no process outlives its tree.
func TestSilentPartition(t *testing.T) {
	ns := netns(t)
	sshd := startSSHD(t, sshdtest.Options{NetNS: ns})
	// The daemon runs inside the namespace, where the sshd is; its control
	// socket is a file, reachable from here.
	socket := filepath.Join(t.TempDir(), "arbor.sock")
	s := &server{socket: socket}
	s.r = startBinary(t, "ip", "netns", "exec", ns, arborBin, "--socket", socket, "--ssh-config", sshd.ConfigFile,
		"--log-level", "info", "serve", "--heartbeat", "200ms", "--unresponsive-after", "1s", "--down-after", "3s")
	s.r.stderr.waitLine(t, regexp.MustCompile(`arbor serve: listening on `), cliTimeout)

	id, name := s.spawnID(t, "ssh:"+sshdtest.Alias)
	node := s.tree(t).find(id)
	if node == nil || node.PID == 0 {
		t.Fatalf("node %d not in the tree with a pid: %+v", id, node)
	}
	remoteAgent := procOf(t, node.PID)
	cmd := s.start(t, "exec", fmt.Sprint(id), "--", "sh", "-c", "echo $$; exec sleep 1000")
	line := cmd.stdout.waitLine(t, regexp.MustCompile(`^[0-9]+$`), cliTimeout)
	pid, err := strconv.Atoi(strings.TrimSpace(line[0]))
	if err != nil {
		t.Fatalf("command pid %q: %v", line[0], err)
	}
	command := procOf(t, pid)
	w := s.startWatch(t)

	port := fmt.Sprint(sshd.Port)
	for _, dir := range []string{"--dport", "--sport"} {
		mustRun(t, "ip", "netns", "exec", ns, "iptables", "-I", "INPUT", "-p", "tcp", dir, port, "-j", "DROP")
	}
	// The ssh session's processes on the far side stay blocked on the
	// dropped connection; stop them by pid before sshd's own checks.
	t.Cleanup(func() {
		for _, p := range descendants(sshd.PID()) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	})

	w.waitEvent(t, "unresponsive", id, cliTimeout)
	down := w.waitEvent(t, "down", id, cliTimeout)
	if !strings.Contains(down.Cause, "heartbeat timeout") {
		t.Errorf("down event cause %q, want heartbeat timeout", down.Cause)
	}
	w.waitEvent(t, "del_route", id, cliTimeout)
	if code := cmd.wait(t, cliTimeout); code != 255 {
		t.Errorf("exec across the partition exited %d, want 255; stderr:\n%s", code, cmd.stderr)
	}
	if msg := cmd.stderr.String(); !strings.Contains(msg, "heartbeat timeout") || !strings.Contains(msg, name) {
		t.Errorf("exec failed with %q, want a heartbeat timeout naming %s", msg, name)
	}
	// The far side decides alone: nothing reaches it any more.
	requireExited(t, "the agent and its command beyond the partition", []proc{remoteAgent, command}, partitionGuard)
}
