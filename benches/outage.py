#!/usr/bin/env python3
"""Cluster outage at scale: how long every one of N apps takes to drop a dead cluster.

gtmd serves N apps (default 10,000) x 5 clusters, policy `all`, an HTTP probe on every
app x cluster (50,000 targets), interval 5 s and gtmd's defaults otherwise (timeout 2 s,
fall 3, rise 2, fast_interval 1 s, flap_window 60 s). Each cluster address 127.0.1.1-5 is
served by its own nginx process, so one cluster can fail on its own:

  refused    the victim's nginx is SIGKILLed (connection refused), later a new one starts
  blackhole  the victim's nginx is SIGSTOPped (its accept queue fills, probes time out),
             later SIGCONTed

A poller (this script, pinned to one CPU) queries ALL N names every --period seconds:
pre-built UDP queries on a non-blocking socket, every name sent, the replies collected
(a query with no reply within --query-timeout is a DNS timeout). Per name it times, from
the kill, the first reply without the victim after which the victim never came back, and
after the restore the first reply with it after which it never left again. It prints the
distribution (first, median, p99, last), the names that never left / never came back,
and the README's bound for comparison; the round time (the resolution); gtmd's CPU
(user+sys per wall second, /proc) in steady probing and during the outage; its RSS at
ready, at the peak of the outage and after; DNS timeouts, errors and reply times; the
victim's transitions in gtmd's log (when the health engine applied them). 30 s into the
outage (--reload-at) it sends gtmd SIGHUP (a forced reload of the same file) and prints
how long the reload took, whether an answer went back to the dead cluster (health must be
carried over) and the DNS timeouts meanwhile. The restore comes once --outage-seconds have passed
and every name has been without the victim for longer than flap_window (flap damping
counts from the down transition; a shorter outage would measure flap_hold).

gdnsd runs side by side on the same outage (same nginx, same kill, polled in the same
rounds) with the largest config it can express: N DYNA names over one multifo resource of
the 5 addresses, http_status monitors on the same port and path. gdnsd monitors per
address (5 monitors), not per app, so its figures are the cost of the answer path under
an outage, not of 50,000 probes. Its timing is the closest to gtmd's defaults it has (no
fast re-probe, whole seconds): interval 5, timeout 2, down_thresh 3, up_thresh 2,
ok_thresh 1; its UDP receive buffer is raised to its maximum, 1 MiB (gtmd asks for 4 MiB).

Usage: benches/outage.py [--mode refused|blackhole|both] [--apps 10000] [--clusters 5]
                         [--outage-seconds 65] [--runs 1] [--gtmd target/release/gtmd]
                         [--skip-gdnsd] [--period 0.5] [--fresh] [--samples FILE]
Needs: nginx (Debian nginx-light), gdnsd (unless --skip-gdnsd).
Ports (loopback): DNS 5811 (gtmd) and 5812 (gdnsd), admin 9811, backends 18181.
"""

import argparse
import datetime
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

GTMD_PORT, GDNSD_PORT, ADMIN_PORT, HTTP_PORT = 5811, 5812, 9811, 18181
ZONE = "outage.test"
PROBE_PATH = "/healthz"
VICTIM = 0  # index of the cluster that fails: 127.0.1.1

# gtmd's defaults (README "Health checks"); the bounds below are the README's formulas.
INTERVAL, TIMEOUT, FALL, RISE = 5.0, 2.0, 3, 2
FAST_INTERVAL = INTERVAL / 5
FLAP_WINDOW = 60.0
MARGIN = 0.5  # the target: every app within the bound + 0.5 s

# gdnsd's closest settings (its thresholds count checks at the interval; ok_thresh 1: one
# success resets the failure count, i.e. `down_thresh` failures in a row, like gtmd's fall)
GDNSD_TIMING = {"interval": 5, "timeout": 2, "down_thresh": 3, "up_thresh": 2, "ok_thresh": 1}


FRESH = False  # --fresh: reuse_connections = false (a fresh connection per probe)


def gtmd_bounds(mode):
    """(detection, recovery) bounds in seconds from the README, for gtmd's defaults. The
    same with or without reuse_connections: a killed or blackholed router fails kept
    connections as it fails fresh ones (reuse adds up to one fast_interval only for a
    router that stops accepting but serves its open connections, README "reuse_connections")."""
    if mode == "refused":
        detect = INTERVAL + (FALL - 1) * FAST_INTERVAL
    else:
        detect = INTERVAL + FALL * TIMEOUT + (FALL - 1) * FAST_INTERVAL
    return detect, INTERVAL + (RISE - 1) * FAST_INTERVAL


def gdnsd_bounds(mode):
    """gdnsd's own bounds: down_thresh checks one interval apart (plus a timeout)."""
    t = GDNSD_TIMING
    detect = t["down_thresh"] * t["interval"] + (t["timeout"] if mode == "blackhole" else 0)
    return detect, t["up_thresh"] * t["interval"]


LATENCY_BUCKETS_PER_S = 10000  # reply times are kept in 0.1 ms buckets, up to 1 s
LATENCY_TOP = LATENCY_BUCKETS_PER_S


def latency_stats(hist):
    """(median, p99, max) in ms of a reply-time histogram."""
    total = sum(hist)
    if not total:
        return float("nan"), float("nan"), float("nan")
    out, seen, want = [], 0, [total * 0.5, total * 0.99]
    for b, c in enumerate(hist):
        seen += c
        while want and seen >= want[0]:
            out.append(b / 10)
            want.pop(0)
    top = max(b for b, c in enumerate(hist) if c)
    return out[0], out[1], top / 10


# ---------------------------------------------------------------------------- processes

ALL_CPUS = os.sched_getaffinity(0)


def spawn(argv, **kw):
    """Starts a child on every CPU (the poller pins itself to one; children must not)."""
    return subprocess.Popen(argv, preexec_fn=lambda: os.sched_setaffinity(0, ALL_CPUS), **kw)


def stop(proc, sig=signal.SIGTERM, wait=10):
    """Stops one process this script started, by its PID; SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        proc.send_signal(sig)
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def own_cpu():
    """user + sys seconds of this script (the poller)."""
    t = os.times()
    return t.user + t.system


def cpu_seconds(pid):
    """user + sys seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


NGINX_CONF = """master_process off;
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  fastcgi_temp_path {dir};
  uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  server {{
    listen {ip}:{port} backlog=4096;
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def accepts(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


class Backend:
    """One cluster address: a single nginx process (master_process off), so SIGKILL and
    SIGSTOP hit exactly the process that accepts."""

    def __init__(self, nginx, ip, work):
        self.nginx, self.ip = nginx, ip
        self.dir = os.path.join(work, f"nginx-{ip}")
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=self.dir, ip=ip, port=HTTP_PORT))
        self.proc = None

    def start(self):
        self.proc = spawn([self.nginx, "-c", os.path.join(self.dir, "nginx.conf")],
                          stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not accepts(self.ip, HTTP_PORT):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"nginx on {self.ip}:{HTTP_PORT} did not start; see {self.dir}")
            time.sleep(0.01)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        stop(self.proc, signal.SIGQUIT)


# ------------------------------------------------------------------------------ configs

def cluster_ips(n):
    return [f"127.0.1.{c + 1}" for c in range(n)]


def app_names(n):
    return [f"app{i}.{ZONE}" for i in range(n)]


def write_gtmd_config(path, apps, clusters, max_probes):
    """policy all, HTTP probes on every app x cluster, interval 5 s, defaults otherwise."""
    health = f"max_concurrent_probes = {max_probes}\n" if max_probes else ""
    reuse = "reuse_connections = false\n" if FRESH else ""
    out = [
        f'[server]\nlisten = ["127.0.0.1:{GTMD_PORT}"]\n',
        f'[admin]\nlisten = "127.0.0.1:{ADMIN_PORT}"\n',
        f'[health]\n{health}[health.defaults]\nkind = "http"\nport = {HTTP_PORT}\n'
        f'path = "{PROBE_PATH}"\ninterval = "{INTERVAL:g}s"\n{reuse}',
        f'[[zones]]\norigin = "{ZONE}"\nnameservers = ["ns.outside.net"]\n'
        f'[zones.soa]\nmname = "ns.outside.net"\nrname = "h.{ZONE}"\n',
    ]
    for c, ip in enumerate(cluster_ips(clusters)):
        out.append(f'[[clusters]]\nname = "c{c}"\ningress = ["{ip}"]\n')
    targets = ", ".join(f'{{ cluster = "c{c}" }}' for c in range(clusters))
    for name in app_names(apps):
        out.append(f'[[apps]]\nhostname = "{name}"\npolicy = "all"\ntargets = [{targets}]\n')
    with open(path, "w") as f:
        f.write("\n".join(out))


GDNSD_CONFIG = """options => {{
  listen => [ 127.0.0.1:{port} ]
  udp_rcvbuf => 1048576
  run_dir => {dir}/run
  state_dir => {dir}/state
}}
service_types => {{
  web => {{
    plugin => http_status
    port => {http_port}
    url_path => {path}
    vhost => {zone}
{timing}
  }}
}}
plugins => {{
  multifo => {{
    pool => {{
      service_types => [ web ]
      addrs_v4 => {{ {addrs} }}
    }}
  }}
}}
"""


def write_gdnsd_config(gdir, apps, clusters):
    """N DYNA names over one multifo resource: gdnsd's largest equivalent of the config."""
    for d in ("zones", "run", "state"):
        os.makedirs(os.path.join(gdir, d), exist_ok=True)
    addrs = ", ".join(f"c{c} => {ip}" for c, ip in enumerate(cluster_ips(clusters)))
    timing = "\n".join(f"    {k} => {v}" for k, v in GDNSD_TIMING.items())
    with open(os.path.join(gdir, "config"), "w") as f:
        f.write(GDNSD_CONFIG.format(port=GDNSD_PORT, dir=gdir, http_port=HTTP_PORT,
                                    path=PROBE_PATH, zone=ZONE, timing=timing, addrs=addrs))
    lines = ["$TTL 30", "@ IN SOA ns.outside.net. h 1 7200 1800 259200 900",
             "@ IN NS ns.outside.net."]
    lines += [f"{name.split('.')[0]} 30 DYNA multifo!pool" for name in app_names(apps)]
    with open(os.path.join(gdir, "zones", ZONE), "w") as f:
        f.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------- poller

def question(name):
    """The question section of an A query for `name` (the header is added per slot)."""
    q = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return q + b"\x00\x00\x01\x00\x01"


def victim_answered(data, off, count, victim):
    """True if one of the `count` answer records from `off` is an A record of `victim`."""
    for _ in range(count):
        while True:  # owner name: labels, or a compression pointer
            b = data[off]
            if b >= 0xC0:
                off += 2
                break
            off += b + 1
            if b == 0:
                break
        rtype = (data[off] << 8) | data[off + 1]
        rdlen = (data[off + 8] << 8) | data[off + 9]
        off += 10
        if rtype == 1 and data[off:off + rdlen] == victim:
            return True
        off += rdlen
    return False


class Server:
    """One DNS server polled over all names: socket, pre-built queries, and per name the
    streak (victim answered or not, since when) that decides "for good"."""

    def __init__(self, label, port, names, victim_ip):
        self.label, self.n = label, len(names)
        self.slots = min(8, 65536 // self.n)  # the query ID says which round a reply is for
        if self.slots < 2:
            raise SystemExit("at most 32768 names: the DNS ID encodes round slot and name")
        qs = [question(n) for n in names]
        self.qlen = [12 + len(q) for q in qs]
        self.packets = [[(s * self.n + i).to_bytes(2, "big") + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + q
                         for i, q in enumerate(qs)] for s in range(self.slots)]
        self.victim = socket.inet_aton(victim_ip)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 32 << 20)
                break
            except (OSError, TypeError):
                continue
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.counts = {"sent": 0, "replies": 0, "timeouts": 0, "errors": 0, "late": 0}
        self.streak = [None] * self.n  # last seen: True = victim answered, False = not
        self.since = [0.0] * self.n  # when the current streak began (reply time)
        self.count_returns = False  # during the outage: count answers with the victim again
        self.returns = 0  # ... after an answer of the same name without it
        self.got = bytearray(self.n)
        self.slot = 0
        self.in_round = 0  # this round's queries sent and replies read
        self.out_round = 0
        self.last_reply = 0.0
        self.sent_at = [0.0] * self.n
        self.latencies = {}  # phase: histogram of reply times (0.1 ms buckets, the last one: more)
        self.latency = self.phase_latency("warm-up")

    def begin_round(self, slot):
        self.got = bytearray(self.n)
        self.slot = slot
        self.in_round = self.out_round = 0
        self.last_reply = time.monotonic()

    def send(self, i, window, patience):
        """Sends query i once fewer than `window` of this round's queries are unanswered
        (a burst of 10,000 would only measure the server's socket buffer); no waiting for
        room once no reply has come for `patience` seconds (a server that stopped)."""
        if self.out_round - self.in_round >= window:
            # wait for half the window (one wake-up per reply would cost more than the query)
            while self.out_round - self.in_round > window // 2:
                if self.drain():
                    continue
                wait = self.last_reply + patience - time.monotonic()
                if wait <= 0:
                    break
                select.select([self.sock], [], [], wait)
        self.out_round += 1
        while True:
            try:
                self.sent_at[i] = time.monotonic()
                self.sock.send(self.packets[self.slot][i])
                self.counts["sent"] += 1
                return
            except (BlockingIOError, InterruptedError):
                self.drain()
                select.select([self.sock], [self.sock], [], 0.01)
            except OSError:  # ENOBUFS: the kernel queue is full for a moment
                self.drain()
                time.sleep(0.001)

    def drain(self):
        """Reads every reply waiting; returns how many belonged to this round."""
        now, mine = time.monotonic(), 0
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                if mine:
                    self.last_reply = now
                return mine
            except ConnectionRefusedError:
                self.counts["errors"] += 1  # ICMP: the server's port is closed
                continue
            if len(data) < 12:
                self.counts["errors"] += 1
                continue
            slot, i = divmod((data[0] << 8) | data[1], self.n)
            if slot != self.slot or self.got[i]:
                self.counts["late"] += 1
                continue
            self.got[i] = 1
            mine += 1
            self.in_round += 1
            self.latency[min(int((now - self.sent_at[i]) * LATENCY_BUCKETS_PER_S), LATENCY_TOP)] += 1
            self.counts["replies"] += 1
            count = (data[6] << 8) | data[7]
            if data[3] & 0x0F or count == 0:
                self.counts["errors"] += 1
                continue
            self.observe(i, victim_answered(data, self.qlen[i], count, self.victim), now)

    def observe(self, i, has_victim, now):
        if self.streak[i] is not has_victim:
            if has_victim and self.count_returns and self.streak[i] is False:
                self.returns += 1
            self.streak[i] = has_victim
            self.since[i] = now

    def phase_latency(self, phase):
        self.latency = self.latencies.setdefault(phase, [0] * (LATENCY_TOP + 1))
        return self.latency

    def missing(self):
        return self.n - self.in_round

    def tally(self):
        """(names whose streak is without the victim, names whose streak is with it)."""
        return self.streak.count(False), self.streak.count(True)

    def start_phase(self):
        """Forgets the streaks: a phase's times count from replies after its start."""
        self.streak = [None] * self.n

    def settled(self, want_victim, now, settle):
        """True when every name has answered as wanted for at least `settle` seconds."""
        return all(s is want_victim and now - t >= settle for s, t in zip(self.streak, self.since))

    def times(self, want_victim, t0):
        """(seconds from t0 to each name's final streak as wanted, names never so)."""
        done = [t - t0 for s, t in zip(self.streak, self.since) if s is want_victim]
        return done, self.n - len(done)


class Poller:
    """Rounds over every name of every server; a round's queries are sent together."""

    def __init__(self, servers, period, query_timeout, window):
        self.servers, self.period, self.query_timeout = servers, period, query_timeout
        self.window = window
        self.round_times = []  # (start, {server: seconds from the first send to its last reply})
        self.progress = []  # (end of round, {server: (names without the victim, with it)})
        self.after_round = []  # callables run after every round (CPU and RSS samples)
        self.rounds = 0
        self.next_start = time.monotonic()

    def round(self):
        pause = self.next_start - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        start = time.monotonic()
        self.next_start = start + self.period
        slot = self.rounds % min(s.slots for s in self.servers)
        self.rounds += 1
        for s in self.servers:
            s.begin_round(slot)
        n = self.servers[0].n
        for i in range(n):
            for s in self.servers:
                s.send(i, self.window, self.query_timeout)
        self.collect(start)

    def collect(self, start):
        waiting = {s.sock: s for s in self.servers}
        deadline = time.monotonic() + self.query_timeout
        while True:
            for sock, s in list(waiting.items()):
                s.drain()
                if s.missing() == 0:
                    del waiting[sock]
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            select.select(list(waiting), [], [], left)
        for s in waiting.values():
            s.counts["timeouts"] += s.missing()
        self.round_times.append((start, {s.label: s.last_reply - start for s in self.servers}))
        self.progress.append((time.monotonic(), {s.label: s.tally() for s in self.servers}))
        for f in self.after_round:
            f()

    def rounds_until(self, t_end):
        while time.monotonic() < t_end:
            self.round()

    def slowest(self, t0, t1=float("inf")):
        """The longest round (any server) that started between t0 and t1."""
        return max((max(d.values()) for t, d in self.round_times if t0 <= t <= t1), default=float("nan"))


# ------------------------------------------------------------------------ measurements

class Daemon:
    """A server process whose CPU and RSS are sampled after every poll round."""

    def __init__(self, label, proc):
        self.label, self.proc = label, proc
        self.samples = []  # (monotonic, cpu seconds, rss MiB)

    def sample(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.label} exited (status {self.proc.returncode}) during the run")
        self.samples.append((time.monotonic(), cpu_seconds(self.proc.pid), rss_mib(self.proc.pid)))

    def at(self, t):
        """The last sample at or before t (the first one if none)."""
        best = self.samples[0]
        for s in self.samples:
            if s[0] > t:
                break
            best = s
        return best

    def cpu(self, t0, t1):
        """CPU in % of one core between two times (user+sys per wall second)."""
        a, b = self.at(t0), self.at(t1)
        return 100 * (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else float("nan")

    def rss_peak(self, t0, t1):
        return max((s[2] for s in self.samples if t0 <= s[0] <= t1), default=float("nan"))


class LogWatch:
    """Notes when a line matching `pattern` is appended to a log file (a thread reading
    the new bytes every 10 ms), with the line itself."""

    def __init__(self, path, pattern):
        self.path, self.pattern = path, re.compile(pattern)
        self.offset = os.path.getsize(path)
        self.seen_at, self.line = None, None
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            buf = b""
            while not self.stop and self.seen_at is None:
                chunk = f.read()
                if not chunk:
                    time.sleep(0.01)
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    if self.pattern.search(text):
                        self.seen_at, self.line = time.monotonic(), text
                        return


def admin_get(path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}{path}", timeout=timeout) as r:
        return r.status, r.read().decode(errors="replace")


def final_metrics():
    """gtmd_config_reloads_total{result="success"} and the targets held for flapping
    (gtmd_probe_flapping = 1). /metrics is about 75 MB with 50,000 targets: read only once
    the measurement is over, as rendering it costs gtmd CPU and memory."""
    _, text = admin_get("/metrics", timeout=60)
    m = re.search(r'gtmd_config_reloads_total\{result="success"\} (\d+)', text)
    flapping = len(re.findall(r"^gtmd_probe_flapping\{[^}]*\} 1$", text, re.M))
    return (int(m.group(1)) if m else 0), flapping


def tail(path, lines=5):
    """The last lines of a log, for an error message (the temp dir goes away)."""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def start_gtmd(gtmd, config, log_path):
    log = open(log_path, "w")
    proc = spawn([gtmd, "serve", "--config", config], stderr=log, stdout=log,
                 env=dict(os.environ, RUST_LOG="info"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gtmd exited at start:\n{tail(log_path)}")
        try:
            if admin_get("/readyz", timeout=1)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"gtmd not ready after 180 s:\n{tail(log_path)}")


def start_gdnsd(gdir, log_path):
    log = open(log_path, "w")
    proc = spawn(["gdnsd", "-c", gdir, "start"], stdout=log, stderr=subprocess.STDOUT)
    probe = Server("gdnsd-start", GDNSD_PORT, [f"app0.{ZONE}"], "127.0.1.1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gdnsd exited at start:\n{tail(log_path)}")
        probe.begin_round(0)
        probe.send(0, 1, 0)
        time.sleep(0.1)
        probe.drain()
        if probe.got[0]:
            probe.sock.close()
            return proc
    stop(proc)
    raise SystemExit(f"gdnsd did not answer within 60 s:\n{tail(log_path)}")


# --------------------------------------------------------------------------------- run

def percentile(xs, p):
    xs = sorted(xs)
    return xs[max(0, -(-len(xs) * p // 100) - 1)] if xs else float("nan")


def distribution(done, never):
    if not done:
        return {"first": float("nan"), "median": float("nan"), "p99": float("nan"),
                "last": float("nan"), "never": never}
    return {"first": min(done), "median": statistics.median(done), "p99": percentile(done, 99),
            "last": max(done), "never": never}


def progress(poller, t0, t1, which, step):
    """[(seconds from t0, {server: names}), ...] every `step` s: names without the victim
    (which=0) or with it (which=1) since the phase began, from the last round before."""
    out, k = [], 1
    while t0 + k * step <= t1:
        before = [c for t, c in poller.progress if t <= t0 + k * step]
        if before:
            out.append((k * step, {label: v[which] for label, v in before[-1].items()}))
        k += 1
    return out


def warm_up(poller, limit=120):
    """Polls until every name of every server answers the victim (all clusters up)."""
    deadline = time.monotonic() + limit
    for s in poller.servers:
        s.start_phase()
    while True:
        poller.round()
        if all(s.settled(True, time.monotonic(), 0) for s in poller.servers):
            return
        if time.monotonic() > deadline:
            bad = {s.label: sum(1 for x in s.streak if x is not True) for s in poller.servers}
            raise SystemExit(f"names not answering every cluster after {limit} s: {bad}")


def reload_during_outage(gtmd, poller, t_kill, log, args):
    """SIGHUP at kill + reload_at; returns what the reload cost the answers."""
    server = poller.servers[0]
    poller.rounds_until(t_kill + args.reload_at)
    timeouts0 = server.counts["timeouts"]
    left_before, returns_before = server.tally()[0], server.returns
    watch = LogWatch(log, r"config reloaded")
    t_hup = time.monotonic()
    gtmd.proc.send_signal(signal.SIGHUP)
    limit = t_kill + args.max_outage_seconds
    while watch.seen_at is None and time.monotonic() < limit:
        poller.round()
    seen = watch.seen_at
    watch.stop = True
    # the answers around it: the rounds up to 2 s after it was applied
    poller.rounds_until(min(limit, (seen or limit) + 2))
    took = re.search(r"took_ms=(\d+)", watch.line or "")
    return {
        "applied_s": (seen - t_hup) if seen else float("nan"),
        "took_ms": int(took.group(1)) if took else None,
        "left_before": left_before,
        "returns_before": returns_before,
        "timeouts": server.counts["timeouts"] - timeouts0,
        "round_max": poller.slowest(t_hup - args.period),
        "t_hup": t_hup,
    }


def hold_outage(poller, server, t_kill, args):
    """Polls until --outage-seconds from the kill and until every name has been without the
    victim for flap_window + 1 s (a target down for less than flap_window when it recovers
    is held for flap_hold: that would measure flap damping, not recovery), at most
    --max-outage-seconds."""
    while True:
        now = time.monotonic()
        if now >= t_kill + args.max_outage_seconds:
            return
        if now >= t_kill + args.outage_seconds and server.settled(False, now, FLAP_WINDOW + 1):
            return
        poller.round()


def logged_transitions(log, wall_kill, wall_restore):
    """The victim cluster's transitions in gtmd's log: {"down": [s from the kill], "up": [s
    from the restore]}, timed when the health engine logged them (the answers change when
    they are published, later; the log queue may drop lines, so the counts are printed)."""
    out = {"down": [], "up": []}
    pattern = re.compile(r"^(\S+)Z .*health transition .*cluster=c%d .*to=(down|up)" % VICTIM)
    with open(log, errors="replace") as f:
        for line in f:
            m = pattern.match(line)
            if not m:
                continue
            stamp = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
            t = stamp.timestamp()
            if m.group(2) == "down" and t >= wall_kill:
                out["down"].append(t - wall_kill)
            elif m.group(2) == "up" and t >= wall_restore:
                out["up"].append(t - wall_restore)
    return out


def one_run(mode, run, args, nginx, work):
    """A whole run: fresh backends and servers, steady windows, outage, restore."""
    log = os.path.join(work, f"gtmd-{mode}-{run}.log")
    ips = cluster_ips(args.clusters)
    names = app_names(args.apps)
    backends = [Backend(nginx, ip, work) for ip in ips]
    daemons, procs = [], []
    try:
        for b in backends:
            b.start()
        t_start = time.monotonic()
        gtmd = Daemon("gtmd", start_gtmd(args.gtmd, args.config, log))
        procs.append(gtmd.proc)
        ready_s = time.monotonic() - t_start
        daemons.append(gtmd)
        if not args.skip_gdnsd:
            gdnsd = Daemon("gdnsd", start_gdnsd(args.gdnsd_dir, os.path.join(work, f"gdnsd-{mode}-{run}.log")))
            procs.append(gdnsd.proc)
            daemons.append(gdnsd)
        servers = [Server("gtmd", GTMD_PORT, names, ips[VICTIM])]
        if not args.skip_gdnsd:
            servers.append(Server("gdnsd", GDNSD_PORT, names, ips[VICTIM]))
        sample = lambda: [d.sample() for d in daemons]
        sample()
        rss_ready = {d.label: d.samples[-1][2] for d in daemons}
        t_quiet = time.monotonic()
        time.sleep(args.steady_seconds)  # steady probing, no queries
        sample()
        t_quiet_end = time.monotonic()
        os.sched_setaffinity(0, {args.poller_cpu})
        poller = Poller(servers, args.period, args.query_timeout, args.window)
        poller.after_round.append(sample)
        warm_up(poller)
        t_polled, own0 = time.monotonic(), own_cpu()
        counts_polled = {s.label: dict(s.counts) for s in servers}
        for s in servers:
            s.phase_latency("steady")
        sample()
        poller.rounds_until(t_polled + args.steady_seconds)
        counts_steady = {s.label: dict(s.counts) for s in servers}

        for s in servers:
            s.start_phase()
            s.phase_latency("outage")
            s.count_returns = True
        victim = backends[VICTIM]
        (victim.kill if mode == "refused" else victim.freeze)()
        t_kill, wall_kill = time.monotonic(), time.time()
        print(f"  {mode}: victim {ips[VICTIM]} {'killed' if mode == 'refused' else 'frozen'}", file=sys.stderr)
        reload = reload_during_outage(gtmd, poller, t_kill, log, args)
        hold_outage(poller, servers[0], t_kill, args)
        left = {s.label: distribution(*s.times(False, t_kill)) for s in servers}
        for s in servers:
            left[s.label]["returns"] = s.returns
        counts_outage = {s.label: dict(s.counts) for s in servers}
        reload["violations"] = servers[0].returns - reload["returns_before"]
        for s in servers:
            s.count_returns = False

        for s in servers:
            s.start_phase()
            s.phase_latency("recovery")
        (victim.start if mode == "refused" else victim.thaw)()
        t_restore, wall_restore = time.monotonic(), time.time()
        print(f"  {mode}: victim restored", file=sys.stderr)
        limit = t_restore + args.recovery_seconds
        while time.monotonic() < limit:
            poller.round()
            if all(s.settled(True, time.monotonic(), args.settle) for s in servers):
                break
        back = {s.label: distribution(*s.times(True, t_restore)) for s in servers}
        t_end, own1 = time.monotonic(), own_cpu()
        reload["metric"], flapping = final_metrics()  # after the last sample: it costs gtmd
        counts_end = {s.label: dict(s.counts) for s in servers}
        os.sched_setaffinity(0, ALL_CPUS)

        result = {"mode": mode, "ready_s": ready_s, "left": left, "back": back,
                  "logged": logged_transitions(log, wall_kill, wall_restore),
                  "held_s": t_restore - t_kill, "flapping": flapping,
                  "reload": reload, "cpu": {}, "rss": {}, "dns": {}, "poll": {}}
        for d in daemons:
            last_left = t_kill + left[d.label]["last"] if left[d.label]["never"] == 0 else t_restore
            result["cpu"][d.label] = {
                "steady_quiet": d.cpu(t_quiet, t_quiet_end),
                "steady_polled": d.cpu(t_polled, t_kill),
                "applying": d.cpu(t_kill, min(last_left + args.period, t_restore)),
                "outage": d.cpu(t_kill, t_restore),
                "recovery": d.cpu(t_restore, t_end),
            }
            result["rss"][d.label] = {"ready": rss_ready[d.label],
                                      "before_reload": d.rss_peak(t_kill, reload["t_hup"]),
                                      "outage_peak": d.rss_peak(t_kill, t_restore),
                                      "after": d.samples[-1][2]}
        if args.samples:
            with open(f"{args.samples}.{mode}.{run}", "w") as f:
                f.write("# daemon seconds_from_kill cpu_seconds rss_mib; restore at "
                        f"{t_restore - t_kill:.2f}, reload at {reload['t_hup'] - t_kill:.2f}\n")
                for d in daemons:
                    for t, c, r in d.samples:
                        f.write(f"{d.label} {t - t_kill:.2f} {c:.2f} {r:.1f}\n")
        for s in servers:
            phases = [counts_steady[s.label], counts_outage[s.label], counts_end[s.label]]
            result["dns"][s.label] = {
                k: [phases[j][k] - (phases[j - 1] if j else counts_polled[s.label])[k] for j in range(3)]
                for k in ("sent", "timeouts", "errors", "late")
            }
        result["poll"] = {"rounds": poller.rounds, "servers": [s.label for s in servers],
                          "cpu": 100 * (own1 - own0) / (t_end - t_polled),
                          "slow": [(round(t - t_kill, 1), round(max(d.values()), 2))
                                   for t, d in poller.round_times if max(d.values()) > args.period]}
        for s in servers:
            durations = [d[s.label] for _, d in poller.round_times]
            result["poll"][s.label] = {"median": statistics.median(durations),
                                       "p99": percentile(durations, 99), "max": max(durations)}
            result["dns"][s.label]["latency"] = [latency_stats(s.latencies.get(ph, []))
                                                 for ph in ("steady", "outage", "recovery")]
        result["progress"] = {
            "left": progress(poller, t_kill, t_restore, 0, args.progress_step),
            "back": progress(poller, t_restore, t_end, 1, args.progress_step),
        }
        return result
    finally:
        os.sched_setaffinity(0, ALL_CPUS)
        for p in procs:
            stop(p)
        for b in backends:
            b.stop()


# ------------------------------------------------------------------------------ report

def f2(x):
    if isinstance(x, int):
        return str(x)
    return "n/a" if x != x else f"{x:.2f}"


def print_run(r, args, label):
    mode = r["mode"]
    labels = r["poll"]["servers"]
    det, rec = gtmd_bounds(mode)
    gdet, grec = gdnsd_bounds(mode)
    bounds = {"gtmd": (det + MARGIN, rec + MARGIN), "gdnsd": (gdet, grec)}
    p = r["poll"]
    print(f"\n== {label}: {mode} ({'SIGKILL: connection refused' if mode == 'refused' else 'SIGSTOP: probes time out'}), "
          f"victim 127.0.1.{VICTIM + 1}, outage held {r['held_s']:.1f} s ==")
    print(f"poller: all {args.apps} names of each of {', '.join(labels)} every round; a round every "
          f"{args.period:g} s (the resolution), at most {args.window} queries in flight per server, "
          f"DNS timeout {args.query_timeout:g} s; {p['rounds']} rounds; poller CPU {p['cpu']:.0f} % of its core")
    print(f"  round time (first send to the last reply): median {f2(p[labels[0]]['median'])} s, "
          f"p99 {f2(p[labels[0]]['p99'])} s, max {f2(p[labels[0]]['max'])} s")
    if p["slow"]:
        print(f"rounds longer than the period: {len(p['slow'])} (s from the kill, duration): "
              + " ".join(f"{t}:{d}" for t, d in p["slow"][:20]) + (" ..." if len(p["slow"]) > 20 else ""))
    print(f"gtmd ready (first probe round complete) {r['ready_s']:.1f} s after start")
    head = f"{'seconds from the kill / restore':<36}" + "".join(f"{l:>12}" for l in labels)
    for phase, key, b in (("left for good", "left", 0), ("back for good", "back", 1)):
        print(head.replace("seconds from the kill / restore", f"{phase} (s from the {'kill' if b == 0 else 'restore'})"))
        for stat in ("first", "median", "p99", "last"):
            print(f"  {stat:<34}" + "".join(f"{f2(r[key][l][stat]):>12}" for l in labels))
        print(f"  {'names never ' + ('left' if b == 0 else 'back'):<34}" + "".join(f"{r[key][l]['never']:>12}" for l in labels))
        if b == 0:
            print(f"  {'answers with it again (flips)':<34}" + "".join(f"{r[key][l]['returns']:>12}" for l in labels))
        print(f"  {'bound':<34}" + "".join(f"{bounds[l][b]:>12.1f}" for l in labels))
        logged = r["logged"]["down" if b == 0 else "up"]
        if logged:
            d = distribution(logged, 0)
            print(f"  gtmd log: {len(logged)} transitions to {'down' if b == 0 else 'up'} of the victim's targets, "
                  f"first {f2(d['first'])} s, median {f2(d['median'])} s, last {f2(d['last'])} s (when the health "
                  "engine logged them; the answers change when published)")
        if b == 1:
            print(f"  {'gtmd targets held for flapping':<34}{r['flapping']:>12}   (gtmd_probe_flapping = 1 at the end)")
        steps = r["progress"][key]
        print(f"  names {'without' if b == 0 else 'with'} the victim, every {args.progress_step:g} s: " + "; ".join(
            f"+{t:g}s " + "/".join(str(c[l]) for l in labels) for t, c in steps) + f" ({'/'.join(labels)})")
    print(f"  bounds: gtmd = README's {'refused' if mode == 'refused' else 'timeouts'} detection "
          f"{gtmd_bounds(mode)[0]:g} s / recovery {gtmd_bounds(mode)[1]:g} s (+ a probe's own time, <= timeout "
          f"{TIMEOUT:g} s) + {MARGIN} s; gdnsd = its own: down_thresh x interval"
          f"{' + timeout' if mode == 'blackhole' else ''} / up_thresh x interval")
    print(f"{'CPU, % of one core (user+sys)':<36}" + "".join(f"{l:>12}" for l in labels))
    for k, what in (("steady_quiet", "steady probing, no queries"),
                    ("steady_polled", "steady probing + poller"),
                    ("applying", "kill -> last name left"),
                    ("outage", "whole outage"),
                    ("recovery", "restore -> end")):
        print(f"  {what:<34}" + "".join(f"{f2(r['cpu'][l][k]):>12}" for l in labels))
    print(f"{'RSS, MiB':<36}" + "".join(f"{l:>12}" for l in labels))
    for k, what in (("ready", "ready"), ("before_reload", "peak, kill -> reload"),
                    ("outage_peak", "peak, whole outage"), ("after", "after recovery")):
        print(f"  {what:<34}" + "".join(f"{r['rss'][l][k]:>12.1f}" for l in labels))
    print(f"{'DNS (steady / outage / recovery)':<36}" + "".join(f"{l:>27}" for l in labels))
    for k in ("sent", "timeouts", "errors", "late"):
        print(f"  {k:<34}" + "".join(f"{' / '.join(str(v) for v in r['dns'][l][k]):>27}" for l in labels))
    for i, k in enumerate(("median", "p99", "max")):
        print(f"  {'reply time ' + k + ', ms':<34}" + "".join(
            f"{' / '.join(f2(ph[i]) for ph in r['dns'][l]['latency']):>27}" for l in labels))
    rl = r["reload"]
    took = f"{rl['took_ms']} ms" if rl["took_ms"] is not None else "n/a"
    print(f"reload (SIGHUP, same file) {args.reload_at:g} s into the outage, {rl['left_before']} names had left: "
          f"applied after {f2(rl['applied_s'])} s (signal -> 'config reloaded' line; gtmd's took_ms {took}; "
          f"reloads_total success {rl['metric']} at the end); answers with the dead cluster again after one without it "
          f"(health not carried over): {rl['violations']} after the signal ({rl['returns_before']} before); DNS timeouts from the signal to 2 s after: {rl['timeouts']}; "
          f"slowest round meanwhile {f2(rl['round_max'])} s")
    if "gdnsd" in labels:
        print("note: gdnsd monitors per address (5 http_status monitors), gtmd probes every app x cluster "
              f"({args.apps * args.clusters} targets): the gdnsd column is the answer path under an outage, "
              "not the probe cost. gdnsd timing: " + ", ".join(f"{k} {v}" for k, v in GDNSD_TIMING.items())
              + "; udp_rcvbuf 1048576 (its maximum)")


def summary(results, args):
    """Medians with ranges over the runs of one mode (with --runs >= 3)."""
    mode = results[0]["mode"]
    labels = results[0]["poll"]["servers"]
    print(f"\n== {mode}: medians over {len(results)} runs [min-max] ==")
    print(f"  {'':<22}" + "".join(f"{l:>28}" for l in labels))
    rows = [("left", s) for s in ("first", "median", "p99", "last", "never")] + \
           [("back", s) for s in ("first", "median", "p99", "last", "never")] + \
           [("cpu", s) for s in ("steady_quiet", "steady_polled", "applying", "outage")] + \
           [("rss", s) for s in ("ready", "before_reload", "outage_peak", "after")]
    for group, key in rows:
        cells = [median_range([r[group][l][key] for r in results]) for l in labels]
        print(f"  {group + ' ' + key:<22}" + "".join(f"{c:>28}" for c in cells))
    for key in ("applied_s", "violations", "timeouts"):
        print(f"  {'reload ' + key:<22}{median_range([r['reload'][key] for r in results]):>28}")


def median_range(xs):
    """'median [min-max]' of the values that are numbers (a phase without any is n/a)."""
    xs = [x for x in xs if x == x]
    if not xs:
        return "n/a"
    return f"{f2(statistics.median(xs))} [{f2(min(xs))}-{f2(max(xs))}]"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["refused", "blackhole", "both"], default="both")
    ap.add_argument("--apps", type=int, default=10000)
    ap.add_argument("--clusters", type=int, default=5)
    ap.add_argument("--outage-seconds", type=float, default=65,
                    help="the shortest outage; it lasts until every name has been without the "
                         f"victim for flap_window ({FLAP_WINDOW:g} s) + 1 s, or recovery waits flap_hold")
    ap.add_argument("--max-outage-seconds", type=float, default=180)
    ap.add_argument("--recovery-seconds", type=float, default=45,
                    help="longest wait after the restore")
    ap.add_argument("--settle", type=float, default=10,
                    help="the restore phase ends once every name has answered the victim this long")
    ap.add_argument("--reload-at", type=float, default=30, help="SIGHUP this long after the kill")
    ap.add_argument("--steady-seconds", type=float, default=10)
    ap.add_argument("--progress-step", type=float, default=5,
                    help="print the names that have left / come back this often")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--period", type=float, default=0.5, help="a poll round starts this often")
    ap.add_argument("--query-timeout", type=float, default=1.0)
    ap.add_argument("--window", type=int, default=256,
                    help="queries of a round in flight per server at most")
    ap.add_argument("--poller-cpu", type=int, default=max(ALL_CPUS))
    ap.add_argument("--max-concurrent-probes", type=int, default=0, help="0: gtmd's default")
    ap.add_argument("--gtmd", default="target/release/gtmd")
    ap.add_argument("--skip-gdnsd", action="store_true")
    ap.add_argument("--fresh", action="store_true",
                    help="probes with reuse_connections = false (a fresh connection per probe; "
                         "the default keeps connections alive per ingress address)")
    ap.add_argument("--samples", help="write every CPU/RSS sample (seconds from the kill) to this file")
    args = ap.parse_args()
    if args.reload_at >= args.outage_seconds:
        ap.error("--reload-at must fall inside the outage")
    if args.max_outage_seconds < args.outage_seconds:
        ap.error("--max-outage-seconds must be at least --outage-seconds")
    return args


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx not found: apt-get install nginx-light")
    if not args.skip_gdnsd and not shutil.which("gdnsd"):
        raise SystemExit("gdnsd not found: apt-get install gdnsd, or --skip-gdnsd")
    args.gtmd = os.path.abspath(args.gtmd)
    global FRESH
    FRESH = args.fresh
    work = tempfile.mkdtemp(prefix="gtmd-outage-")
    args.config = os.path.join(work, "gtmd.toml")
    args.gdnsd_dir = os.path.join(work, "gdnsd")
    write_gtmd_config(args.config, args.apps, args.clusters, args.max_concurrent_probes)
    if not args.skip_gdnsd:
        write_gdnsd_config(args.gdnsd_dir, args.apps, args.clusters)
    modes = ["refused", "blackhole"] if args.mode == "both" else [args.mode]
    print(f"outage.py: {args.apps} apps x {args.clusters} clusters, policy all, HTTP probes on every "
          f"app x cluster ({args.apps * args.clusters} targets), interval {INTERVAL:g} s, gtmd defaults "
          f"otherwise (timeout {TIMEOUT:g} s, fall {FALL}, rise {RISE}, fast_interval {FAST_INTERVAL:g} s"
          f"{', max_concurrent_probes ' + str(args.max_concurrent_probes) if args.max_concurrent_probes else ''}); "
          f"{'reuse_connections = false; ' if FRESH else ''}gtmd {args.gtmd}; poller pinned to CPU {args.poller_cpu} of {len(ALL_CPUS)}")
    try:
        for mode in modes:
            results = []
            for run in range(args.runs):
                results.append(one_run(mode, run + 1, args, nginx, work))
                print_run(results[-1], args, f"run {run + 1}/{args.runs}")
                sys.stdout.flush()
            if args.runs >= 3:
                summary(results, args)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
