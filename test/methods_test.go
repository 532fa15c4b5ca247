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
	"github.com/arbor-project/arbor/spawn"
)

// End-to-end tests of the hop methods other than local, ssh and sudo, with
// the real tools: su, doas, nsenter, chroot, podman; docker, kubectl and
// lxc where their engines cannot run (see the README's table).

// needRoot skips a test that needs root: su without a password, chroot,
// namespaces, doas.conf.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: su and doas without a password, chroot, namespaces")
	}
}

// needTool finds tool in PATH, installing the Debian package pkg with
// apt-get when it is missing; the test is skipped, saying why, only when
// the package cannot be installed.
func needTool(t *testing.T, tool, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	cmd := exec.Command("apt-get", "install", "-y", "-q", pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := runBounded(cmd, 10*time.Minute)
	if err != nil {
		t.Skipf("%s is not installed and apt-get install %s failed: %v\n%s", tool, pkg, err, out)
	}
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not found after installing %s: %v", tool, pkg, err)
	}
	return p
}

// runBounded runs cmd to its end, killing it after d.
func runBounded(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	cmd.WaitDelay = 5 * time.Second
	done := make(chan struct{})
	defer close(done)
	timer := time.AfterFunc(d, func() {
		select {
		case <-done:
		default:
			if cmd.Process != nil {
				cmd.Process.Kill()
			}
		}
	})
	defer timer.Stop()
	return cmd.CombinedOutput()
}

// mustRunCmd runs a setup command, failing the test if it fails.
func mustRunCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runBounded(exec.Command(name, args...), patience)
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// wantHopError runs arbor exec --to path and checks that it exits 255
// with stderr matching every pattern (method, node, cause).
func wantHopError(t *testing.T, flags []string, path string, patterns ...string) {
	t.Helper()
	res := runArbor(t, arborArgs(flags, []string{"exec", "--to", path, "--", "true"})...)
	if res.code != 255 {
		t.Fatalf("%s: want exit 255\n%v", path, res)
	}
	for _, p := range patterns {
		if !regexp.MustCompile(p).Match(res.stderr) {
			t.Fatalf("%s: stderr does not match %q\n%v", path, p, res)
		}
	}
}

// execOut runs arbor exec --to path -- argv and returns its stdout,
// failing the test unless it exits 0.
func execOut(t *testing.T, flags []string, path string, argv ...string) string {
	t.Helper()
	res := runArbor(t, arborArgs(flags, append([]string{"exec", "--to", path, "--"}, argv...))...)
	if res.code != 0 {
		t.Fatalf("%s %q: %v", path, argv, res)
	}
	return string(res.stdout)
}

// TestMethodSu: su to nobody, whose login shell is nologin, works (the
// method names /bin/sh), from the root and from a node below it; from a
// node that is not root, su's password prompt fails the spawn at once
// with "su needs a password", naming the node, and never hangs.
func TestMethodSu(t *testing.T) {
	needRoot(t)
	if sh := loginShell(t, "nobody"); !strings.Contains(sh, "nologin") && !strings.Contains(sh, "false") {
		t.Logf("nobody's login shell is %s, not nologin", sh)
	}
	for _, path := range []string{"su:nobody", "local/su:nobody"} {
		if got := execOut(t, nil, path, "id", "-un"); got != "nobody\n" {
			t.Fatalf("%s: id -un = %q, want nobody", path, got)
		}
	}
	if got := execOut(t, nil, "su", "id", "-un"); got != "root\n" {
		t.Fatalf("su: id -un = %q, want root", got)
	}
	user, _ := loginUser(t)
	start := time.Now()
	wantHopError(t, nil, "sudo:"+user+"/su:nobody",
		`agent\.spawn: spawning sudo:`+user+`/su:nobody: su needs a password on node sudo:`+user+` for nobody`)
	t.Logf("the password prompt failed the spawn after %s", time.Since(start).Round(time.Millisecond))
	wantHopError(t, nil, "su:arbor-no-such-user", `spawning su:arbor-no-such-user: no user arbor-no-such-user on node root`)
}

// loginShell is user's login shell from /etc/passwd.
func loginShell(t *testing.T, user string) string {
	t.Helper()
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == user {
			return f[6]
		}
	}
	return ""
}

// TestMethodDoas: doas -n to nobody with a nopass rule; without a rule,
// "permission denied"; with a rule that wants a password, "doas needs a
// password", at once. The test writes /etc/doas.conf and puts back what
// was there.
func TestMethodDoas(t *testing.T) {
	needRoot(t)
	needTool(t, "doas", "opendoas")
	user, _ := loginUser(t)
	const conf = "/etc/doas.conf"
	old, err := os.ReadFile(conf)
	existed := err == nil
	t.Cleanup(func() {
		if existed {
			os.WriteFile(conf, old, 0o600)
		} else {
			os.Remove(conf)
		}
	})
	rules := fmt.Sprintf("permit nopass root as nobody\npermit %s as nobody\n", user)
	if err := os.WriteFile(conf, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"doas:nobody", "local/doas:nobody"} {
		if got := execOut(t, nil, path, "id", "-un"); got != "nobody\n" {
			t.Fatalf("%s: id -un = %q, want nobody", path, got)
		}
	}
	wantHopError(t, nil, "doas:daemon",
		`spawning doas:daemon: permission denied: doas\.conf on node root does not let this user run commands as daemon`)
	wantHopError(t, nil, "sudo:"+user+"/doas:nobody",
		`spawning sudo:`+user+`/doas:nobody: doas needs a password on node sudo:`+user+` for nobody`)
}

// TestMethodNsenter: nsenter into a network namespace the test makes
// with ip netns (directly, and from a node over the loopback sshd), and
// into the mount namespace of a process the test starts with unshare,
// where a tmpfs holds a file no other namespace sees. A missing
// namespace or process is "not found".
func TestMethodNsenter(t *testing.T) {
	needRoot(t)
	needTool(t, "nsenter", "util-linux")
	needTool(t, "ip", "iproute2")
	ns := fmt.Sprintf("arbortest%d", os.Getpid())
	mustRunCmd(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	want := mustRunCmd(t, "ip", "netns", "exec", ns, "readlink", "/proc/self/ns/net")
	mine, _ := os.Readlink("/proc/self/ns/net")
	if want == mine+"\n" {
		t.Fatalf("the namespace %s is this process's own (%s)", ns, mine)
	}
	path := "nsenter:netns=" + ns
	if got := execOut(t, nil, path, "readlink", "/proc/self/ns/net"); got != want {
		t.Fatalf("%s: network namespace %q, want %q", path, got, want)
	}

	s := startSSHD(t, sshdtest.Options{})
	via := "ssh:" + sshdtest.Alias + "/" + path
	if got := execOut(t, sshFlags(s), via, "readlink", "/proc/self/ns/net"); got != want {
		t.Fatalf("%s: network namespace %q, want %q", via, got, want)
	}

	// A mount namespace: a tmpfs on dir, with a marker, seen only there.
	dir := t.TempDir()
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
		fmt.Sprintf("mount -t tmpfs arbortest %s && echo inside > %s/marker && echo ready && exec sleep 600", dir, dir))
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		holder.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		b := make([]byte, 16)
		n, _ := out.Read(b)
		ready <- string(b[:n])
	}()
	select {
	case r := <-ready:
		if r != "ready\n" {
			t.Fatalf("unshare: %q", r)
		}
	case <-time.After(patience):
		t.Fatal("unshare did not set up its mount namespace")
	}
	if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
		t.Fatal("the marker is visible outside the mount namespace")
	}
	pid := strconv.Itoa(holder.Process.Pid)
	if got := execOut(t, nil, "nsenter:"+pid, "cat", filepath.Join(dir, "marker")); got != "inside\n" {
		t.Fatalf("nsenter:%s: marker %q, want inside", pid, got)
	}

	wantHopError(t, nil, "nsenter:netns=arbor-no-such-ns",
		`spawning nsenter:netns=arbor-no-such-ns: no network namespace arbor-no-such-ns on node root`)
	wantHopError(t, nil, "local/nsenter:2147483647",
		`spawning local\.\d+/nsenter:2147483647: no process 2147483647 on node local\.\d+`)
}

// TestMethodChroot: chroot into a directory holding nothing but a static
// busybox (so the bootstrap runs on busybox alone), whose path has a ":"
// and ends in a directory named "local"; directly and after a sudo hop.
// A missing directory is "not found".
func TestMethodChroot(t *testing.T) {
	needRoot(t)
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		needTool(t, "busybox", "busybox-static")
	}
	if dyn, err := spawn.IsDynamic(busybox); err != nil || dyn {
		t.Skipf("%s is not a static busybox (install busybox-static): dynamic %v, %v", busybox, dyn, err)
	}
	base := busyboxChroot(t, busybox)
	// Move the chroot's content to base/a:b/local.
	dir := filepath.Join(base, "a:b", "local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"bin", "dev", "tmp"} {
		if err := os.Rename(filepath.Join(base, e), filepath.Join(dir, e)); err != nil {
			t.Fatal(err)
		}
	}
	hop := "chroot:{" + dir + "}"
	for _, path := range []string{hop, "sudo:root/" + hop, "local/" + hop} {
		// Nothing but busybox: ls / shows what the test put there (and
		// the agent cache the bootstrap made under $HOME).
		got := execOut(t, nil, path, "/bin/ls", "/")
		if !strings.HasPrefix(got, "bin\ndev\n") || !strings.Contains(got, "tmp\n") {
			t.Fatalf("%s: ls / = %q, want the busybox chroot", path, got)
		}
		if got := execOut(t, nil, path, "/bin/busybox", "true"); got != "" {
			t.Fatalf("%s: %q", path, got)
		}
	}
	wantHopError(t, nil, "chroot:{/arbor-no-such-dir/local}",
		`spawning chroot:\{/arbor-no-such-dir/local\}: no directory /arbor-no-such-dir/local on node root`)
}

// TestMethodPodman: podman exec -i into a container of an image the test
// imports from a busybox root filesystem (no registry), as root and as
// uid 65534, from the root and from a node below it (the tool options travel
// with the spawn request). A missing container and a stopped one are
// named as such.
func TestMethodPodman(t *testing.T) {
	needRoot(t)
	needTool(t, "podman", "podman")
	// This machine's crun cannot start containers (a cgroup v1/v2 hybrid
	// and no CAP_SYS_RESOURCE); runc can, given rlimits it may set.
	var global []string
	if _, err := exec.LookPath("runc"); err == nil {
		global = []string{"--runtime", "runc"}
	}
	run := func(args ...string) (string, error) {
		out, err := runBounded(exec.Command("podman", append(global, args...)...), patience)
		return strings.TrimSpace(string(out)), err
	}
	base := busyboxChroot(t, "/bin/busybox")
	tar, err := exec.Command("tar", "-C", base, "-c", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("localhost/arbortest-busybox:%d", os.Getpid())
	imp := exec.Command("podman", "import", "-", image)
	imp.Stdin = strings.NewReader(string(tar))
	if out, err := runBounded(imp, patience); err != nil {
		t.Skipf("podman import cannot run here: %v\n%s", err, out)
	}
	t.Cleanup(func() { run("rmi", "-f", image) })
	name := fmt.Sprintf("arbortest%d", os.Getpid())
	stopped := name + "-stopped"
	t.Cleanup(func() { run("rm", "-f", "-t", "0", name, stopped) })
	if out, err := run("run", "-d", "--name", name, "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		image, "/bin/busybox", "sleep", "600"); err != nil {
		t.Skipf("podman cannot run a container on this machine: %v\n%s", err, out)
	}
	if out, err := run("create", "--name", stopped, image, "/bin/busybox", "sleep", "600"); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	var flags []string
	for _, g := range global {
		flags = append(flags, "--tool-option", "podman="+g)
	}
	for _, tc := range []struct{ path, user string }{
		{"podman:" + name, "0"},
		{"podman:" + name + "@65534", "65534"}, // the image has no /etc/passwd
		{"local/podman:" + name, "0"},
	} {
		if got := execOut(t, flags, tc.path, "/bin/id", "-u"); got != tc.user+"\n" {
			t.Fatalf("%s: id -u = %q, want %s", tc.path, got, tc.user)
		}
	}
	wantHopError(t, flags, "podman:arbor-no-such-container",
		`spawning podman:arbor-no-such-container: container arbor-no-such-container not found by podman on node root`)
	wantHopError(t, flags, "podman:"+name+"@nobody",
		`spawning podman:`+name+`@nobody: user not found in container `+name+`@nobody \(podman on node root\)`)
	wantHopError(t, flags, "local/podman:"+stopped,
		`spawning local\.\d+/podman:`+stopped+`: container `+stopped+` is not running \(podman on node local\.\d+\)`)
}

// TestMethodDocker: docker exec -i into a container of an image imported
// offline from a busybox root filesystem (no registry is reachable), as
// root, as a numeric user, and from a node below the root; a missing and a
// stopped container are named errors. The test starts dockerd itself when
// none answers, and stops it by its pid.
func TestMethodDocker(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	if exec.Command("docker", "version", "--format", "{{.Server.Version}}").Run() != nil {
		dockerd, err := exec.LookPath("dockerd")
		if err != nil {
			t.Skipf("no docker engine here: %v", err)
		}
		logf, err := os.Create(filepath.Join(t.TempDir(), "dockerd.log"))
		if err != nil {
			t.Fatal(err)
		}
		// No bridge and no firewall rules: the containers run with --network
		// none, and the host's iptables stay as the other tests expect.
		d := exec.Command(dockerd, "--pidfile", filepath.Join(t.TempDir(), "dockerd.pid"), "--iptables=false", "--bridge=none")
		d.Stdout, d.Stderr = logf, logf
		if err := d.Start(); err != nil {
			t.Skipf("dockerd cannot start here: %v", err)
		}
		t.Cleanup(func() {
			d.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { d.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(patience):
				d.Process.Kill()
			}
		})
		deadline := time.Now().Add(patience)
		for exec.Command("docker", "version", "--format", "{{.Server.Version}}").Run() != nil {
			if time.Now().After(deadline) {
				out, _ := os.ReadFile(logf.Name())
				t.Skipf("dockerd did not come up here:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	run := func(args ...string) (string, error) {
		out, err := runBounded(exec.Command("docker", args...), patience)
		return strings.TrimSpace(string(out)), err
	}
	base := busyboxChroot(t, "/bin/busybox")
	if err := os.MkdirAll(filepath.Join(base, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(base, "tmp"), 0o1777)
	tar, err := exec.Command("tar", "-C", base, "-c", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("arbortest-busybox:%d", os.Getpid())
	imp := exec.Command("docker", "import", "-", image)
	imp.Stdin = strings.NewReader(string(tar))
	if out, err := runBounded(imp, patience); err != nil {
		t.Skipf("docker import cannot run here: %v\n%s", err, out)
	}
	t.Cleanup(func() { run("rmi", "-f", image) })
	name := fmt.Sprintf("arbortest%d", os.Getpid())
	stopped := name + "-stopped"
	t.Cleanup(func() { run("rm", "-f", name, stopped) })
	if out, err := run("run", "-d", "--name", name, "--network", "none", image, "/bin/busybox", "sleep", "600"); err != nil {
		t.Skipf("docker cannot run a container on this machine: %v\n%s", err, out)
	}
	if out, err := run("create", "--name", stopped, image, "/bin/busybox", "sleep", "600"); err != nil {
		t.Fatalf("docker create: %v\n%s", err, out)
	}
	for _, tc := range []struct{ path, user string }{
		{"docker:" + name, "0"},
		{"docker:" + name + "@65534", "65534"}, // the image has no /etc/passwd
		{"local/docker:" + name, "0"},
	} {
		if got := execOut(t, nil, tc.path, "/bin/id", "-u"); got != tc.user+"\n" {
			t.Fatalf("%s: id -u = %q, want %s", tc.path, got, tc.user)
		}
	}
	wantHopError(t, nil, "docker:arbor-no-such-container",
		`spawning docker:arbor-no-such-container: container arbor-no-such-container not found by docker on node root`)
	wantHopError(t, nil, "local/docker:"+stopped,
		`spawning local\.\d+/docker:`+stopped+`: container `+stopped+` is not running \(docker on node local\.\d+\)`)
}

// TestMethodToolErrors: what the tools say when they cannot run here,
// each named with its method, node and cause: a tool that is not
// installed (on the root, and on a node below it, where --tool-path
// travelled), the docker CLI without its daemon, kubectl without a
// cluster, a cmd method the config file does not define.
func TestMethodToolErrors(t *testing.T) {
	flags := []string{"--tool-path", "docker=/arbor-no-such-dir/docker"}
	wantHopError(t, flags, "docker:web",
		`spawning docker:web: docker is not installed on node root \(/arbor-no-such-dir/docker not found\)`)
	wantHopError(t, flags, "local/docker:web",
		`agent\.spawn: spawning local\.\d+/docker:web: docker is not installed on node local\.\d+ \(/arbor-no-such-dir/docker not found\)`)
	for _, m := range []string{"lxc", "incus"} {
		if _, err := exec.LookPath(m); err == nil {
			continue
		}
		wantHopError(t, nil, m+":web", `spawning `+m+`:web: `+m+` is not installed on node root`)
	}
	if _, err := exec.LookPath("docker"); err == nil {
		if exec.Command("docker", "version", "--format", "{{.Server.Version}}").Run() != nil {
			wantHopError(t, nil, "docker:web", `spawning docker:web: the docker engine on node root cannot be reached`)
		}
	}
	if _, err := exec.LookPath("kubectl"); err == nil {
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		// A cluster on a port where nothing listens.
		os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: t\n"), 0o600)
		wantHopError(t, []string{"--kubeconfig", kc}, "local/kubectl:{prod/web-0:app}",
			`spawning local\.\d+/kubectl:\{prod/web-0:app\}: the Kubernetes API cannot be reached by kubectl on node local\.\d+`)
	}
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte("[cmd]\nplain = [\"env\", \"CMD_TARGET={target}\", \"/bin/sh\", \"-c\", \"{script}\"]\n"), 0o600)
	t.Setenv("ARBOR_CONFIG", cfg)
	wantHopError(t, nil, "cmd:nosuch:x", `no cmd method "nosuch" in the config file`)
}

// TestMethodCmd: a cmd: method from the config file, used by the root
// and by a node below it (the template travels in the spawn request).
func TestMethodCmd(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config")
	err := os.WriteFile(cfg, []byte(`cmd.plain = ["env", "CMD_TARGET={target}", "/bin/sh", "-c", "{script}"]`+"\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARBOR_CONFIG", cfg)
	for _, path := range []string{"cmd:plain:a:b", "local/cmd:{plain:x/y}"} {
		hops, _ := spawn.ParsePath(path)
		_, target, _ := strings.Cut(hops[len(hops)-1].Target, ":")
		if got := execOut(t, nil, path, "/bin/sh", "-c", "echo $CMD_TARGET"); got != target+"\n" {
			t.Fatalf("%s: target %q, want %q", path, got, target)
		}
	}
	os.WriteFile(cfg, []byte("cmd.bad = [\"env\"]\n"), 0o600)
	res := runArbor(t, "exec", "--to", "local", "--", "true")
	if res.code != 2 || !strings.Contains(string(res.stderr), "never names {script}") {
		t.Fatalf("a template without {script}: want a usage error\n%v", res)
	}
}

// TestMethodTree: arbor tree shows each node's method, and its name (the
// hop) shows the target: a mixed chain local/su:nobody/... through a
// daemon.
func TestMethodTree(t *testing.T) {
	needRoot(t)
	s := startServe(t)
	id, name := s.spawnID(t, "local/su:nobody")
	n := s.tree(t).find(id)
	if n == nil || n.Method != "su" || !strings.HasSuffix(n.Name, "/su:nobody") || name != n.Name {
		t.Fatalf("tree: node %d is %+v, want method su named .../su:nobody", id, n)
	}
	out := s.must(t, "tree")
	if !regexp.MustCompile(`(?m)^.*\d+ local\.\d+/su:nobody\s+su\b`).MatchString(out) {
		t.Fatalf("arbor tree does not show the su node's name and method:\n%s", out)
	}
}
