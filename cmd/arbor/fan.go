package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/arbor-project/arbor/fanout"
	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/targets"
	"golang.org/x/term"
)

// outcome is what a command over a target set shows of one target.
type outcome struct {
	status         int // exit status: the command's, 124 timed out, 255 unreachable
	stdout, stderr []byte
	result         any // call's result
	hasResult      bool
}

// fanRun is one command over a target set: it resolves the set (one-shot
// or against arbor serve), runs op through fanout.Run, prints each result
// in the chosen format, then the summary, and returns the exit status.
type fanRun struct {
	g    *globalFlags
	f    *fanFlags
	verb string

	out     *lockedOut
	started time.Time
}

// fanTargets resolves the command's targets and returns a runner for them
// and a function that tears what it set up down.
func (fr *fanRun) setup(to, node string) ([]fanout.Target, *fanout.Runner, context.Context, func(), error) {
	f := fr.f
	if f.fanout < 1 {
		return nil, nil, nil, nil, usageErr("--fanout must be at least 1")
	}
	if f.commandTimeout < 0 {
		return nil, nil, nil, nil, usageErr("--command-timeout must not be negative")
	}
	r := &fanout.Runner{Fanout: f.fanout, CommandTimeout: f.commandTimeout}
	if to == "" {
		d, err := fr.g.attach()
		if err != nil {
			return nil, nil, nil, nil, err
		}
		ts, err := d.targets(fr.g, node, f)
		if err != nil {
			d.close()
			return nil, nil, nil, nil, err
		}
		return ts, r, d.ctx, d.close, nil
	}
	ts, err := fr.g.oneShotTargets(to, f)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if !fr.g.noDaemon && f.gateways == "" {
		// A running arbor serve lends each target's node from its pool:
		// shared hops are shared with everything else it runs, and a
		// second run finds the nodes warm (no ssh at all).
		d, ok, err := fr.g.dialPool()
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if ok {
			r.Lease = d.lease(fr.g.wait)
			return ts, r, d.ctx, d.close, nil
		}
	}
	if f.gateways != "" {
		gws, err := fr.g.expandPaths(f.gateways, nil)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		r.Gateways = gws
		r.OnReroute = func(gw string, err error) {
			fr.out.status(func() {
				fmt.Fprintf(os.Stderr, "%sgateway %s is gone (%s): its targets not yet started go through the others\n", errs.Prefix, gw, errs.Reason(err))
			})
		}
	}
	root, ctx, stop, err := fr.g.newRoot()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	r.Root, r.ReleaseNodes = root, true
	return ts, r, ctx, func() { root.Close(); stop() }, nil
}

// run runs op over the set and prints; it returns the exit status rule's
// error (nil for 0).
func (fr *fanRun) run(to, node string, op fanout.Op[outcome]) error {
	fr.out = &lockedOut{}
	ts, r, ctx, done, err := fr.setup(to, node)
	if err != nil {
		return err
	}
	defer done()
	fr.started = time.Now()
	stopStatus := fr.out.startStatus(r, fr.started)
	var results []fanout.Result[outcome]
	for res := range fanout.Run(ctx, r, ts, op) {
		res.Value.status = exitOf(res)
		if fr.f.json {
			fr.out.line(os.Stdout, jsonLine(res))
		} else if !fr.f.gather {
			fr.out.flushPartial(res.Target.Label, res.Value)
		}
		results = append(results, res)
	}
	stopStatus()
	if fr.f.gather {
		fr.gathered(results)
	}
	return fr.summary(results, len(ts))
}

// exitOf is a target's exit status: 255 unreachable, 124 timed out, the
// command's own, or 1 for another failure.
func exitOf(res fanout.Result[outcome]) int {
	switch {
	case res.Unreachable:
		return exitUnreachable
	case res.TimedOut:
		return 124
	case res.Err != nil && res.Value.status == 0:
		return exitRemote
	}
	return res.Value.status
}

// jsonResult is one line of --json.
type jsonResult struct {
	Target     string  `json:"target"`
	ExitStatus int     `json:"exit_status"`
	Stdout     string  `json:"stdout"`
	Stderr     string  `json:"stderr"`
	Error      *string `json:"error"`
	Seconds    float64 `json:"seconds"`
	Result     any     `json:"result,omitempty"`
}

func jsonLine(res fanout.Result[outcome]) string {
	o := jsonResult{Target: res.Target.Label, ExitStatus: res.Value.status, Stdout: string(res.Value.stdout),
		Stderr: string(res.Value.stderr), Seconds: float64(int64(res.Seconds*1000)) / 1000}
	if res.Err != nil {
		e := errs.Reason(res.Err)
		o.Error = &e
	}
	if res.Value.hasResult {
		o.Result = res.Value.result
	}
	b, _ := json.Marshal(o)
	return string(b) + "\n"
}

// gathered prints identical outputs once, under the folded set of the
// targets that gave them, groups ordered by their first label.
func (fr *fanRun) gathered(results []fanout.Result[outcome]) {
	type group struct {
		labels []string
		out    string
	}
	byOut := map[string]*group{}
	var order []*group
	for _, res := range results {
		var key string
		if res.Value.hasResult {
			b, _ := json.MarshalIndent(res.Value.result, "", "  ")
			key = string(b) + "\n"
		} else {
			key = string(res.Value.stdout) + string(res.Value.stderr)
		}
		if key == "" {
			continue
		}
		g := byOut[key]
		if g == nil {
			g = &group{out: key}
			byOut[key] = g
			order = append(order, g)
		}
		g.labels = append(g.labels, res.Target.Label)
	}
	for _, g := range order {
		slices.Sort(g.labels)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].labels[0] < order[j].labels[0] })
	for _, g := range order {
		var b strings.Builder
		rule := "----------------"
		fmt.Fprintf(&b, "%s\n%s (%d)\n%s\n%s", rule, targets.Fold(g.labels), len(g.labels), rule, g.out)
		if !strings.HasSuffix(g.out, "\n") {
			b.WriteString("\n")
		}
		fr.out.line(os.Stdout, b.String())
	}
}

// summary prints the failed targets on stderr, folded by why, and
// returns the exit status: 0 when all succeeded, 255 when any was
// unreachable, else the largest.
func (fr *fanRun) summary(results []fanout.Result[outcome], total int) error {
	code := 0
	unreachable := false
	type group struct {
		labels []string
		detail []string
	}
	groups := map[string]*group{}
	for _, res := range results {
		st := res.Value.status
		code = max(code, st)
		var why string
		switch {
		case res.Unreachable:
			unreachable = true
			why = "unreachable"
		case res.TimedOut:
			why = "timed out"
		case res.Err != nil:
			why = "failed"
		case st != 0:
			why = fmt.Sprintf("exit status %d", st)
		default:
			continue
		}
		g := groups[why]
		if g == nil {
			g = &group{}
			groups[why] = g
		}
		g.labels = append(g.labels, res.Target.Label)
		if res.Err != nil && !res.TimedOut {
			g.detail = append(g.detail, fmt.Sprintf("%s: %s", res.Target.Label, errs.Reason(res.Err)))
		}
	}
	if len(groups) > 0 {
		var b strings.Builder
		n := 0
		for _, g := range groups {
			n += len(g.labels)
		}
		fmt.Fprintf(&b, "%s%s: %d of %d targets failed\n", errs.Prefix, fr.verb, n, total)
		whys := make([]string, 0, len(groups))
		for w := range groups {
			whys = append(whys, w)
		}
		sort.Strings(whys)
		for _, w := range whys {
			g := groups[w]
			fmt.Fprintf(&b, "  %s: %s\n", targets.Fold(g.labels), w)
			sort.Strings(g.detail)
			for _, d := range g.detail {
				fmt.Fprintf(&b, "    %s\n", d)
			}
		}
		fr.out.line(os.Stderr, b.String())
	}
	if unreachable {
		code = exitUnreachable
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// lockedOut serialises output lines of all targets, and the status line.
type lockedOut struct {
	mu      sync.Mutex
	drawn   bool
	partial map[*prefixWriter]bool
}

func (o *lockedOut) line(w io.Writer, s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clearStatus()
	io.WriteString(w, s)
}

func (o *lockedOut) status(fn func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clearStatus()
	fn()
}

// clearStatus erases the status line; o.mu is held.
func (o *lockedOut) clearStatus() {
	if o.drawn {
		io.WriteString(os.Stderr, "\r\x1b[K")
		o.drawn = false
	}
}

// startStatus draws a status line on stderr (a terminal only) a few times
// a second until the returned function is called, which erases it.
func (o *lockedOut) startStatus(r *fanout.Runner, start time.Time) func() {
	if !statusLine() {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			p := &r.Progress
			done, running := p.Done.Load(), p.Running.Load()
			queued := p.Total.Load() - done - running
			rate := float64(done) / max(time.Since(start).Seconds(), 1e-3)
			line := fmt.Sprintf("[%d/%d] done, %d failed, %d running, %d queued, %.1f/s", done, p.Total.Load(), p.Failed.Load(), running, queued, rate)
			o.mu.Lock()
			fmt.Fprintf(os.Stderr, "\r\x1b[K%s", fitWidth(line, os.Stderr))
			o.drawn = true
			o.mu.Unlock()
		}
	}()
	return func() {
		close(stop)
		wg.Wait()
		o.mu.Lock()
		o.clearStatus()
		o.mu.Unlock()
	}
}

// fitWidth clips an ASCII status line to one column less than the
// terminal f is (asked at each redraw: the window may change): a line
// that wrapped would leave a copy of itself behind at every redraw.
func fitWidth(line string, f *os.File) string {
	if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 1 && len(line) >= cols {
		return line[:cols-1]
	}
	return line
}

// flushPartial prints what a finished target left without a final
// newline, and a call's result.
func (o *lockedOut) flushPartial(label string, v outcome) {
	if v.hasResult {
		b, _ := json.Marshal(v.result)
		o.line(os.Stdout, label+": "+string(b)+"\n")
	}
}

// prefixWriter writes each complete line as "label: line" through o as
// it arrives (pdsh); Close writes a last line without its newline.
type prefixWriter struct {
	o     *lockedOut
	w     io.Writer
	label string
	buf   []byte
	keep  *bytes.Buffer // everything, for --json and -b (nil: not kept)
	live  bool          // print lines as they arrive
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if p.keep != nil {
		p.keep.Write(b)
	}
	if !p.live {
		return len(b), nil
	}
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.o.line(p.w, p.label+": "+string(p.buf[:i+1]))
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

func (p *prefixWriter) Close() {
	if p.live && len(p.buf) > 0 {
		p.o.line(p.w, p.label+": "+string(p.buf)+"\n")
		p.buf = nil
	}
}

// writers returns the stdout and stderr writers of one target.
func (fr *fanRun) writers(label string) (*prefixWriter, *prefixWriter, *bytes.Buffer, *bytes.Buffer) {
	var ob, eb bytes.Buffer
	live := !fr.f.json && !fr.f.gather
	return &prefixWriter{o: fr.out, w: os.Stdout, label: label, keep: &ob, live: live},
		&prefixWriter{o: fr.out, w: os.Stderr, label: label, keep: &eb, live: live}, &ob, &eb
}
