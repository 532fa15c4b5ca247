"""What the Python peers of bench/run share: the flags every peer program
takes (the Go peers take the same ones), the one result-line format,
percentiles and resident memory. See bench/README.md."""

import argparse
import os
import threading
import time


def parse(peer):
    p = argparse.ArgumentParser(description='%s peer of the Arbor side-by-side benchmark' % peer)
    p.add_argument('-workload', '--workload', required=True)
    p.add_argument('-quick', '--quick', action='store_true')
    p.add_argument('-data', '--data', default='')
    p.add_argument('-ssh-config', '--ssh-config', dest='ssh_config', default='')
    p.add_argument('-ssh-host', '--ssh-host', dest='ssh_host', default='arborbench')
    p.add_argument('-seconds', '--seconds', type=float, default=0)
    p.add_argument('-calls', '--calls', type=int, default=0)
    a = p.parse_args()
    if not a.seconds:
        a.seconds = 0.5 if a.quick else 5.0
    if not a.calls:
        a.calls = 300 if a.quick else 5000
    a.samples = lambda full, quick: quick if a.quick else full
    return a


def fmt(v):
    if abs(v) >= 1000:
        return '%d' % round(v)
    return '%.4g' % v


class Out:
    def __init__(self, peer):
        self.peer = peer

    def emit(self, workload, stat, value, unit):
        print('peer=%s workload=%s stat=%s value=%s unit=%s' % (
            self.peer, workload, stat, fmt(value), unit), flush=True)

    def skip(self, workload, reason):
        print('peer=%s workload=%s stat=skipped value=0 unit=none reason="%s"' % (
            self.peer, workload, reason.replace('"', "'").replace('\n', ' ')), flush=True)

    def latency(self, workload, secs, unit):
        """Median and p99 of durations in seconds, printed in unit."""
        if not secs:
            return
        mul = {'us': 1e6, 'ms': 1e3, 's': 1.0}[unit]
        s = sorted(secs)
        self.emit(workload, 'median', s[len(s) // 2] * mul, unit)
        self.emit(workload, 'p99', s[(len(s) * 99) // 100] * mul, unit)

    def mem(self, child_pid):
        self.emit('MEM', 'root_rss', rss(os.getpid()), 'MiB')
        self.emit('MEM', 'child_rss', rss(child_pid), 'MiB')


def rss(pid):
    """Resident set size of pid in MiB, from /proc/PID/status VmRSS."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('no VmRSS in /proc/%d/status' % pid)


now = time.perf_counter


def in_parallel(workload, n, fn):
    """Runs fn in n threads at once and returns the seconds until all are
    done; if any failed, the workload ends with the first failure."""
    errs = []

    def one():
        try:
            fn()
        except Exception as e:  # reported below
            errs.append(e)

    t = now()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    el = now() - t
    if errs:
        raise SystemExit('%s: %d of %d failed: %r' % (workload, len(errs), n, errs[0]))
    return el


class Sink:
    """A file object that counts what is written to it and keeps nothing."""

    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)
