package spawn

import (
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

// TestParsePathMethods: every method's target syntax, the braced form
// for targets holding "/", and the awkward cases: a directory named
// "local", a directory with ":" in it, a braced target ending a path or
// followed by more hops. Each written form parses to the hops given and
// writes back (FormatPath) to the same path.
func TestParsePathMethods(t *testing.T) {
	for _, tc := range []struct {
		path string
		want []Hop
	}{
		{"su", []Hop{{"su", ""}}},
		{"su:nobody", []Hop{{"su", "nobody"}}},
		{"local/su:nobody", []Hop{{"local", ""}, {"su", "nobody"}}},
		{"doas:app", []Hop{{"doas", "app"}}},
		{"ssh:bastion/docker:web/su:app", []Hop{{"ssh", "bastion"}, {"docker", "web"}, {"su", "app"}}},
		{"podman:web@nobody", []Hop{{"podman", "web@nobody"}}},
		{"kubectl:web-0", []Hop{{"kubectl", "web-0"}}},
		{"kubectl:web-0:app", []Hop{{"kubectl", "web-0:app"}}},
		{"kubectl:{prod/web-0:app}/su:app", []Hop{{"kubectl", "prod/web-0:app"}, {"su", "app"}}},
		{"lxc:web", []Hop{{"lxc", "web"}}},
		{"incus:remote:web", []Hop{{"incus", "remote:web"}}},
		{"nsenter:1234", []Hop{{"nsenter", "1234"}}},
		{"ssh:h1/nsenter:netns=blue", []Hop{{"ssh", "h1"}, {"nsenter", "netns=blue"}}},
		{"chroot:{/srv/root}", []Hop{{"chroot", "/srv/root"}}},
		{"sudo:root/chroot:{/srv/root}", []Hop{{"sudo", "root"}, {"chroot", "/srv/root"}}},
		// A directory named local, at the end and inside the path.
		{"chroot:{/srv/local}", []Hop{{"chroot", "/srv/local"}}},
		{"chroot:{/local}/local", []Hop{{"chroot", "/local"}, {"local", ""}}},
		{"chroot:{/srv/local/ssh:x}/su:app", []Hop{{"chroot", "/srv/local/ssh:x"}, {"su", "app"}}},
		// ":" in a directory, and a "}" that does not end the hop.
		{"sudo:root/chroot:{/srv/a:b/local}/su:app", []Hop{{"sudo", "root"}, {"chroot", "/srv/a:b/local"}, {"su", "app"}}},
		{"chroot:{/srv/a}b}", []Hop{{"chroot", "/srv/a}b"}}},
		{"cmd:jail:web", []Hop{{"cmd", "jail:web"}}},
		{"cmd:{jail:web/1}/local", []Hop{{"cmd", "jail:web/1"}, {"local", ""}}},
		{"ssh:[::1]:22/sudo", []Hop{{"ssh", "[::1]:22"}, {"sudo", ""}}},
	} {
		got, err := ParsePath(tc.path)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParsePath(%q) = %v, %v; want %v", tc.path, got, err, tc.want)
			continue
		}
		if back := FormatPath(got); back != tc.path {
			t.Errorf("FormatPath(ParsePath(%q)) = %q", tc.path, back)
		}
	}
}

func TestParsePathMethodErrors(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"chroot:/srv/root", "chroot needs an absolute directory, written in braces"},
		{"chroot:srv", "chroot needs an absolute directory"},
		{"chroot:{/srv/root", `unclosed "{"`},
		{"chroot:{}", "empty target in braces"},
		{"chroot:{/srv}/", "hop 2 is empty"},
		{"kubectl:prod/web-0", `unknown method "web-0"`},
		{"nsenter:netns=a/b", `unknown method "b"`},
		{"nsenter:abc", "nsenter needs a PID or netns=NAME"},
		{"nsenter:netns=..", "bad network namespace name"},
		{"su:-c", "bad user name"},
		{"doas:a b", "bad user name"},
		{"docker:-it", "bad container name"},
		{"docker:web@", "bad user name"},
		{"podman:{web x}", "bad container name"},
		{"kubectl:{ns/pod:-c}", "bad container name"},
		{"lxc:{a/b}", "bad container name"},
		{"cmd:jail", "cmd needs a name and a target"},
		{"jail:web", `unknown method "jail"`},
		{"local:x", "local takes no target"},
		{"ssh", "ssh needs a host"},
	} {
		_, err := ParsePath(tc.path)
		if !errors.Is(err, ErrBadPath) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePath(%q) = %v; want ErrBadPath saying %q", tc.path, err, tc.want)
		}
	}
}

// TestMethodArgv: each method's command line against its tool's
// documented form (docker exec, podman exec, kubectl exec, lxc and incus
// exec, nsenter(1), chroot(1), su(1), doas(1), sudo(8)), with the tool's
// path, global options and config file from ToolOptions.
func TestMethodArgv(t *testing.T) {
	const s = "SCRIPT"
	sh := []string{"/bin/sh", "-c", s}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tools := ToolOptions{
		Tools: map[string]Tool{
			"kubectl": {Path: "/opt/kubectl", Args: []string{"--context=prod"}, ConfigFile: "/etc/kube.conf"},
			"podman":  {Args: []string{"--runtime=runc"}},
		},
		Commands: map[string][]string{"jail": {"jexec", "{target}", "/bin/sh", "-c", "{script}"}},
	}
	for _, tc := range []struct {
		hop  Hop
		want []string
	}{
		{Hop{"sudo", ""}, cat([]string{"sudo", "-n", "-u", "root", "--"}, sh)},
		{Hop{"su", ""}, []string{"su", "-s", "/bin/sh", "-c", s, "--", "root"}},
		{Hop{"su", "nobody"}, []string{"su", "-s", "/bin/sh", "-c", s, "--", "nobody"}},
		{Hop{"doas", "app"}, cat([]string{"doas", "-n", "-u", "app"}, sh)},
		{Hop{"docker", "web"}, cat([]string{"docker", "exec", "-i", "web"}, sh)},
		{Hop{"docker", "web@app"}, cat([]string{"docker", "exec", "-i", "-u", "app", "web"}, sh)},
		{Hop{"podman", "web@app"}, cat([]string{"podman", "--runtime=runc", "exec", "-i", "-u", "app", "web"}, sh)},
		{Hop{"kubectl", "web-0"}, cat([]string{"/opt/kubectl", "--context=prod", "--kubeconfig=/etc/kube.conf", "exec", "-i", "web-0", "--"}, sh)},
		{Hop{"kubectl", "prod/web-0:app"}, cat([]string{"/opt/kubectl", "--context=prod", "--kubeconfig=/etc/kube.conf", "exec", "-i", "-n", "prod", "web-0", "-c", "app", "--"}, sh)},
		{Hop{"lxc", "web"}, cat([]string{"lxc", "exec", "--mode=non-interactive", "web", "--"}, sh)},
		{Hop{"incus", "far:web"}, cat([]string{"incus", "exec", "--mode=non-interactive", "far:web", "--"}, sh)},
		{Hop{"nsenter", "42"}, cat([]string{"nsenter", "-t", "42", "-a", "--"}, sh)},
		{Hop{"nsenter", "netns=blue"}, cat([]string{"nsenter", "--net=/run/netns/blue", "--"}, sh)},
		{Hop{"chroot", "/srv/a:b/local"}, cat([]string{"chroot", "/srv/a:b/local"}, sh)},
		{Hop{"cmd", "jail:web"}, []string{"jexec", "web", "/bin/sh", "-c", s}},
		{Hop{"cmd", "jail:a:b/c"}, []string{"jexec", "a:b/c", "/bin/sh", "-c", s}},
	} {
		m, target, err := lookup(tc.hop, tools)
		if err != nil {
			t.Errorf("%s: %v", tc.hop, err)
			continue
		}
		got, err := m.argv(target, s, RemoteOptions{Tools: tools})
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: argv %q, %v\nwant %q", tc.hop, got, err, tc.want)
		}
	}
	if _, _, err := lookup(Hop{"cmd", "nosuch:x"}, tools); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `no cmd method "nosuch"`) {
		t.Errorf("unknown cmd method: %v", err)
	}
	bad := ToolOptions{Tools: map[string]Tool{"docker": {ConfigFile: "/x"}}}
	m, target, _ := lookup(Hop{"docker", "web"}, bad)
	if _, err := m.argv(target, s, RemoteOptions{Tools: bad}); err == nil || !strings.Contains(err.Error(), "docker takes no config file") {
		t.Errorf("a config file for docker: %v", err)
	}
}

func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		tmpl []string
		want string
	}{
		{"jail", []string{"jexec", "{target}", "/bin/sh", "-c", "{script}"}, ""},
		{"jail", nil, "empty argv template"},
		{"jail", []string{"jexec", "{target}"}, "never names {script}"},
		{"-x", []string{"sh", "{script}"}, "bad cmd method name"},
	} {
		err := CheckCommand(tc.name, tc.tmpl)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckCommand(%s, %q) = %v, want %q", tc.name, tc.tmpl, err, tc.want)
		}
	}
}

// TestClassifyMethods: the messages the tools print, taken from the tools
// run on this machine where they could run (su, doas, chroot, nsenter,
// docker without its daemon, podman), and from their sources otherwise,
// become an error kind and words that name the method or its tool, the
// node that ran it and the cause.
func TestClassifyMethods(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		code           int
		prompted       bool
		stderr         string
		kind           error
		words          string
	}{
		{"su", "nobody", -1, true, "Password: ", ErrPassword, "su needs a password on node bastion for nobody"},
		{"su", "nobody", 1, false, "Password: su: Authentication failure", ErrPassword, "su needs a password on node bastion"},
		{"su", "ghost", 1, false, "su: user ghost does not exist or the user entry does not contain all the required fields", ErrTargetNotFound, "no user ghost on node bastion"},
		{"doas", "nobody", 1, false, "doas: Authentication required", ErrPassword, "doas needs a password on node bastion for nobody"},
		{"doas", "nobody", 1, false, "doas: Operation not permitted", ErrPermission, "permission denied: doas.conf on node bastion does not let this user run commands as nobody"},
		{"doas", "nobody", 1, false, "doas: doas is not enabled, /etc/doas.conf: No such file or directory", ErrPermission, "doas is not configured on node bastion"},
		{"sudo", "app", 1, false, "sudo: a password is required", ErrSudoPassword, "needs a password for app; arbor runs sudo -n (never prompts) on node bastion"},
		{"sudo", "app", 1, false, "bob is not in the sudoers file.", ErrPermission, "permission denied: sudoers on node bastion"},
		{"docker", "web", 1, false, "Error response from daemon: No such container: web", ErrTargetNotFound, "container web not found by docker on node bastion"},
		{"docker", "web", 1, false, "Error response from daemon: container 4f2e is not running", ErrTargetStopped, "container web is not running (docker on node bastion)"},
		{"docker", "web", 1, false, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", ErrUnreachable, "the docker engine on node bastion cannot be reached"},
		{"docker", "web", 1, false, "permission denied while trying to connect to the Docker daemon socket", ErrPermission, "docker on node bastion may not use its engine's socket"},
		{"docker", "web@ghost", 126, false, "unable to find user ghost: no matching entries in passwd file", ErrTargetNotFound, "user not found in container web@ghost"},
		{"podman", "web", 125, false, `Error: no container with name or ID "web" found: no such container`, ErrTargetNotFound, "container web not found by podman on node bastion"},
		{"podman", "web", 125, false, "Error: can only create exec sessions on running containers: container state improper", ErrTargetStopped, "container web is not running (podman on node bastion)"},
		{"kubectl", "prod/web-0", 1, false, `Error from server (NotFound): pods "web-0" not found`, ErrTargetNotFound, "pod prod/web-0 not found by kubectl on node bastion"},
		{"kubectl", "web-0", 1, false, `Error from server (Forbidden): pods "web-0" is forbidden`, ErrPermission, "kubectl on node bastion may not exec in web-0"},
		{"kubectl", "web-0", 1, false, "The connection to the server localhost:8080 was refused - did you specify the right host or port?", ErrUnreachable, "the Kubernetes API cannot be reached by kubectl on node bastion"},
		{"lxc", "web", 1, false, "Error: Instance not found", ErrTargetNotFound, "container web not found by lxc on node bastion"},
		{"nsenter", "netns=blue", 1, false, "nsenter: cannot open /run/netns/blue: No such file or directory", ErrTargetNotFound, "no network namespace blue on node bastion"},
		{"nsenter", "99999", 1, false, "nsenter: cannot open /proc/99999/ns/cgroup: No such file or directory", ErrTargetNotFound, "no process 99999 on node bastion"},
		{"nsenter", "1", 1, false, "nsenter: reassociate to namespace 'ns/ipc' failed: Operation not permitted", ErrPermission, "permission denied: nsenter on node bastion"},
		{"chroot", "/srv/x", 125, false, "chroot: cannot change root directory to '/srv/x': No such file or directory", ErrTargetNotFound, "no directory /srv/x on node bastion"},
		{"chroot", "/srv/x", 125, false, "chroot: cannot change root directory to '/srv/x': Operation not permitted", ErrPermission, "permission denied: chroot on node bastion"},
		{"chroot", "/srv/x", 127, false, "chroot: failed to run command '/bin/sh': No such file or directory", ErrNoShell, "no usable /bin/sh"},
		{"nsenter", "1", 1, false, "nsenter: failed to execute /bin/sh: No such file or directory", ErrBootstrap, "agent exited during bootstrap"},
	} {
		m := methods[tc.method]
		kind, words := classify(m, why{node: "bastion", target: tc.target, code: tc.code, prompted: tc.prompted, stderr: tc.stderr})
		if kind != tc.kind || !strings.Contains(words, tc.words) {
			t.Errorf("%s:%s %q: %v %q\nwant %v %q", tc.method, tc.target, tc.stderr, kind, words, tc.kind, tc.words)
		}
	}
}

// TestPromptWatch: a prompt is seen on the line in progress, split over
// reads, and only before the link is up.
func TestPromptWatch(t *testing.T) {
	for _, tc := range []struct {
		chunks []string
		up     bool
		fire   bool
	}{
		{[]string{"Password: "}, false, true},
		{[]string{"Pass", "word:"}, false, true},
		{[]string{"[sudo] password for bob: "}, false, true},
		{[]string{"Password: ", ""}, true, false},
		{[]string{"the password file: is fine\n"}, false, false},
		{[]string{"warning: no password given\nok"}, false, false},
	} {
		w := &promptWatch{re: passwordPrompt, up: new(atomic.Bool)}
		w.up.Store(tc.up)
		fired := 0
		w.onPrompt = func() { fired++ }
		for _, c := range tc.chunks {
			w.Write([]byte(c))
		}
		if (fired == 1) != tc.fire || fired > 1 {
			t.Errorf("%q (up %v): fired %d times", tc.chunks, tc.up, fired)
		}
	}
}
