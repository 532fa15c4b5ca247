"""execnet's peer in Arbor's side-by-side benchmark (bench/run).

Run with /usr/bin/python3 (Debian's python3-execnet). One workload per
invocation; prints result lines (see bench/README.md). execnet has no remote
procedure call of its own: its idiom is remote_exec of a source string and
messages on the channel, so a "call" here is one message echoed by a loop
running on the remote gateway.
"""

import os
import signal
import sys

import execnet

from benchcommon import Out, Sink, in_parallel, now, parse

PY = '/usr/bin/python3'
out = Out('execnet')

ECHO = 'for x in channel:\n    channel.send(x)\n'
PID = 'import os\nchannel.send(os.getpid())\n'
SOURCE = '''
path = channel.receive()
with open(path, 'rb') as f:
    while True:
        d = f.read(1 << 20)
        if not d:
            break
        channel.send(d)
channel.send(None)
'''


def chain(group, hops, base='popen', prefix='g', first=0):
    """hops gateways, each via the one before, with ids prefix+first,
    prefix+(first+1), ... (ids are unique in a group)."""
    gws = []
    for i in range(first, first + hops):
        spec = '%s//python=%s//id=%s%d' % (base, PY, prefix, i)
        if gws:
            spec += '//via=%s%d' % (prefix, i - 1)
        gws.append(group.makegateway(spec))
    return gws


def pid_of(gw):
    return gw.remote_exec(PID).receive()


def w1(group, a):
    lat = []
    for _ in range(a.samples(20, 3)):
        t = now()
        gw = group.makegateway('popen//python=%s' % PY)
        gw.remote_exec('channel.send(1)').receive()
        lat.append(now() - t)
        gw.exit()
    out.latency('W1', lat, 'ms')


def round_trips(group, a, w, hops):
    last = chain(group, hops)[-1]
    ch = last.remote_exec(ECHO)
    lat = []
    warm = a.calls // 10
    for i in range(a.calls + warm):
        t = now()
        ch.send(1)
        ch.receive()
        if i >= warm:
            lat.append(now() - t)
    out.latency(w, lat, 'us')
    if w == 'W2':
        out.mem(pid_of(last))
    ch.close()


def w4(group, a):
    gw = chain(group, 1)[0]
    ch = gw.remote_exec(ECHO)
    window = 256
    for _ in range(window):
        ch.send(1)
    done = 0
    t = now()
    end = t + a.seconds
    while True:
        ch.receive()
        done += 1
        if now() >= end:
            break
        ch.send(1)
    el = now() - t
    for _ in range(window - 1):
        ch.receive()
    out.emit('W4', 'rate', done / el, 'calls/s')
    ch.close()


def w5(group, a):
    """1 MiB chunks sent on a channel by the gateway 2 hops down."""
    if not a.data:
        raise SystemExit('W5 needs --data')
    b = chain(group, 2)[-1]
    sink = Sink()
    t = now()
    ch = b.remote_exec(SOURCE)
    ch.send(a.data)
    while True:
        d = ch.receive()
        if d is None:
            break
        sink.write(d)
    el = now() - t
    if sink.n != os.path.getsize(a.data):
        raise SystemExit('W5: received %d bytes of %d' % (sink.n, os.path.getsize(a.data)))
    out.emit('W5', 'rate', sink.n / 1e6 / el, 'MB/s')


def w6(group, a):
    def one():
        gw = group.makegateway('popen//python=%s' % PY)
        gw.remote_exec('channel.send(1)').receive()

    out.emit('W6', 'total', in_parallel('W6', 32, one) * 1e3, 'ms')


def w7(group, a):
    """A channel to b blocked in receive; the root sees b's disconnect when
    that channel closes with an error."""
    lat = []
    for i in range(a.samples(10, 2)):
        ga = group.makegateway('popen//python=%s//id=a%d' % (PY, i))
        gb = group.makegateway('popen//python=%s//id=b%d//via=a%d' % (PY, i, i))
        pid = pid_of(ga)
        pid_of(gb)
        ch = gb.remote_exec('channel.receive()')
        t = now()
        os.kill(pid, signal.SIGKILL)
        try:
            ch.waitclose(10)
        except execnet.TimeoutError:
            raise SystemExit('W7: no disconnect of b 10 s after SIGKILL of a')
        except Exception:
            pass  # the channel closed with an error: the disconnect
        lat.append(now() - t)
        # Both are gone (b exits on EOF from a); execnet's terminate would
        # fail trying to kill them through a.
        group._unregister(gb)
        group._unregister(ga)
        ga._io.wait()
    out.latency('W7', lat, 'ms')


def w8(group, a):
    if not a.ssh_config:
        out.skip('W8', 'no sshd: run through bench/run, which starts one')
        return
    base = 'ssh=%s//ssh_config=%s' % (a.ssh_host, a.ssh_config)
    n = 0
    for hops in (1, 2):
        for kind in ('cold', 'warm'):
            t = now()
            gws = chain(group, hops, base, prefix='s', first=n)
            n += hops
            gws[-1].remote_exec('channel.send(1)').receive()
            out.emit('W8', 'hop%d_%s' % (hops, kind), (now() - t) * 1e3, 'ms')
            for gw in reversed(gws):
                gw.exit()


WORKLOADS = {
    'W1': w1,
    'W2': lambda g, a: round_trips(g, a, 'W2', 1),
    'W3': lambda g, a: round_trips(g, a, 'W3', 3),
    'W4': w4,
    'W5': w5,
    'W6': w6,
    'W7': w7,
    'W8': w8,
}


def main():
    a = parse('execnet')
    fn = WORKLOADS.get(a.workload)
    if fn is None:
        raise SystemExit('unknown workload %r' % a.workload)
    group = execnet.Group()
    try:
        fn(group, a)
    finally:
        group.terminate(timeout=5)


if __name__ == '__main__':
    sys.exit(main())
