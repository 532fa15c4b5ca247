package stream

import (
	"fmt"
	"io"
	"time"

	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Config tunes a link. A nil *Config means DefaultConfig(). Children inherit
// MaxMessage from their parent through the hello exchange.
type Config struct {
	// MaxMessage is the largest payload a frame may carry. A frame announcing
	// more closes the link; a larger send is refused at the sender.
	MaxMessage uint32
	// HelloTimeout bounds the hello exchange when a link is opened.
	HelloTimeout time.Duration
	// WriteTimeout bounds how long a write to the link may make no
	// progress: each write to the underlying connection (at most 64 KiB:
	// a batch of frames, a piece of a big payload, a tunnel frame) must
	// complete within it, watched by one timer per link whatever the
	// connection (pipes and io.Pipe have no deadlines). A write that
	// times out is fatal for the link (a *WriteTimeoutError), never for
	// the node. It is a last resort, far above
	// any heartbeat threshold: a peer that stops reading stops answering
	// probes too, and the heartbeat closes the link first and names why.
	// Nodes raise it above their own DownAfter.
	//
	// There is no transport keepalive: the heartbeat (package agent) is the
	// one liveness mechanism, with its own thresholds, so a link is never
	// cut on another clock under a cause that hides why.
	WriteTimeout time.Duration
	// StreamWindow is the largest yamux receive window per stream: the most
	// bytes in flight per stream before the sender blocks.
	StreamWindow uint32
	// SendQueue is how many data frames may wait for the write loop: past
	// it Send refuses at once and SendWait blocks (see Link.Send).
	SendQueue int
	// ControlReserve is how many control and heartbeat frames may wait
	// beyond SendQueue before they are refused too (stream/queue.go). Zero
	// means DefaultControlReserve.
	ControlReserve int
	// MaxChannels is how many channels (streams of the link's yamux
	// session) may be open at once in each direction of a link;
	// zero means DefaultMaxChannels. A stream the peer opens past it is
	// reset as it arrives, before yamux allocates anything for it, and
	// counted (Link.ChannelsRefused); a peer with more than MaxChannels
	// refused within ChannelFloodWindow loses the link (ErrChannelLimit).
	// OpenChannel refuses past it on this side, so an honest peer with
	// the same limit is never refused. Until its user claims it
	// (Link.GrantWindow), an inbound channel has only yamux's initial
	// window, 256 KiB: unclaimed channels hold at most MaxChannels x
	// 256 KiB of data per link (64 MiB with the default; yamux's growing
	// buffers may allocate up to twice that).
	MaxChannels int
	// Logger receives link logs, yamux's included. Nil means hclog.Default().
	Logger hclog.Logger
}

// DefaultMaxChannels is the default Config.MaxChannels. It is the accept
// backlog yamux had here before the limit existed, near what HTTP/2
// servers allow per connection (Go's 250, nginx's 128), and many times
// what one link carries in use (a channel per running transfer or
// streamed command through it), while it keeps what a hostile peer can
// make a link hold before any function claims a channel to 64 MiB of data
// (256 x yamux's initial window) and the goroutines serving its channels
// to 256.
const DefaultMaxChannels = 256

// maxMaxChannels bounds Config.MaxChannels: yamux sizes its accept
// backlog and its table of SYNs in flight by it.
const maxMaxChannels = 1 << 16

// DefaultConfig returns the defaults: 64 MiB messages, a 10 s hello
// timeout, a 5 min write timeout, 16 MiB stream windows, 1024 queued data
// frames, 256 channels open each way.
func DefaultConfig() *Config {
	return &Config{
		MaxMessage:   wire.DefaultMaxMessage,
		HelloTimeout: 10 * time.Second,
		WriteTimeout: 5 * time.Minute,
		StreamWindow: 16 << 20,
		SendQueue:    1024,

		ControlReserve: DefaultControlReserve,
		MaxChannels:    DefaultMaxChannels,
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.MaxMessage == 0:
		return fmt.Errorf("arbor: config: MaxMessage must be positive")
	case c.MaxMessage > 1<<31:
		return fmt.Errorf("arbor: config: MaxMessage %d exceeds 2 GiB", c.MaxMessage)
	case c.HelloTimeout <= 0:
		return fmt.Errorf("arbor: config: HelloTimeout must be positive")
	case c.WriteTimeout <= 0:
		return fmt.Errorf("arbor: config: WriteTimeout must be positive")
	case c.StreamWindow < 256*1024:
		return fmt.Errorf("arbor: config: StreamWindow must be at least 256 KiB")
	case c.SendQueue <= 0:
		return fmt.Errorf("arbor: config: SendQueue must be positive")
	case c.ControlReserve < 0:
		return fmt.Errorf("arbor: config: ControlReserve must not be negative")
	case c.MaxChannels < 0 || c.MaxChannels > maxMaxChannels:
		return fmt.Errorf("arbor: config: MaxChannels must be between 0 (the default) and %d", maxMaxChannels)
	}
	return nil
}

// withDefaults returns a validated copy of c with nil filled in.
func (c *Config) withDefaults() (*Config, error) {
	if c == nil {
		c = DefaultConfig()
	}
	cc := *c
	if cc.Logger == nil {
		cc.Logger = hclog.Default()
	}
	if cc.ControlReserve == 0 {
		cc.ControlReserve = DefaultControlReserve
	}
	if cc.MaxChannels == 0 {
		cc.MaxChannels = DefaultMaxChannels
	}
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	return &cc, nil
}

// yamuxConfig builds the yamux settings for a link. yamux never logs to
// stderr on its own: its records go through the link's hclog logger, at
// debug level. What yamux reports as errors ("Failed to write body: broken
// pipe") is the loss of a link, which the router already reports with the
// node's name; at error level it would be noise on every lost hop.
func (c *Config) yamuxConfig(log hclog.Logger) *yamux.Config {
	yc := yamux.DefaultConfig()
	// At most MaxChannels streams of the peer exist here (the gate resets
	// the rest), so yamux's own backlog never refuses one first.
	yc.AcceptBacklog = c.MaxChannels
	yc.EnableKeepAlive = false
	yc.ConnectionWriteTimeout = c.WriteTimeout
	yc.MaxStreamWindowSize = c.StreamWindow
	yc.StreamOpenTimeout = c.HelloTimeout
	yc.StreamCloseTimeout = time.Minute
	yc.LogOutput = nil
	yc.Logger = log.Named("yamux").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	return yc
}

var _ io.ReadWriteCloser = (*yamux.Stream)(nil)
