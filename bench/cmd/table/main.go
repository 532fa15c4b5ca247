// Command table renders result lines of the side-by-side benchmark
// (peer=NAME workload=ID stat=STAT value=V unit=U [reason="..."]) as a
// markdown table: one row per workload and statistic, one column per peer.
// A cell is the median over the lines for it (one line per repetition; for
// p99 rows that is the median of the per-repetition p99s). Lines from
// several raw files merge, so runs can be combined.
//
//	table [-peers arbor,mitogen,execnet,limit] RAW...   (no RAW: stdin)
//
// stat=skipped and stat=error lines turn every row of that workload the peer
// has no figure for into an empty cell with a numbered note giving the
// reason. Lines that do not parse are counted and reported on stderr.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var lineRE = regexp.MustCompile(`^peer=(\S+) workload=(\S+) stat=(\S+) value=(\S+) unit=(\S+)(?: reason="([^"]*)")?\s*$`)

// order is the row order; workloads or stats not listed come after, in
// the order first seen.
var order = []string{"W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "MEM"}

var titles = map[string]string{
	"W1":  "W1 spawn + one call",
	"W2":  "W2 1-hop round trip",
	"W3":  "W3 3-hop round trip",
	"W4":  "W4 pipelined calls",
	"W5":  "W5 bulk data, 2 hops up",
	"W6":  "W6 32 children + call",
	"W7":  "W7 disconnect seen",
	"W8":  "W8 first call over ssh",
	"MEM": "MEM after W2",
}

var targets = map[string]string{
	"W1 median":     "≤ 3 ms",
	"W2 median":     "≤ 20 µs",
	"W3 median":     "≤ 60 µs",
	"W4 rate":       "≥ 300,000",
	"W5 rate":       "≥ 1,200 MB/s",
	"W6 total":      "≤ 100 ms",
	"W7 median":     "≤ 1 ms",
	"W8 hop1_warm":  "≤ 1.1× ssh",
	"W8 hop2_warm":  "≤ 1.1× ssh",
	"MEM child_rss": "≤ 10 MiB",
}

type key struct{ workload, stat string }

type cell struct {
	values []float64
	unit   string
}

func main() {
	peersFlag := flag.String("peers", "arbor,mitogen,execnet,limit", "column order")
	flag.Parse()
	var inputs []io.Reader
	for _, p := range flag.Args() {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
		defer f.Close()
		inputs = append(inputs, f)
	}
	if len(inputs) == 0 {
		inputs = append(inputs, os.Stdin)
	}
	peers := strings.Split(*peersFlag, ",")

	cells := map[key]map[string]*cell{}
	var rows []key
	notes := map[key]map[string]string{} // (peer, workload) → reason, keyed by workload
	bad := 0
	for _, in := range inputs {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			m := lineRE.FindStringSubmatch(line)
			if m == nil {
				bad++
				continue
			}
			peer, w, stat, unit, reason := m[1], m[2], m[3], m[5], m[6]
			if stat == "skipped" || stat == "error" {
				k := key{w, ""}
				if notes[k] == nil {
					notes[k] = map[string]string{}
				}
				if stat == "error" {
					reason = "error: " + reason
				}
				if _, seen := notes[k][peer]; !seen {
					notes[k][peer] = reason
				}
				continue
			}
			v, err := strconv.ParseFloat(m[4], 64)
			if err != nil {
				bad++
				continue
			}
			k := key{w, stat}
			if cells[k] == nil {
				cells[k] = map[string]*cell{}
				rows = append(rows, k)
			}
			c := cells[k][peer]
			if c == nil {
				c = &cell{unit: unit}
				cells[k][peer] = c
			}
			c.values = append(c.values, v)
		}
	}
	// Workloads with only notes still get a row.
	for k := range notes {
		found := false
		for _, r := range rows {
			if r.workload == k.workload {
				found = true
			}
		}
		if !found {
			rows = append(rows, key{k.workload, "—"})
		}
	}
	rank := func(w string) int {
		for i, o := range order {
			if o == w {
				return i
			}
		}
		return len(order)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i].workload) < rank(rows[j].workload) })

	var noteList []string
	noteNum := map[string]int{}
	note := func(reason string) string {
		n, ok := noteNum[reason]
		if !ok {
			noteList = append(noteList, reason)
			n = len(noteList)
			noteNum[reason] = n
		}
		return fmt.Sprintf("[%d]", n)
	}

	fmt.Printf("| workload | stat | unit | %s | target |\n", strings.Join(peers, " | "))
	fmt.Printf("|---|---|---|%s---|\n", strings.Repeat("---:|", len(peers)))
	for _, r := range rows {
		unit := ""
		var out []string
		for _, p := range peers {
			c := cells[r][p]
			if c == nil {
				if reason, ok := notes[key{r.workload, ""}][p]; ok {
					out = append(out, note(reason))
				} else {
					out = append(out, "")
				}
				continue
			}
			unit = c.unit
			out = append(out, format(median(c.values)))
		}
		title := titles[r.workload]
		if title == "" {
			title = r.workload
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", title, r.stat, unit, strings.Join(out, " | "), targets[r.workload+" "+r.stat])
	}
	if len(noteList) > 0 {
		fmt.Println()
		for i, n := range noteList {
			fmt.Printf("[%d] %s  \n", i+1, n)
		}
	}
	if bad > 0 {
		fmt.Fprintf(os.Stderr, "table: %d lines did not parse\n", bad)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// format prints whole numbers with thousands separators from 1000 up, four
// significant digits below.
func format(v float64) string {
	if v >= 1000 {
		return group(strconv.FormatFloat(v, 'f', 0, 64))
	}
	s := strconv.FormatFloat(v, 'g', 4, 64)
	if strings.Contains(s, "e") {
		s = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return s
}

func group(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
