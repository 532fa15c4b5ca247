package spawn

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// The bootstrap protocol, on the ssh (or sudo) process's stdin and stdout,
// before the link's hello:
//
//	remote: ARBOR-BOOT1 hit OS ARCH            cache hit, verified; the agent runs now
//	remote: ARBOR-BOOT1 need OS ARCH HASH ENC  miss (HASH "-": no binary for OS/ARCH)
//	parent: LENGTH\n then LENGTH bytes         the binary, gzip'd if ENC is "gzip"
//	remote: ARBOR-BOOT1 ok                     stored (temp + rename); the agent runs now
//	remote: ARBOR-BOOT1 fail MESSAGE           the bootstrap gave up
//
// The parent embeds in the script the SHA-256 of every binary it can
// provide, by platform, so the script can decide a cache hit alone: a hit
// costs no round trip beyond the ssh connection. The parent sends nothing
// after the binary until it reads "ok", so the script's readers (sh's read,
// head -c) can never consume bytes of the link. Lines before the first
// status line (a noisy login shell) are logged and skipped.
//
// The parent trusts the remote end no further than this exchange: one
// bootstrap uploads the binary at most once. "hit" and "need" may only
// come first, "ok" only after the upload; a status out of that order (a
// second "need" above all, which would have the parent send the binary
// again and again) fails the spawn at once, and the process is killed.

//go:embed bootstrap.sh
var bootstrapSource string

// bootPrefix starts every status line of the bootstrap script.
const bootPrefix = "ARBOR-BOOT1 "

// Bootstrap outcomes, as Process.Bootstrap reports them.
const (
	BootHit    = "hit"
	BootUpload = "upload"
)

var (
	platformRE = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9]+$`)
	hashRE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	envRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_./:@%+,-]*$`)
)

// bootstrapScript renders the script for a table of platform → SHA-256
// and the environment the agent gets, as one line.
func bootstrapScript(table map[string]string, env []string) (string, error) {
	platforms := make([]string, 0, len(table))
	for p := range table {
		platforms = append(platforms, p)
	}
	sort.Strings(platforms)
	var cases strings.Builder
	for _, p := range platforms {
		if !platformRE.MatchString(p) || !hashRE.MatchString(table[p]) {
			return "", fmt.Errorf("arbor: bad agent binary table entry %q: %q", p, table[p])
		}
		fmt.Fprintf(&cases, "%s) h=%s;; ", p, table[p])
	}
	var envs strings.Builder
	for _, kv := range env {
		if !envRE.MatchString(kv) {
			return "", fmt.Errorf("arbor: environment entry %q cannot be passed to a remote agent", kv)
		}
		k, _, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&envs, "%s; export %s; ", kv, k)
	}
	var lines []string
	for _, l := range strings.Split(bootstrapSource, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		l = strings.ReplaceAll(l, "@TABLE@", strings.TrimSpace(cases.String()))
		l = strings.ReplaceAll(l, "@ENV@", strings.TrimSpace(envs.String()))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " "), nil
}

// shellCommand is the remote command line for ssh: the script under an
// explicit /bin/sh, so a host without one fails recognisably. The script
// holds no single quote (see bootstrap.sh), so quoting is a plain wrap.
func shellCommand(script string) string {
	return "/bin/sh -c '" + script + "'"
}

// bootResult is what the parent learned from the bootstrap.
type bootResult struct {
	mode      string // BootHit or BootUpload
	platform  string
	sawStatus bool // the script printed at least one status line
}

// maxJunk bounds what a login shell may print before the first status line.
const maxJunk = 64 << 10

// runBootstrap is the parent's half of the bootstrap protocol. It returns
// when the agent runs (hit or ok), or with the error that stopped it; an
// io.EOF error means the remote side ended without saying why, and the
// caller asks the process.
func runBootstrap(ctx context.Context, r *bufio.Reader, w io.Writer, bins *Binaries, node, hop string, log hclog.Logger) (bootResult, error) {
	var res bootResult
	junk := 0
	uploaded := false // the binary went out: only "ok" or "fail" may follow
	outOfOrder := func(why string) error {
		return &HopError{Node: node, Hop: hop, Kind: ErrBootstrap, Detail: why}
	}
	for {
		line, err := readLine(r)
		if err != nil {
			return res, err
		}
		rest, ok := strings.CutPrefix(line, bootPrefix)
		if !ok {
			junk += len(line) + 1
			if junk > maxJunk {
				return res, &HopError{Node: node, Hop: hop, Kind: ErrBootstrap,
					Detail: fmt.Sprintf("more than %d bytes on stdout before the bootstrap answered", maxJunk)}
			}
			log.Debug("remote output before the bootstrap", "child", node, "hop", hop, "line", line)
			continue
		}
		res.sawStatus = true
		f := strings.Fields(rest)
		if len(f) == 0 {
			return res, &HopError{Node: node, Hop: hop, Kind: ErrBootstrap, Detail: "empty bootstrap status line"}
		}
		switch {
		case f[0] == "fail":
			return res, &HopError{Node: node, Hop: hop, Kind: ErrBootstrap,
				Detail: "bootstrap failed on the remote side: " + strings.Join(f[1:], " ")}
		case f[0] == "need" && uploaded:
			return res, outOfOrder("remote asked for the agent binary again after it was uploaded")
		case f[0] == "hit" && uploaded:
			return res, outOfOrder("remote reported a cache hit after the agent binary was uploaded")
		case f[0] == "ok" && !uploaded:
			return res, outOfOrder("remote reported the agent binary stored before any was uploaded")
		case f[0] == "hit" && len(f) == 3:
			res.mode, res.platform = BootHit, f[1]+"/"+f[2]
			log.Debug("agent cache hit", "child", node, "hop", hop, "platform", res.platform)
			return res, nil
		case f[0] == "ok":
			res.mode = BootUpload
			return res, nil
		case f[0] == "need" && len(f) == 5:
			res.platform = f[1] + "/" + f[2]
			hash, enc := f[3], f[4]
			if !platformRE.MatchString(res.platform) || (hash != "-" && !hashRE.MatchString(hash)) || (enc != "gzip" && enc != "raw") {
				return res, &HopError{Node: node, Hop: hop, Kind: ErrBootstrap,
					Detail: fmt.Sprintf("malformed bootstrap status %q", line)}
			}
			if hash == "-" {
				if path, self, ok := bins.dynamic(res.platform); ok {
					return res, &HopError{Node: node, Hop: hop, Kind: ErrDynamicAgent,
						Detail: dynamicHint(res.platform, path, self)}
				}
				return res, &HopError{Node: node, Hop: hop, Kind: ErrNoBinary,
					Detail: fmt.Sprintf("the remote host is %s and there is no agent binary for %s; %s",
						res.platform, res.platform, BuildHint(res.platform))}
			}
			data, err := bins.Binary(ctx, res.platform, hash)
			if err != nil {
				return res, &HopError{Node: node, Hop: hop, Kind: ErrNoBinary,
					Detail: fmt.Sprintf("the remote host is %s: %v; %s", res.platform, err, BuildHint(res.platform))}
			}
			payload := data
			if enc == "gzip" {
				payload = gzipBinary(hash, data)
			}
			log.Debug("uploading agent binary", "child", node, "hop", hop, "platform", res.platform,
				"bytes", len(data), "sent", len(payload), "encoding", enc)
			uploaded = true
			if _, err := fmt.Fprintf(w, "%d\n", len(payload)); err != nil {
				return res, io.EOF
			}
			if _, err := w.Write(payload); err != nil {
				return res, io.EOF
			}
		default:
			return res, &HopError{Node: node, Hop: hop, Kind: ErrBootstrap,
				Detail: fmt.Sprintf("unexpected bootstrap status %q", line)}
		}
	}
}

// readLine reads one line of at most 4 KiB, without the newline.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, chunk...)
		if len(b) > 4096 {
			return string(b[:4096]), nil
		}
		if !isPrefix {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
	}
}

// RemoteOptions says how to start an agent on the other side of ssh or
// sudo.
type RemoteOptions struct {
	// Hello is the hello to send (Name and ID filled by the caller).
	Hello wire.Hello
	// Link configures the link; its HelloTimeout bounds the whole start:
	// connecting, the bootstrap (upload included) and the hello.
	Link *stream.Config
	// Logger receives the process's stderr lines and bootstrap events.
	Logger hclog.Logger
	// Binaries are the agent binaries this node can ship (nil: itself).
	Binaries *Binaries
	// Env is set for the remote agent (KEY=VALUE; ARBOR_LOG_LEVEL).
	Env []string
	// SSH configures ssh hops.
	SSH SSHOptions
	// Tools configures the other methods' tools and the cmd: methods.
	Tools ToolOptions
	// Spawner is the name of the node that runs the method's tool (this
	// one), for errors: "docker is not installed on node bastion".
	Spawner string
}

// startRemote runs the tool of method m for target (hop is the hop as a
// path writes it), drives the bootstrap over its stdio and opens the link
// to the agent it starts.
func startRemote(ctx context.Context, m method, target, hop string, o RemoteOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	bins := o.Binaries
	if bins == nil {
		bins = &Binaries{}
	}
	cfg := stream.DefaultConfig()
	if o.Link != nil {
		c := *o.Link
		cfg = &c
	}
	name := o.Hello.Name
	fail := func(err error) (*stream.Link, *Process, wire.HelloAck, error) {
		return nil, nil, wire.HelloAck{}, err
	}
	// A sudo, su or doas hop runs the agent on this host: this node's
	// own binary serves it even when dynamic. Every other hop may reach
	// another libc.
	table, err := bins.table(m.sameHost)
	if err != nil {
		return fail(fmt.Errorf("%w (spawning %s over %s)", err, name, hop))
	}
	script, err := bootstrapScript(table, o.Env)
	if err != nil {
		return fail(err)
	}
	args, err := m.argv(target, script, o)
	if err != nil {
		return fail(err)
	}
	spawner := o.Spawner
	if spawner == "" {
		spawner, _ = os.Hostname()
	}
	start := time.Now()
	deadline := start.Add(cfg.HelloTimeout)
	p, conn, err := startProcess(args, nil, log, name, passwordPrompt)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return fail(&HopError{Node: name, Hop: hop, Kind: ErrToolMissing, Err: err,
				Detail: fmt.Sprintf("%s is not installed on node %s (%s not found)", m.tool, spawner, args[0])})
		}
		return fail(&HopError{Node: name, Hop: hop, Kind: ErrUnsupported, Detail: err.Error()})
	}
	// explain turns an early end into the error that names it, once the
	// process has had a moment to exit on its own.
	explain := func(sawStatus bool, timedOut bool) error {
		p.settle(timedOut)
		if timedOut {
			return &HopError{Node: name, Hop: hop, Kind: ErrConnectTimeout,
				Detail: fmt.Sprintf("connection timed out after %s", cfg.HelloTimeout.Round(time.Millisecond)),
				Stderr: p.StderrTail()}
		}
		status, code := p.exitStatus()
		kind, detail := classify(m, why{node: spawner, target: target, code: code, saw: sawStatus,
			prompted: p.prompted.Load(), stderr: p.StderrTail()})
		he := &HopError{Node: name, Hop: hop, Kind: kind, Detail: detail, Status: status, Stderr: p.StderrTail()}
		if kind == ErrSudoPassword {
			he.Err = ErrPassword
		}
		return he
	}

	bctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	br := bufio.NewReaderSize(conn.r, 4096)
	type booted struct {
		res bootResult
		err error
	}
	ch := make(chan booted, 1)
	go func() {
		res, err := runBootstrap(bctx, br, conn.w, bins, name, hop, log)
		ch <- booted{res, err}
	}()
	var b booted
	select {
	case b = <-ch:
	case <-bctx.Done():
		p.Kill() // unblocks the reader
		b = <-ch
		if b.err == nil {
			b.err = bctx.Err()
		}
	}
	if b.err != nil {
		if ctx.Err() != nil {
			p.Kill()
			p.Wait(5 * time.Second)
			return fail(fmt.Errorf("arbor: spawning %s (%s): %w", name, hop, ctx.Err()))
		}
		var he *HopError
		if errors.As(b.err, &he) {
			p.Kill()
			p.Wait(5 * time.Second)
			he.Stderr = p.StderrTail()
			return fail(he)
		}
		return fail(explain(b.res.sawStatus, bctx.Err() != nil))
	}
	p.Bootstrap = b.res.mode
	log.Debug("agent bootstrapped", "child", name, "hop", hop, "how", b.res.mode,
		"platform", b.res.platform, "elapsed", time.Since(start).Round(time.Millisecond).String())

	conn.rc = conn.r.(io.Closer)
	conn.r = br
	lcfg := *cfg
	lcfg.HelloTimeout = max(time.Until(deadline), time.Millisecond)
	l, ack, err := openLink(ctx, p, conn, o.Hello, &lcfg, func(err error) error {
		return explain(true, isTimeout(err))
	})
	if err != nil {
		return fail(err)
	}
	return l, p, ack, nil
}
