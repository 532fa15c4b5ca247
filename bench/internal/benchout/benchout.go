// Package benchout is what every Go peer of the side-by-side benchmark
// shares: the one result-line format, percentiles, resident memory, and the
// flags each peer program takes. It holds no Arbor code, so the
// physical-limit peer can use it without measuring anything of Arbor's.
package benchout

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Flags are the options every peer program takes (the Python peers take
// the same ones); bench/run passes them.
type Flags struct {
	Workload  string
	Quick     bool
	Data      string // the W5 source file
	SSHConfig string // ssh -F file for W8; empty: W8 is skipped
	SSHHost   string // host alias in SSHConfig
	Seconds   float64
	Calls     int
}

// Parse reads the flags of a peer program.
func Parse() Flags {
	var f Flags
	flag.StringVar(&f.Workload, "workload", "", "workload to run: W1..W8 (W2 also reports MEM)")
	flag.BoolVar(&f.Quick, "quick", false, "small sizes, one sample: a smoke test")
	flag.StringVar(&f.Data, "data", "", "W5 source file")
	flag.StringVar(&f.SSHConfig, "ssh-config", "", "ssh -F config for W8")
	flag.StringVar(&f.SSHHost, "ssh-host", "arborbench", "ssh host alias for W8")
	flag.Float64Var(&f.Seconds, "seconds", 0, "W4 duration (default 5, quick 0.5)")
	flag.IntVar(&f.Calls, "calls", 0, "W2/W3 sequential calls (default 5000, quick 300)")
	flag.Parse()
	if f.Seconds == 0 {
		f.Seconds = 5
		if f.Quick {
			f.Seconds = 0.5
		}
	}
	if f.Calls == 0 {
		f.Calls = 5000
		if f.Quick {
			f.Calls = 300
		}
	}
	return f
}

// Samples picks a per-invocation repeat count: full or quick.
func (f Flags) Samples(full, quick int) int {
	if f.Quick {
		return quick
	}
	return full
}

// Out prints result lines for one peer.
type Out struct{ Peer string }

// Emit prints one result line: peer=NAME workload=ID stat=STAT value=V unit=U.
func (o Out) Emit(workload, stat string, value float64, unit string) {
	fmt.Printf("peer=%s workload=%s stat=%s value=%s unit=%s\n", o.Peer, workload, stat,
		strconv.FormatFloat(value, 'f', -1, 64), unit)
}

// Skip prints a line the table renders as empty cells (every row of the
// workload this peer has no value for) with the reason as a footnote.
func (o Out) Skip(workload, reason string) {
	fmt.Printf("peer=%s workload=%s stat=skipped value=0 unit=none reason=\"%s\"\n",
		o.Peer, workload, strings.NewReplacer(`"`, `'`, "\n", " ").Replace(reason))
}

// Latency prints median and p99 of d in unit ("us" or "ms").
func (o Out) Latency(workload string, d []time.Duration, unit string) {
	if len(d) == 0 {
		return
	}
	div := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[unit]
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	o.Emit(workload, "median", round(float64(s[len(s)/2].Nanoseconds())/div), unit)
	o.Emit(workload, "p99", round(float64(s[(len(s)*99)/100].Nanoseconds())/div), unit)
}

// round keeps four significant digits, enough for noisy figures.
func round(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 4, 64), 64)
	return r
}

// Round is round for callers.
func Round(v float64) float64 { return round(v) }

// RSS is the resident set size of pid in MiB, from /proc/PID/status VmRSS.
func RSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, fmt.Errorf("bad VmRSS line in /proc/%d/status: %q", pid, sc.Text())
			}
			return round(float64(kb) / 1024), nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// Fatal prints err to stderr and exits non-zero, so bench/run records an
// error for this cell.
func Fatal(workload string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", workload, err)
	os.Exit(1)
}
