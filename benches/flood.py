#!/usr/bin/env python3
"""gtmd under attack, side by side with Knot on the same zone: memory stays flat, a
well-behaved client keeps being answered, no probe verdict changes.

Attacks (each on a freshly started server, the server's threads pinned to CPU 0, attackers
and measuring clients on CPU 1; every loop stops by itself after --seconds):
  nxdomain   open-loop flood of random nonexistent names from one source (RRL off)
  nxdomain-1000  the same from 1,000 sources in 1,000 different /24s, RRL on in both servers
  any        ANY queries for the zone's names at full speed (RRL off)
  odd-edns   a mix of odd EDNS: version 1, two OPT records, a non-root OPT owner, ECS /33,
             unknown options, DO bit, random names (RRL off)
  admin      gtmd only: 1,100 idle connections to the admin port, then 20,000 connection
             attempts
  tcp        1,100 DNS-over-TCP connections from one address that send queries and never
             read, reconnecting when closed; a legitimate TCP client from another address

During each attack a well-behaved client asks the app name over UDP at 1k qps (over TCP
one query per connection at 50/s for `tcp`; its address is exempt from RRL, as an
operator's own resolvers would be) and /healthz is fetched every 0.5 s with a 1 s timeout.

Printed per attack and server: RSS idle (before), peak (sampled every 100 ms) and 10 s after
the attack; the well-behaved client's answered share and p99 (ms); replies per second the
attackers received; whether any probe verdict changed (gtmd_health_transitions_total); the
slowest /healthz and how many failed. Medians over --runs whole runs, with the range.

Targets (issue 12): peak RSS <= idle + 64 MiB; well-behaved >= 99 % answered, p99 <= 50 ms;
no probe verdict changes; /healthz always within 1 s.

Usage: benches/flood.py [--runs 3] [--seconds 30] [--gtmd target/release/gtmd]
                        [--attacks nxdomain,any,...] [--skip-knot]
Needs knotd (Debian knot), taskset; nginx (nginx-light) for probe backends if present, else
a Python backend. Installs nothing; stops only what it started.
"""

import argparse
import multiprocessing
import os
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PORT = 5701
ADMIN = 5702
KNOT_PORT = 5703
GOOD = "w.bench.test"
ATTACKS = ["nxdomain", "nxdomain-1000", "any", "odd-edns", "admin", "tcp"]

ZONE = """$TTL 300
@ IN SOA ns1 hostmaster 1 7200 1800 259200 900
@ IN NS ns1
ns1 IN A 127.0.0.1
static IN A 192.0.2.1
static IN TXT "some text to make ANY replies a little larger than the question"
w IN A 127.0.0.11
w IN A 127.0.0.12
"""


def gtmd_config(rrl):
    rrl_section = f"""
[rrl]
enabled = {"true" if rrl else "false"}
exempt = ["127.0.0.1/32"]
"""
    return f"""
[server]
listen = ["127.0.0.1:{PORT}"]
udp_workers = 1
[admin]
listen = "127.0.0.1:{ADMIN}"
{rrl_section}
[[zones]]
origin = "bench.test"
nameservers = ["ns1.bench.test"]
[zones.soa]
mname = "ns1.bench.test"
rname = "hostmaster.bench.test"
[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.1"
[[zones.records]]
name = "static"
type = "A"
value = "192.0.2.1"
[[zones.records]]
name = "static"
type = "TXT"
value = "some text to make ANY replies a little larger than the question"
[[clusters]]
name = "a"
ingress = ["127.0.0.11"]
[[clusters]]
name = "b"
ingress = ["127.0.0.12"]
[[apps]]
hostname = "w.bench.test"
probe = {{ kind = "http", port = 18091, interval = "1s" }}
targets = [{{ cluster = "a" }}, {{ cluster = "b" }}]
"""


def knot_config(d, rrl):
    mod = """mod-rrl:
  - id: default
    rate-limit: 200
    slip: 2
    whitelist: 127.0.0.1/32
template:
  - id: default
    global-module: mod-rrl/default
""" if rrl else ""
    return f"""server:
    listen: 127.0.0.1@{KNOT_PORT}
    rundir: "{d}"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}/db"
log:
  - target: stderr
    any: error
{mod}zone:
  - domain: bench.test
    storage: "{d}"
    file: bench.test.zone
"""


NGINX = """daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.11:18091; listen 127.0.0.12:18091; location / {{ return 200 "ok"; }} }}
}}
"""

PY_BACKEND = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    def handle_error(self, *a): pass
S((sys.argv[1], 18091), H).serve_forever()
"""


# ---------------------------------------------------------------- DNS messages

def name_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, name, qtype=1, additional=b"", arcount=0):
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, arcount) + name_wire(name) + \
        struct.pack(">HH", qtype, 1) + additional


def opt(owner=b"\0", version=0, do=False, options=b"", payload=1232):
    ttl = (version << 16) | (0x8000 if do else 0)
    return owner + struct.pack(">HHIH", 41, payload, ttl, len(options)) + options


def random_label(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


def flood_packets(kind, n=20000, seed=1):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        qid = i & 0xFFFF
        if kind in ("nxdomain", "nxdomain-1000"):
            out.append(query(qid, f"{random_label(rng)}.bench.test"))
        elif kind == "any":
            out.append(query(qid, rng.choice(["bench.test", "static.bench.test", "w.bench.test"]), 255,
                             opt(payload=4096), 1))
        elif kind == "odd-edns":
            name = f"{random_label(rng)}.bench.test"
            ecs33 = struct.pack(">HHHBB", 8, 8, 1, 33, 0) + bytes([192, 0, 2, 1])
            variant = i % 6
            if variant == 0:
                out.append(query(qid, name, 1, opt(version=1), 1))
            elif variant == 1:
                out.append(query(qid, name, 1, opt() + opt(), 2))
            elif variant == 2:
                out.append(query(qid, name, 1, opt(owner=b"\x01a\0"), 1))
            elif variant == 3:
                out.append(query(qid, name, 1, opt(options=ecs33), 1))
            elif variant == 4:
                out.append(query(qid, name, 16, opt(options=struct.pack(">HH", 65001, 4) + b"abcd"), 1))
            else:
                out.append(query(qid, "static.bench.test", 1, opt(do=True, payload=65535), 1))
    return out


# ---------------------------------------------------------------- processes

def pin(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], stdout=subprocess.DEVNULL, check=False)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def udp_ask(port, name, timeout=0.5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(query(1, name), ("127.0.0.1", port))
        return s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()


def metric_sum(family):
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(family + "{") or line.startswith(family + " "):
            total += float(line.split()[-1])
    return total


class Server:
    def __init__(self, name, argv, port, work):
        self.name, self.argv, self.port, self.work = name, argv, port, work
        self.proc = None

    def start(self):
        log = open(os.path.join(self.work, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen(["taskset", "-c", "0", *self.argv], stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, RUST_LOG="warn"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if udp_ask(self.port, GOOD):
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {self.work}/{self.name}.log")
            time.sleep(0.2)
        else:
            raise SystemExit(f"{self.name} did not answer; see {self.work}/{self.name}.log")
        pin(self.proc.pid, "0")
        if self.name == "gtmd":
            # Ready: the first probe round is done and both clusters are answered.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/readyz", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- attackers (child processes)

def udp_flood(kind, port, seconds, sources, counter):
    """Sends `kind` packets open-loop from `sources` addresses until the deadline; counts
    the replies received in `counter` (a multiprocessing Value)."""
    os.sched_setaffinity(0, {1})
    # Below the measuring clients on the same CPU, so their figures are the server's.
    os.nice(19)
    packets = flood_packets(kind)
    socks = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        socks.append(s)
    deadline = time.monotonic() + seconds
    dst = ("127.0.0.1", port)
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    replies = 0
    i = 0
    n = len(packets)
    ns = len(socks)
    while time.monotonic() < deadline:
        for _ in range(256):
            try:
                socks[i % ns].sendto(packets[i % n], dst)
            except OSError:
                pass
            i += 1
        for fd, _ in ep.poll(0):
            s = by_fd[fd]
            while True:
                try:
                    s.recv(65535)
                    replies += 1
                except OSError:
                    break
    counter.value = replies


def admin_storm(seconds, result):
    """1,100 idle connections held for half the time, then up to 20,000 connection
    attempts (connect, close) for the rest."""
    os.sched_setaffinity(0, {1})
    # Below the measuring clients on the same CPU, so their figures are the server's.
    os.nice(19)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held, failed = [], 0
    half = time.monotonic() + seconds / 2
    for _ in range(1100):
        try:
            held.append(socket.create_connection(("127.0.0.1", ADMIN), timeout=1))
        except OSError:
            failed += 1
    while time.monotonic() < half:
        time.sleep(0.1)
    for s in held:
        s.close()
    attempts = 0
    deadline = time.monotonic() + seconds / 2
    while attempts < 20000 and time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", ADMIN), timeout=1)
            s.close()
        except OSError:
            failed += 1
        attempts += 1
    result.value = attempts


def tcp_storm(port, seconds, result):
    """Up to 1,100 connections from 127.0.0.2 that send queries and never read; closed ones
    are reopened until the deadline."""
    os.sched_setaffinity(0, {1})
    # Below the measuring clients on the same CPU, so their figures are the server's.
    os.nice(19)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    q = query(7, "static.bench.test")
    framed = struct.pack(">H", len(q)) + q
    burst = framed * 2000
    conns = []
    deadline = time.monotonic() + seconds
    opened = 0
    while time.monotonic() < deadline:
        while len(conns) < 1100 and time.monotonic() < deadline:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.2", 0))
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                break
            conns.append(s)
            opened += 1
        alive = []
        for s in conns:
            try:
                s.send(burst)
                alive.append(s)
            except BlockingIOError:
                alive.append(s)
            except OSError:
                s.close()
        conns = alive
        time.sleep(0.05)
    for s in conns:
        s.close()
    result.value = opened


# ---------------------------------------------------------------- measuring clients (threads)

class GoodClient(threading.Thread):
    """Asks GOOD over UDP at `rate` per second (or over TCP, one query per connection, from
    127.0.0.3); records each answer's latency."""

    def __init__(self, port, rate, tcp=False):
        super().__init__(daemon=True)
        self.port, self.rate, self.tcp = port, rate, tcp
        self.stop = threading.Event()
        self.sent, self.lat = 0, []

    def run(self):
        if self.tcp:
            return self.run_tcp()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
        pending = {}
        start = time.monotonic()
        qid = 0
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                qid = (qid + 1) & 0xFFFF
                pending[qid] = time.monotonic()
                s.sendto(query(qid, GOOD), ("127.0.0.1", self.port))
                self.sent += 1
            try:
                while True:
                    data = s.recv(4096)
                    rid = struct.unpack(">H", data[:2])[0]
                    t = pending.pop(rid, None)
                    if t is not None:
                        self.lat.append(time.monotonic() - t)
            except OSError:
                pass
        # Late answers within 1 s still count.
        end = time.monotonic() + 1
        while pending and time.monotonic() < end:
            try:
                data = s.recv(4096)
                t = pending.pop(struct.unpack(">H", data[:2])[0], None)
                if t is not None and time.monotonic() - t < 1:
                    self.lat.append(time.monotonic() - t)
            except OSError:
                pass

    def run_tcp(self):
        q = query(9, GOOD)
        while not self.stop.is_set():
            t = time.monotonic()
            self.sent += 1
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.3", 0))
                s.settimeout(1)
                s.connect(("127.0.0.1", self.port))
                s.sendall(struct.pack(">H", len(q)) + q)
                head = s.recv(2)
                if len(head) == 2:
                    self.lat.append(time.monotonic() - t)
                s.close()
            except OSError:
                pass
            time.sleep(max(0, 0.02 - (time.monotonic() - t)))

    def summary(self):
        answered = len(self.lat) / self.sent if self.sent else 0.0
        lat = sorted(self.lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        return answered, p99


class HealthzPoller(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.worst, self.failed = 0.0, 0

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                ok = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/healthz", timeout=1).status == 200
            except OSError:
                ok = False
            dt = time.monotonic() - t
            self.worst = max(self.worst, dt)
            if not ok or dt > 1:
                self.failed += 1
            self.stop.wait(0.5)


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.peak = 0

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.stop.wait(0.1)


# ---------------------------------------------------------------- one attack

def run_attack(kind, server, seconds, settle=10):
    is_gtmd = server.name == "gtmd"
    server.start()
    pid = server.proc.pid
    time.sleep(1)
    idle = rss_kib(pid)
    transitions = metric_sum("gtmd_health_transitions_total") if is_gtmd else 0
    sampler = RssSampler(pid)
    sampler.start()
    healthz = HealthzPoller() if is_gtmd else None
    if healthz:
        healthz.start()
    good = GoodClient(server.port, 1000 if kind != "tcp" else 50, tcp=(kind == "tcp"))
    good.start()
    replies = multiprocessing.Value("q", 0)
    if kind in ("nxdomain", "any", "odd-edns"):
        p = multiprocessing.Process(target=udp_flood, args=(kind, server.port, seconds, ["127.0.0.1"], replies))
    elif kind == "nxdomain-1000":
        sources = [f"127.{1 + i // 250}.{i % 250}.1" for i in range(1000)]
        p = multiprocessing.Process(target=udp_flood, args=(kind, server.port, seconds, sources, replies))
    elif kind == "admin":
        p = multiprocessing.Process(target=admin_storm, args=(seconds, replies))
    else:
        p = multiprocessing.Process(target=tcp_storm, args=(server.port, seconds, replies))
    p.start()
    p.join(seconds + 60)
    if p.is_alive():
        p.kill()
    good.stop.set()
    good.join()
    time.sleep(settle)
    after = rss_kib(pid)
    sampler.stop.set()
    sampler.join()
    if healthz:
        healthz.stop.set()
        healthz.join()
    changed = None
    if is_gtmd:
        changed = metric_sum("gtmd_health_transitions_total") != transitions
        changed = changed or len(udp_ask(server.port, GOOD) or b"") == 0
    answered, p99 = good.summary()
    result = {
        "idle": idle / 1024, "peak": max(sampler.peak, idle) / 1024, "after": after / 1024,
        "answered": answered * 100, "p99": p99,
        "rate": replies.value / seconds if kind not in ("admin", "tcp") else replies.value,
        "changed": changed,
        "healthz_worst": healthz.worst * 1000 if healthz else float("nan"),
        "healthz_failed": healthz.failed if healthz else 0,
    }
    server.stop()
    return result


def med(values):
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{m:.1f} [{min(values):.1f}-{max(values):.1f}]" if len(values) > 1 else f"{m:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--gtmd", default="target/release/gtmd")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--skip-knot", action="store_true")
    a = ap.parse_args()
    # The measuring clients share CPU 1 with the attackers (at a lower priority); CPU 0 is
    # the server's alone.
    os.sched_setaffinity(0, {1})
    attacks = a.attacks.split(",")
    for t in attacks:
        if t not in ATTACKS:
            raise SystemExit(f"unknown attack {t!r}: one of {', '.join(ATTACKS)}")
    for tool in ("taskset",) + (() if a.skip_knot else ("knotd",)):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install knot util-linux")
    if not os.path.exists(a.gtmd):
        raise SystemExit(f"{a.gtmd} not found: cargo build --release")
    work = tempfile.mkdtemp(prefix="gtmd-flood-")
    os.makedirs(os.path.join(work, "knot/db"), exist_ok=True)
    with open(os.path.join(work, "knot/bench.test.zone"), "w") as f:
        f.write(ZONE)
    for rrl in (False, True):
        with open(os.path.join(work, f"gtmd-{int(rrl)}.toml"), "w") as f:
            f.write(gtmd_config(rrl))
        with open(os.path.join(work, f"knot/knot-{int(rrl)}.conf"), "w") as f:
            f.write(knot_config(os.path.join(work, "knot"), rrl))
    if shutil.which("nginx"):
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(NGINX.format(d=work))
        backends = [subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work],
                                     stderr=subprocess.DEVNULL)]
    else:
        backends = [subprocess.Popen([sys.executable, "-c", PY_BACKEND, ip]) for ip in ("127.0.0.11", "127.0.0.12")]
    for b in backends:
        pin(b.pid, "1")
    results = {}
    try:
        for run in range(a.runs):
            for kind in attacks:
                rrl = kind == "nxdomain-1000"
                servers = [Server("gtmd", [a.gtmd, "serve", "--config", os.path.join(work, f"gtmd-{int(rrl)}.toml")],
                                  PORT, work)]
                if not a.skip_knot and kind != "admin":
                    servers.append(Server("knot", ["knotd", "-c", os.path.join(work, f"knot/knot-{int(rrl)}.conf")],
                                          KNOT_PORT, work))
                for server in servers:
                    r = run_attack(kind, server, a.seconds)
                    results.setdefault((kind, server.name), []).append(r)
                    print(f"run {run + 1} {kind:14} {server.name:5} " +
                          " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()),
                          flush=True)
    finally:
        for b in backends:
            b.terminate()
            try:
                b.wait(5)
            except subprocess.TimeoutExpired:
                b.kill()
    print()
    print(f"Medians of {a.runs} runs of {a.seconds} s [range]. RSS in MiB; good = well-behaved client.")
    print(f"{'attack':14} {'server':6} {'RSS idle':>16} {'RSS peak':>18} {'RSS +10s':>16} "
          f"{'good %':>18} {'good p99 ms':>18} {'replies/s':>22} {'verdict chg':>11} {'healthz worst ms':>20}")
    for (kind, name), rs in results.items():
        changed = "n/a" if rs[0]["changed"] is None else ("YES" if any(r["changed"] for r in rs) else "no")
        hz = med([r["healthz_worst"] for r in rs])
        fails = sum(r["healthz_failed"] for r in rs)
        rate = "n/a" if kind in ("admin", "tcp") else med([r["rate"] for r in rs])
        print(f"{kind:14} {name:6} {med([r['idle'] for r in rs]):>16} {med([r['peak'] for r in rs]):>18} "
              f"{med([r['after'] for r in rs]):>16} {med([r['answered'] for r in rs]):>18} "
              f"{med([r['p99'] for r in rs]):>18} {rate:>22} {changed:>11} "
              f"{hz + (f' ({fails} failed)' if fails else ''):>20}")
    print(f"\nlogs in {work}")


if __name__ == "__main__":
    main()
