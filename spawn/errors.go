package spawn

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Errors a spawn can fail with. Match them with errors.Is; the error
// itself (a *HopError) says which node and hop, and carries the exit status
// and stderr tail of the process that failed.
var (
	// ErrUnsupported reports a method this build cannot spawn.
	ErrUnsupported = errors.New("arbor: connection method not supported")
	// ErrConnectTimeout matches a child that did not come up in time.
	ErrConnectTimeout = errors.New("arbor: connection timed out")
	// ErrNameNotResolved: ssh could not resolve the host name.
	ErrNameNotResolved = errors.New("arbor: host name not resolved")
	// ErrUnreachable: the host refused or could not be reached.
	ErrUnreachable = errors.New("arbor: host unreachable")
	// ErrAuthRefused: the ssh server refused every credential offered.
	ErrAuthRefused = errors.New("arbor: authentication refused")
	// ErrHostKey: the host key is unknown (with strict checking) or changed.
	ErrHostKey = errors.New("arbor: host key verification failed")
	// ErrNoShell: the remote side has no usable /bin/sh to run the bootstrap.
	ErrNoShell = errors.New("arbor: no usable /bin/sh")
	// ErrSudoPassword: sudo wanted a password (arbor runs sudo -n). A
	// HopError of this kind matches ErrPassword too.
	ErrSudoPassword = errors.New("arbor: sudo needs a password")
	// ErrPassword: the method's tool wanted a password (su, doas, sudo, a
	// cmd: method). Arbor never answers one: the tool is killed as soon
	// as it prompts, and the spawn fails at once.
	ErrPassword = errors.New("arbor: a password is needed")
	// ErrToolMissing: the method's tool (docker, su, ...) is not
	// installed on the node that must run it.
	ErrToolMissing = errors.New("arbor: tool not installed")
	// ErrPermission: the tool refused: no right to become that user,
	// enter that namespace, chroot, or use the container engine.
	ErrPermission = errors.New("arbor: permission denied")
	// ErrTargetNotFound: no such user, container, pod, process, network
	// namespace or directory.
	ErrTargetNotFound = errors.New("arbor: target not found")
	// ErrTargetStopped: the container or pod exists but is not running.
	ErrTargetStopped = errors.New("arbor: target not running")
	// ErrNoBinary: no agent binary for the remote OS/architecture.
	ErrNoBinary = errors.New("arbor: no agent binary for the platform")
	// ErrDynamicAgent: the only agent binary for the remote platform is
	// dynamically linked, so it is not shipped (see static.go).
	ErrDynamicAgent = errors.New("arbor: agent binary is dynamically linked")
	// ErrBootstrap: the bootstrap or the agent exited before the link came
	// up, for a reason none of the errors above names.
	ErrBootstrap = errors.New("arbor: agent exited during bootstrap")
)

// HopError is a hop that could not be started.
type HopError struct {
	Node   string // name of the node being spawned
	Hop    string // e.g. "ssh:db1", "sudo:postgres"
	Kind   error  // one of the Err values above
	Detail string // what happened, in words
	Status string // how the process ended ("exit status 255"), if it did
	Stderr string // the last lines of its stderr
	// Err is the failure underneath, if any (the link's hello error of a
	// local child). It is matched through Unwrap but not printed: Detail
	// says what happened.
	Err error
}

func (e *HopError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "arbor: spawning %s", e.Node)
	if !strings.HasSuffix(e.Node, e.Hop) {
		fmt.Fprintf(&b, " (%s)", e.Hop)
	}
	fmt.Fprintf(&b, ": %s", e.Detail)
	if e.Status != "" {
		fmt.Fprintf(&b, " (%s)", e.Status)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		b.WriteString("; stderr:\n" + s)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrAuthRefused) and the like work, and
// reaches Err.
func (e *HopError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// sshFailures map ssh's own messages (it exits 255) to an error kind and
// the words a user sees. Order matters: the first match wins.
var sshFailures = []struct {
	re     *regexp.Regexp
	kind   error
	detail string
}{
	{regexp.MustCompile(`(?i)could not resolve hostname|name or service not known|nodename nor servname|temporary failure in name resolution|no address associated`),
		ErrNameNotResolved, "host name not resolved"},
	{regexp.MustCompile(`(?i)remote host identification has changed|host key for .* has changed`),
		ErrHostKey, "host key verification failed: the host key has changed"},
	{regexp.MustCompile(`(?i)no \S+ host key is known|host key verification failed`),
		ErrHostKey, "host key verification failed: the host key is unknown and strict checking is on"},
	{regexp.MustCompile(`(?i)permission denied \(|too many authentication failures|no more authentication methods`),
		ErrAuthRefused, "authentication refused"},
	{regexp.MustCompile(`(?i)connection timed out|operation timed out|timed out during banner exchange`),
		ErrConnectTimeout, "connection timed out"},
	{regexp.MustCompile(`(?i)connection refused|no route to host|network is unreachable|host is down|connection reset|connection closed by|kex_exchange_identification`),
		ErrUnreachable, "host unreachable"},
}

// noShell matches a login shell's complaint that /bin/sh cannot run.
var noShell = regexp.MustCompile(`/bin/sh.*(not found|no such file|permission denied|cannot execute|exec format error)`)

// why is what the parent knows of a remote hop's process that ended
// before the bootstrap handed over.
type why struct {
	node     string // the node that ran the tool
	target   string // the hop's target, as the method reads it
	code     int    // exit code, -1 when signalled
	saw      bool   // the bootstrap script printed a status line
	prompted bool   // the tool prompted for a password and was killed
	stderr   string // the tail of its stderr
}

// classify names why a hop of method m ended before the bootstrap handed
// over, and says it in words that name the method, the node that ran its
// tool and the cause.
func classify(m method, w why) (error, string) {
	if m.name == "ssh" && w.code == 255 {
		for _, f := range sshFailures {
			if f.re.MatchString(w.stderr) {
				return f.kind, f.detail
			}
		}
		return ErrUnreachable, "ssh failed"
	}
	r := strings.NewReplacer("{tool}", m.tool, "{node}", w.node, "{target}", w.target,
		"{netns}", strings.TrimPrefix(w.target, "netns="))
	if !w.saw && (w.code == 126 || w.code == 127) && noShell.MatchString(strings.ToLower(w.stderr)) {
		return ErrNoShell, "no usable /bin/sh to run the bootstrap"
	}
	if w.saw || m.name == "ssh" {
		return ErrBootstrap, "agent exited during bootstrap"
	}
	if w.prompted {
		return passwordKind(m), passwordDetail(m, w)
	}
	for _, f := range append(m.failures[:len(m.failures):len(m.failures)], commonFailures...) {
		switch {
		case !f.re.MatchString(w.stderr):
		case f.kind == ErrPassword || f.kind == ErrSudoPassword:
			return passwordKind(m), passwordDetail(m, w)
		default:
			return f.kind, r.Replace(f.detail)
		}
	}
	return ErrBootstrap, "agent exited during bootstrap"
}

func passwordKind(m method) error {
	if m.name == "sudo" {
		return ErrSudoPassword
	}
	return ErrPassword
}

// passwordDetail: "su needs a password on node X for nobody; ...".
func passwordDetail(m method, w why) string {
	if m.name == "sudo" {
		host, _ := os.Hostname()
		return fmt.Sprintf("sudo on %s needs a password for %s; arbor runs sudo -n (never prompts) on node %s: %s",
			host, orRoot(w.target), w.node, m.passwordHint)
	}
	d := fmt.Sprintf("%s needs a password on node %s", m.name, w.node)
	if m.sameHost {
		d += " for " + orRoot(w.target)
	} else if w.target != "" {
		d += " for " + w.target
	}
	d += "; arbor never answers a password prompt"
	if m.passwordHint != "" {
		d += ": " + m.passwordHint
	}
	return d
}
