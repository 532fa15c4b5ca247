package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"
	"github.com/arbor-project/arbor/transfer"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

type transferFlags struct {
	to        string
	recursive bool
	quiet     bool
	json      bool
	sync      bool
	// preserveSpecial is pull's --preserve-special.
	preserveSpecial bool
	fan             fanFlags
}

func (f *transferFlags) add(cmd *cobra.Command) {
	addTargetFlag(cmd, &f.to, "path of hops, e.g. local/local (without it, the first argument is NODE of arbor serve)")
	cmd.Flags().BoolVarP(&f.recursive, "recursive", "r", false, "copy directory trees")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "no progress bar")
	cmd.Flags().BoolVar(&f.json, "json", false, "print a summary object (bytes, files, seconds, sha256) when done")
	cmd.Flags().BoolVar(&f.sync, "sync", false, "fsync every file before renaming it into place")
	f.fan.add(cmd, false)
}

func newPushCmd(g *globalFlags) *cobra.Command {
	return newTransferCmd(g, "push", "push (--to PATH | NODE) [-r] LOCAL REMOTE",
		"Copy a local file or tree (-r) to the last node of PATH (or NODE of arbor serve)", transfer.Push,
		func(cmd *cobra.Command, _ *transferFlags) {
			cmd.Example = `  arbor push --to ssh:web1 ./site.tar.gz /srv/site.tar.gz
  arbor push --to ssh:bastion/ssh:web1 -r ./conf/ /etc/app/
  arbor push web2 ./app.tar.gz /tmp/                          # NODE of arbor serve
  tar cz src | arbor push --to ssh:web1 - /tmp/src.tgz        # from stdin
  arbor push --to local -o json big.iso /tmp/                 # {"bytes":…,"files":1,"seconds":…,"sha256":"…"}
  arbor push -w 'ssh:web[01-04]' ./motd /etc/motd             # to every target of a set`
		})
}

// newTransferCmd is push or pull: the same flags and arguments, fn moves
// the bytes; extra adds a command's own flags.
func newTransferCmd(g *globalFlags, verb, use, short string, fn transferFunc, extra ...func(*cobra.Command, *transferFlags)) *cobra.Command {
	f := &transferFlags{}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTransfer(g, f, verb, args, fn)
		},
	}
	f.add(cmd)
	for _, add := range extra {
		add(cmd, f)
	}
	return cmd
}

// transferFunc is transfer.Push or transfer.Pull.
type transferFunc = func(ctx context.Context, rm *arborctx.Remote, src, dst string, o transfer.Options) (transfer.Summary, error)

// runTransfer runs push or pull; args are SRC DST after --to PATH, or
// NODE SRC DST against arbor serve.
func runTransfer(g *globalFlags, f *transferFlags, verb string, args []string, fn transferFunc) error {
	var node string
	switch {
	case f.to == "" && len(args) == 3:
		node, args = args[0], args[1:]
	case f.to == "":
		return usageErr("%s: --to PATH is required (or NODE of arbor serve: %s NODE SRC DST)", verb, verb)
	case len(args) == 3:
		return usageErr("%s: too many arguments: with --to, give SRC DST only", verb)
	}
	src, dst := args[0], args[1]
	stdio := (verb == "pull" && dst == "-") || (verb == "push" && src == "-")
	if stdio {
		if f.recursive {
			return usageErr("%s: - (stdin or stdout) is one file: not with -r", verb)
		}
		if verb == "push" && (dst == "" || dst[len(dst)-1] == '/') {
			return usageErr("push -: DST must name the file to write, not a directory")
		}
		fn = stdioTransfer(verb, fn)
		f.quiet = true
	}
	f.fan.json = f.json
	many, err := g.fansOut(f.to, node, &f.fan)
	if err != nil {
		return err
	}
	if many && stdio {
		return usageErr("%s: - (stdin or stdout) is for one target", verb)
	}
	if many {
		return runTransferMany(g, f, verb, node, src, dst, fn)
	}
	s, err := g.openTarget(f.to, node)
	if err != nil {
		return err
	}
	defer s.close()
	// The summary's SHA-256 is computed only when it is printed: the
	// transfer's own check (a 64-bit CRC) guards the data either way.
	o := transfer.Options{Recursive: f.recursive, Sync: f.sync, PreserveSpecial: f.preserveSpecial, SkipSHA256: !f.json}
	var bar *progressBar
	if !f.quiet && isTerminal(os.Stderr) {
		bar = newProgressBar(src, f.recursive)
		o.Progress = bar.update
	}
	sum, err := fn(s.ctx, s.last(), src, dst, o)
	if bar != nil {
		bar.finish()
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if err != nil {
		if transfer.IsLocal(err) {
			return &exitError{code: exitRemote, err: err}
		}
		return callErr(err)
	}
	if f.json {
		out, _ := json.Marshal(sum)
		fmt.Println(string(out))
	}
	return nil
}

// progressBar draws one line on stderr through schollz/progressbar, sized
// to the terminal's width (so a redraw never wraps), only for transfers of
// at least progressMin bytes. It names the file (and "file N of M" for a
// tree) and ends with the elapsed time.
type progressBar struct {
	name      string // base name of the source
	recursive bool
	bar       *progressbar.ProgressBar
	desc      string
}

const progressMin = 4 << 20

func newProgressBar(src string, recursive bool) *progressBar {
	name := path.Base(filepath.ToSlash(src))
	return &progressBar{name: name, recursive: recursive}
}

// update is the transfer's Progress callback; it is called from one
// goroutine at a time.
func (b *progressBar) update(p transfer.Progress) {
	if p.TotalBytes < progressMin {
		return
	}
	desc := b.name
	if b.recursive && p.TotalFiles > 0 {
		// Files counts the files done: the one being copied is the next.
		desc = fmt.Sprintf("%s (file %d of %d)", b.name, min(p.Files+1, p.TotalFiles), p.TotalFiles)
	}
	if b.bar == nil {
		b.bar = progressbar.NewOptions64(p.TotalBytes,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionFullWidth(),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
		)
		b.desc = desc
	} else if desc != b.desc {
		b.bar.Describe(desc)
		b.desc = desc
	}
	_ = b.bar.Set64(p.Bytes)
}

// finish leaves the cursor on a fresh line: the bar's completion does so
// for a transfer that reached its total; a failed one is left as it
// stood (Exit runs the same completion).
func (b *progressBar) finish() {
	if b.bar != nil && !b.bar.IsFinished() {
		_ = b.bar.Exit()
	}
}

// runTransferMany runs push or pull over a target set. A pull's copy from
// each target lands in DST/LABEL/ (as rpdcp does), so copies never
// overwrite each other.
func runTransferMany(g *globalFlags, f *transferFlags, verb, node, src, dst string, fn transferFunc) error {
	fr := &fanRun{g: g, f: &f.fan, verb: verb}
	o := transfer.Options{Recursive: f.recursive, Sync: f.sync, PreserveSpecial: f.preserveSpecial}
	return fr.run(f.to, node, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (outcome, error) {
		d := dst
		if verb == "pull" {
			d = filepath.Join(dst, filepath.FromSlash(t.Label))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return outcome{status: exitRemote}, err
			}
		}
		sum, err := fn(ctx, rm, src, d, o)
		if err != nil {
			return outcome{status: exitRemote}, err
		}
		return outcome{result: sum, hasResult: true}, nil
	})
}
