"""Mitogen's peer in Arbor's side-by-side benchmark (bench/run).

Run with /usr/bin/python3 (Debian's python3-mitogen). One workload per
invocation; prints result lines (see bench/README.md). The no-op call is
context.call(os.getpid): a stdlib function, so no module of ours has to be
shipped to the children and the call measures Mitogen's own path.
"""

import collections
import os
import signal
import sys
import threading

import mitogen.core
import mitogen.master
import mitogen.service

from benchcommon import Out, Sink, in_parallel, now, parse

PY = '/usr/bin/python3'
out = Out('mitogen')


def local(router, via=None):
    return router.local(python_path=PY, via=via)


def chain(router, hops):
    ctxs = []
    for _ in range(hops):
        ctxs.append(local(router, ctxs[-1] if ctxs else None))
    return ctxs


def w1(router, a):
    lat = []
    for _ in range(a.samples(20, 3)):
        t = now()
        c = local(router)
        c.call(os.getpid)
        lat.append(now() - t)
        c.shutdown(wait=True)
    out.latency('W1', lat, 'ms')


def round_trips(router, a, w, hops):
    last = chain(router, hops)[-1]
    lat = []
    warm = a.calls // 10
    for i in range(a.calls + warm):
        t = now()
        last.call(os.getpid)
        if i >= warm:
            lat.append(now() - t)
    out.latency(w, lat, 'us')
    if w == 'W2':
        out.mem(last.call(os.getpid))


def w4(router, a):
    c = local(router)
    window = 256
    q = collections.deque()
    done = 0
    t = now()
    end = t + a.seconds
    while True:
        while len(q) < window:
            q.append(c.call_async(os.getpid))
        q.popleft().get().unpickle()
        done += 1
        if now() >= end:
            break
    el = now() - t
    for r in q:
        r.get().unpickle()
    out.emit('W4', 'rate', done / el, 'calls/s')


def w5(router, a):
    """FileService on the node 2 hops down (auto-activated: the root is its
    ancestor), fetched by the root with FileService.get."""
    if not a.data:
        raise SystemExit('W5 needs --data')
    b = chain(router, 2)[-1]
    sink = Sink()
    t = now()
    ok, meta = mitogen.service.FileService.get(context=b, path=a.data, out_fp=sink)
    el = now() - t
    if not ok or sink.n != os.path.getsize(a.data):
        raise SystemExit('W5: received %d bytes of %d' % (sink.n, os.path.getsize(a.data)))
    out.emit('W5', 'rate', sink.n / 1e6 / el, 'MB/s')


def w6(router, a):
    el = in_parallel('W6', 32, lambda: local(router).call(os.getpid))
    out.emit('W6', 'total', el * 1e3, 'ms')


def w7(router, a):
    lat = []
    for _ in range(a.samples(10, 2)):
        ca, cb = chain(router, 2)
        pid = ca.call(os.getpid)
        cb.call(os.getpid)
        gone = threading.Event()
        mitogen.core.listen(cb, 'disconnect', gone.set)
        t = now()
        os.kill(pid, signal.SIGKILL)
        if not gone.wait(10):
            raise SystemExit('W7: no disconnect of b 10 s after SIGKILL of a')
        lat.append(now() - t)
    out.latency('W7', lat, 'ms')


def w8(router, a):
    if not a.ssh_config:
        out.skip('W8', 'no sshd: run through bench/run, which starts one')
        return

    def ssh(via=None):
        return router.ssh(hostname=a.ssh_host, ssh_args=['-F', a.ssh_config],
                          check_host_keys='ignore', python_path=PY, via=via)

    for hops in (1, 2):
        for kind in ('cold', 'warm'):
            t = now()
            c = ssh()
            if hops == 2:
                c2 = ssh(via=c)
                c2.call(os.getpid)
            else:
                c.call(os.getpid)
            out.emit('W8', 'hop%d_%s' % (hops, kind), (now() - t) * 1e3, 'ms')
            c.shutdown(wait=True)


WORKLOADS = {
    'W1': w1,
    'W2': lambda r, a: round_trips(r, a, 'W2', 1),
    'W3': lambda r, a: round_trips(r, a, 'W3', 3),
    'W4': w4,
    'W5': w5,
    'W6': w6,
    'W7': w7,
    'W8': w8,
}


def main():
    a = parse('mitogen')
    fn = WORKLOADS.get(a.workload)
    if fn is None:
        raise SystemExit('unknown workload %r' % a.workload)
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        fn(router, a)
    finally:
        broker.shutdown()
        broker.join()


if __name__ == '__main__':
    sys.exit(main())
