// Command limitbench is the physical-limit peer of the side-by-side
// benchmark (bench/run): the same workloads as Arbor, Mitogen and execnet,
// done with nothing but processes and raw pipes, so the table shows how
// far each system stands from what the machine allows. It imports no Arbor
// code. It must be built static (CGO_ENABLED=0): W1 and W6 time fork+exec of
// this very binary until it writes one byte.
//
// The same binary plays every process of a workload; "child MODE" selects
// the role:
//
//	child one           write one byte, exit (W1, W6)
//	child echo          copy stdin to stdout (W2, W3, W4, W7)
//	child source FILE   write FILE to stdout (W5)
//	child relay ARGV..  run ARGV, relay stdin to it and its stdout back (W3, W5, W7)
//
// W5 runs twice: with the pipes as made (stat rate) and with every pipe
// grown to 1 MiB by the process that made it (stat rate_1m_pipes), as
// Arbor grows a link's pipes while it carries bulk data: the limit for
// that capacity. The size travels to the relays in pipeSizeEnv.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/bench/internal/benchout"
)

// msgSize is one small call or reply: what a no-op call costs on the wire
// in a compact protocol.
const msgSize = 32

// chunk is the read/write size for bulk copies (W5).
const chunk = 1 << 20

func main() {
	if len(os.Args) > 2 && os.Args[1] == "child" {
		if err := child(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "limitbench child:", err)
			os.Exit(1)
		}
		return
	}
	f := benchout.Parse()
	o := benchout.Out{Peer: "limit"}
	var err error
	switch f.Workload {
	case "W1":
		err = w1(f, o)
	case "W2":
		err = roundTrips(f, o, "W2", 0)
	case "W3":
		err = roundTrips(f, o, "W3", 2)
	case "W4":
		err = w4(f, o)
	case "W5":
		err = w5(f, o)
	case "W6":
		err = w6(o)
	case "W7":
		err = w7(f, o)
	case "W8":
		err = w8(f, o)
	default:
		err = fmt.Errorf("unknown workload %q", f.Workload)
	}
	if err != nil {
		benchout.Fatal(f.Workload, err)
	}
}

func self() string {
	exe, err := os.Executable()
	if err != nil {
		benchout.Fatal("limitbench", err)
	}
	return exe
}

// pipeSizeEnv, when set, is the capacity in bytes every process gives the
// pipes it makes for its child.
const pipeSizeEnv = "LIMITBENCH_PIPE_SIZE"

// sizePipes sets the capacity of pipes to $LIMITBENCH_PIPE_SIZE, if set.
func sizePipes(pipes ...any) error {
	n, err := strconv.Atoi(os.Getenv(pipeSizeEnv))
	if err != nil {
		return nil
	}
	for _, p := range pipes {
		sc, ok := p.(syscall.Conn)
		if !ok {
			return fmt.Errorf("%T is not a pipe", p)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			_, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSize, uintptr(n))
			if e != 0 {
				serr = e
			}
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("F_SETPIPE_SZ %d: %w", n, serr)
		}
	}
	return nil
}

// fSetPipeSize is Linux's F_SETPIPE_SZ.
const fSetPipeSize = 1031

// proc is a started child with its pipes.
type proc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out io.ReadCloser
}

// start runs this binary as "child ARGS..." with stdin and stdout piped.
// relays is how many relay processes stand between this process and the
// role: child relay exe child relay exe child ROLE.
func start(relays int, role ...string) (*proc, error) {
	exe := self()
	var argv []string
	for i := 0; i < relays; i++ {
		argv = append(argv, exe, "child", "relay")
	}
	argv = append(argv, exe, "child")
	argv = append(argv, role...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := sizePipes(in, out); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, in: in, out: out}, nil
}

func (p *proc) stop() {
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// oneByte: fork+exec a fresh process and wait for the byte it writes.
func oneByte() error {
	cmd := exec.Command(self(), "child", "one")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	var b [1]byte
	_, err = io.ReadFull(out, b[:])
	werr := cmd.Wait()
	return errors.Join(err, werr)
}

func w1(f benchout.Flags, o benchout.Out) error {
	n := f.Samples(20, 3)
	var lat []time.Duration
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := oneByte(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	o.Latency("W1", lat, "ms")
	return nil
}

// roundTrips: sequential 32-byte messages echoed by a child behind relays
// relaying processes. W2 also reports MEM.
func roundTrips(f benchout.Flags, o benchout.Out, w string, relays int) error {
	p, err := start(relays, "echo")
	if err != nil {
		return err
	}
	defer p.stop()
	msg := bytes.Repeat([]byte{'x'}, msgSize)
	buf := make([]byte, msgSize)
	lat := make([]time.Duration, 0, f.Calls)
	for i := 0; i < f.Calls+f.Calls/10; i++ { // the first tenth warms up
		t := time.Now()
		if _, err := p.in.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(p.out, buf); err != nil {
			return err
		}
		if i >= f.Calls/10 {
			lat = append(lat, time.Since(t))
		}
	}
	o.Latency(w, lat, "us")
	if w == "W2" {
		return mem(o, p.cmd.Process.Pid)
	}
	return nil
}

func mem(o benchout.Out, child int) error {
	r, err := benchout.RSS(os.Getpid())
	if err != nil {
		return err
	}
	c, err := benchout.RSS(child)
	if err != nil {
		return err
	}
	o.Emit("MEM", "root_rss", r, "MiB")
	o.Emit("MEM", "child_rss", c, "MiB")
	return nil
}

// w4: keep 256 messages in flight to an echo child for f.Seconds.
func w4(f benchout.Flags, o benchout.Out) error {
	p, err := start(0, "echo")
	if err != nil {
		return err
	}
	defer p.stop()
	const window = 256
	credits := make(chan struct{}, window)
	for i := 0; i < window; i++ {
		credits <- struct{}{}
	}
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		msg := bytes.Repeat([]byte{'x'}, msgSize)
		for {
			select {
			case <-stop:
				werr <- nil
				return
			case <-credits:
			}
			if _, err := p.in.Write(msg); err != nil {
				werr <- err
				return
			}
		}
	}()
	buf := make([]byte, 64*msgSize)
	var got, partial int
	start := time.Now()
	deadline := start.Add(time.Duration(f.Seconds * float64(time.Second)))
	for time.Now().Before(deadline) {
		n, err := p.out.Read(buf)
		if err != nil {
			return err
		}
		partial += n
		for partial >= msgSize {
			partial -= msgSize
			got++
			credits <- struct{}{}
		}
	}
	el := time.Since(start)
	close(stop)
	o.Emit("W4", "rate", benchout.Round(float64(got)/el.Seconds()), "calls/s")
	return <-werr
}

// w5: a source process behind one relay writes the data file to the root.
func w5(f benchout.Flags, o benchout.Out) error {
	if f.Data == "" {
		return errors.New("W5 needs -data")
	}
	if err := w5once(f, o, "rate"); err != nil {
		return err
	}
	os.Setenv(pipeSizeEnv, strconv.Itoa(1<<20))
	defer os.Unsetenv(pipeSizeEnv)
	return w5once(f, o, "rate_1m_pipes")
}

// w5once moves the data file once and emits its rate as stat.
func w5once(f benchout.Flags, o benchout.Out, stat string) error {
	p, err := start(1, "source", f.Data)
	if err != nil {
		return err
	}
	defer p.stop()
	buf := make([]byte, chunk)
	t := time.Now()
	var n int64
	for {
		k, err := p.out.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	el := time.Since(t)
	st, err := os.Stat(f.Data)
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("W5 received %d bytes of %d", n, st.Size())
	}
	o.Emit("W5", stat, benchout.Round(float64(n)/1e6/el.Seconds()), "MB/s")
	return nil
}

// w6: 32 fork+execs in parallel, each until its byte arrives.
func w6(o benchout.Out) error {
	t := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = oneByte()
		}()
	}
	wg.Wait()
	el := time.Since(t)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	o.Emit("W6", "total", benchout.Round(float64(el.Microseconds())/1000), "ms")
	return nil
}

// w7: root → relay a → echo b; SIGKILL a; time until the root's read of
// a's pipe returns (EOF): the earliest the root can know b is cut off.
func w7(f benchout.Flags, o benchout.Out) error {
	var lat []time.Duration
	for i := 0; i < f.Samples(10, 2); i++ {
		p, err := start(1, "echo")
		if err != nil {
			return err
		}
		// One round trip proves the chain is up.
		msg := bytes.Repeat([]byte{'x'}, msgSize)
		if _, err := p.in.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(p.out, make([]byte, msgSize)); err != nil {
			return err
		}
		eof := make(chan time.Time, 1)
		go func() {
			io.Copy(io.Discard, p.out)
			eof <- time.Now()
		}()
		t := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return err
		}
		select {
		case e := <-eof:
			lat = append(lat, e.Sub(t))
		case <-time.After(10 * time.Second):
			return errors.New("W7: no EOF 10 s after SIGKILL of the relay")
		}
		p.stop()
	}
	o.Latency("W7", lat, "ms")
	return nil
}

// w8: plain ssh HOST true (1 hop) and ssh HOST ssh HOST true (2 hops); the
// first run of each is "cold", the second "warm".
func w8(f benchout.Flags, o benchout.Out) error {
	if f.SSHConfig == "" {
		o.Skip("W8", "no sshd: run through bench/run, which starts one")
		return nil
	}
	ssh := []string{"ssh", "-F", f.SSHConfig, f.SSHHost}
	for _, hops := range []int{1, 2} {
		var argv []string
		for i := 0; i < hops; i++ {
			argv = append(argv, ssh...)
		}
		argv = append(argv, "true")
		for _, c := range []string{"cold", "warm"} {
			t := time.Now()
			out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %v: %s", argv, err, out)
			}
			o.Emit("W8", fmt.Sprintf("hop%d_%s", hops, c), benchout.Round(float64(time.Since(t).Microseconds())/1000), "ms")
		}
	}
	return nil
}

// child runs one role of a workload.
func child(mode string, args []string) error {
	switch mode {
	case "one":
		_, err := os.Stdout.Write([]byte{1})
		return err
	case "echo":
		buf := make([]byte, 64<<10)
		for {
			n, err := os.Stdin.Read(buf)
			if n > 0 {
				if _, werr := os.Stdout.Write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	case "source":
		if len(args) != 1 {
			return errors.New("source FILE")
		}
		in, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer in.Close()
		return copyBuf(os.Stdout, in)
	case "relay":
		if len(args) == 0 {
			return errors.New("relay ARGV")
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stderr = nil, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := sizePipes(in, out); err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		go func() {
			copyBuf(in, os.Stdin)
			in.Close()
		}()
		err = copyBuf(os.Stdout, out)
		cmd.Wait()
		return err
	}
	return fmt.Errorf("unknown child mode %q", mode)
}

// copyBuf copies through user space with a large buffer, as a relay of
// any real system must (no splice), and hands small writes on at once.
func copyBuf(w io.Writer, r io.Reader) error {
	buf := make([]byte, chunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
