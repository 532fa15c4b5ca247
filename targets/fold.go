package targets

import (
	"sort"
	"strconv"
	"strings"
)

// Fold writes names as a folded set, the inverse of Parse: names that
// differ in one number, "web01,web02,web03,web05", are "web[01-03,05]".
// Names fold on their last run of digits; those with different text
// around it, or a different zero-padded width, fold apart (an unpadded
// number as wide as a padded group, such as web10 beside web09, joins
// it). Names left alone are tried on the run of digits before it. Then
// the folded parts fold again on the digits outside their brackets, so
// names that vary in two places fold in both ("b1/db1" … "b2/db2" is
// "b[1-2]/db[1-2]", as ClusterShell's nodesets do), but only where the
// result is exactly the names given. Groups are sorted by their text,
// numbers in numeric order; a name without digits is written as it is.
// Duplicates are written once.
func Fold(names []string) string {
	parts := foldOn(names, 0)
	for range maxDims {
		next := foldOn(parts, 0)
		if len(next) == len(parts) {
			break
		}
		parts = next
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// maxDims bounds the passes of Fold: names varying in more places than
// this are written partly folded.
const maxDims = 4

// digitRun finds the k-th run of digits from the end of name, not counting
// digits inside brackets (a range folded before): name[start:end], or
// start == end when there is none.
func digitRun(name string, k int) (start, end int) {
	i := len(name)
	for r := 0; ; r++ {
		for i > 0 && !isDigit(name[i-1]) {
			if name[i-1] == ']' {
				j := strings.LastIndexByte(name[:i-1], '[')
				if j < 0 {
					return 0, 0
				}
				i = j
				continue
			}
			i--
		}
		end = i
		for i > 0 && isDigit(name[i-1]) {
			i--
		}
		if i == end {
			return 0, 0
		}
		if r == k {
			return i, end
		}
	}
}

// foldOn folds names on their k-th run of digits from the end; the names
// left alone are tried again on the run before it ("n[1-2]-eth0").
func foldOn(names []string, k int) []string {
	type stem struct{ pre, suf string }
	type num struct {
		n uint64
		s string
	}
	type group struct {
		stem
		width int // of zero-padded numbers, else 0
	}
	byStem := map[stem][]num{}
	var stems []stem
	var parts, single []string
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		start, end := digitRun(name, k)
		n, err := strconv.ParseUint(name[start:end], 10, 64)
		if start == end || err != nil || (end < len(name) && name[end] == '[') {
			parts = append(parts, name)
			continue
		}
		st := stem{name[:start], name[end:]}
		if _, ok := byStem[st]; !ok {
			stems = append(stems, st)
		}
		byStem[st] = append(byStem[st], num{n, name[start:end]})
	}
	for _, st := range stems {
		nums := byStem[st]
		padded := map[int]bool{}
		for _, x := range nums {
			if len(x.s) > 1 && x.s[0] == '0' {
				padded[len(x.s)] = true
			}
		}
		groups := map[group][]num{}
		var order []group
		for _, x := range nums {
			g := group{st, 0}
			if padded[len(x.s)] {
				g.width = len(x.s)
			}
			if _, ok := groups[g]; !ok {
				order = append(order, g)
			}
			groups[g] = append(groups[g], x)
		}
		for _, g := range order {
			ns := groups[g]
			if len(ns) == 1 {
				single = append(single, g.pre+ns[0].s+g.suf)
				continue
			}
			sort.Slice(ns, func(i, j int) bool { return ns[i].n < ns[j].n })
			var rs []string
			for i := 0; i < len(ns); {
				j := i
				for j+1 < len(ns) && ns[j+1].n == ns[j].n+1 {
					j++
				}
				if j == i {
					rs = append(rs, ns[i].s)
				} else {
					rs = append(rs, ns[i].s+"-"+ns[j].s)
				}
				i = j + 1
			}
			parts = append(parts, g.pre+"["+strings.Join(rs, ",")+"]"+g.suf)
		}
	}
	if len(single) > 1 && k < 3 {
		return append(parts, foldOn(single, k+1)...)
	}
	return append(parts, single...)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
