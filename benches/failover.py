#!/usr/bin/env python3
"""Failover convergence: gtmd, gdnsd and PowerDNS side by side, in one run.

A backend on 127.0.0.11:18080 (the "victim") and one on 127.0.0.12:18080 (always up) serve
HTTP 200. Every server answers shop.bench.test with the addresses whose probe is up. The
victim is then killed (connection refused) or frozen with SIGSTOP (accepts, never answers:
probes time out), at a random moment, and restarted; every server is polled over UDP every
50 ms to time when the victim's address leaves the answer and when it comes back.

Servers (all on loopback, started and stopped by this script):
  gtmd-1s     interval 1s, rise 2, fall 2, fast_interval 200ms, timeout 500ms
  gtmd-2s     the peers' settings: interval 2s, rise 2, fall 2, timeout 1s
  gdnsd       http_status, interval 2, timeout 1, up/ok/down thresholds 2 (multifo)
  pdns        LUA ifurlup, lua-health-checks-interval=2 (one check decides)

Usage: benches/failover.py [--runs 5] [--gtmd target/release/gtmd] [--skip-peers]
Needs: gdnsd, pdns-server, pdns-backend-bind (Debian packages) unless --skip-peers.
Prints medians and every sample; exits non-zero only if a server could not be started.
"""

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

VICTIM = "127.0.0.11"
STEADY = "127.0.0.12"
PORT = 18080
NAME = "shop.bench.test"
POLL = 0.05

BACKEND = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    do_HEAD = do_GET
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    def handle_error(self, *a):
        pass  # clients that timed out while the backend was frozen: not our concern
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


def query(port, name=NAME, timeout=0.5):
    """One A query over UDP: (rcode, set of addresses) or (None, None) on timeout."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0000, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        while True:
            data, _ = s.recvfrom(4096)
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                break
    except socket.timeout:
        return None, None
    finally:
        s.close()
    rcode = data[3] & 0x0F
    an = struct.unpack(">H", data[6:8])[0]
    i = 12
    # skip the question
    while data[i] != 0:
        i += data[i] + 1
    i += 5
    addrs = set()
    for _ in range(an):
        if data[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while data[i] != 0:
                i += data[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[i : i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            addrs.add(socket.inet_ntoa(data[i : i + 4]))
        i += rdlen
    return rcode, addrs


def accepts(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


class Backend:
    def __init__(self, ip):
        self.ip = ip
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", BACKEND, self.ip, str(PORT)])
        deadline = time.monotonic() + 10
        while not accepts(self.ip, PORT):
            if time.monotonic() > deadline:
                raise SystemExit(f"backend {self.ip} did not start")
            time.sleep(0.005)
        return time.monotonic()

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        return time.monotonic()

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)
        return time.monotonic()

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)
        return time.monotonic()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


GTMD_TOML = """
[server]
listen = ["127.0.0.1:{port}"]
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
[[clusters]]
name = "a"
ingress = ["{victim}"]
[[clusters]]
name = "b"
ingress = ["{steady}"]
[[apps]]
hostname = "{name}"
ttl = 30
probe = {{ kind = "http", port = {bport}, path = "/", {timing} }}
targets = [{{ cluster = "a" }}, {{ cluster = "b" }}]
"""

GDNSD_CONFIG = """
options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {dir}/run
  state_dir => {dir}/state
}}
service_types => {{
  web => {{
    plugin => http_status
    port => {bport}
    url_path => /
    vhost => {name}
    interval => 2
    timeout => 1
    up_thresh => 2
    ok_thresh => 2
    down_thresh => 2
  }}
}}
plugins => {{
  multifo => {{
    shop => {{
      service_types => [ web ]
      addrs_v4 => {{ a => {victim}, b => {steady} }}
    }}
  }}
}}
"""

ZONE = """$TTL 30
@ IN SOA ns1 hostmaster 1 7200 1800 259200 900
@ IN NS ns1
ns1 IN A 127.0.0.1
"""

PDNS_CONF = """launch=bind
bind-config={dir}/named.conf
local-address=127.0.0.1
local-port={port}
enable-lua-records=shared
lua-health-checks-interval=2
security-poll-suffix=
socket-dir={dir}
daemon=no
guardian=no
loglevel=3
"""


class Server:
    def __init__(self, label, port, argv, workdir):
        self.label, self.port, self.argv, self.workdir = label, port, argv, workdir
        self.proc = None

    def start(self):
        log = open(os.path.join(self.workdir, f"{self.label}.log"), "w")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rcode, _ = query(self.port, timeout=0.2)
            if rcode is not None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"{self.label} did not start; see {self.workdir}/{self.label}.log")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def make_servers(work, gtmd, skip_peers):
    servers = []
    for label, port, timing in [
        ("gtmd-1s", 5390, 'interval = "1s", rise = 2, fall = 2, fast_interval = "200ms", timeout = "500ms"'),
        ("gtmd-2s", 5393, 'interval = "2s", rise = 2, fall = 2, timeout = "1s"'),
    ]:
        path = os.path.join(work, f"{label}.toml")
        with open(path, "w") as f:
            f.write(GTMD_TOML.format(port=port, victim=VICTIM, steady=STEADY, name=NAME, bport=PORT, timing=timing))
        servers.append(Server(label, port, [gtmd, "serve", "--config", path], work))
    if skip_peers:
        return servers
    gd = os.path.join(work, "gdnsd")
    for d in ("zones", "run", "state"):
        os.makedirs(os.path.join(gd, d), exist_ok=True)
    with open(os.path.join(gd, "config"), "w") as f:
        f.write(GDNSD_CONFIG.format(port=5391, dir=gd, bport=PORT, name=NAME, victim=VICTIM, steady=STEADY))
    with open(os.path.join(gd, "zones", "bench.test"), "w") as f:
        f.write(ZONE + "shop 30 DYNA multifo!shop\n")
    servers.append(Server("gdnsd", 5391, ["gdnsd", "-c", gd, "start"], work))
    pd = os.path.join(work, "pdns")
    os.makedirs(pd, exist_ok=True)
    with open(os.path.join(pd, "named.conf"), "w") as f:
        f.write(f'zone "bench.test" {{ type master; file "{pd}/bench.test.zone"; }};\n')
    with open(os.path.join(pd, "bench.test.zone"), "w") as f:
        f.write(ZONE + f"shop 30 IN LUA A \"ifurlup('http://{NAME}:{PORT}/', {{{{'{VICTIM}','{STEADY}'}}}}, {{selector='all'}})\"\n")
    with open(os.path.join(pd, "pdns.conf"), "w") as f:
        f.write(PDNS_CONF.format(dir=pd, port=5392))
    servers.append(Server("pdns", 5392, ["pdns_server", f"--config-dir={pd}"], work))
    return servers


class Poller:
    """Counts DNS-side failures across the whole run."""

    def __init__(self, servers):
        self.timeouts = {s.label: 0 for s in servers}
        self.errors = {s.label: 0 for s in servers}
        self.queries = {s.label: 0 for s in servers}

    def ask(self, s):
        self.queries[s.label] += 1
        rcode, addrs = query(s.port)
        if rcode is None:
            self.timeouts[s.label] += 1
            return None
        if rcode != 0:
            self.errors[s.label] += 1
            return None
        return addrs

    def wait(self, servers, t0, want_victim, limit=60.0):
        """Polls until each server's answer has (or lacks) the victim: seconds per server."""
        done = {}
        while len(done) < len(servers) and time.monotonic() - t0 < limit:
            for s in servers:
                if s.label in done:
                    continue
                addrs = self.ask(s)
                if addrs is not None and (VICTIM in addrs) == want_victim and STEADY in addrs:
                    done[s.label] = time.monotonic() - t0
            time.sleep(POLL)
        for s in servers:
            done.setdefault(s.label, float("inf"))
        return done


def scenario(name, servers, victim, poller, runs, break_fn, repair_fn):
    gone = {s.label: [] for s in servers}
    back = {s.label: [] for s in servers}
    for run in range(runs):
        poller.wait(servers, time.monotonic(), True)  # everyone sees the victim up
        time.sleep(random.uniform(0, 2.0))
        t0 = break_fn()
        for k, v in poller.wait(servers, t0, False).items():
            gone[k].append(v)
        time.sleep(random.uniform(0, 2.0))
        t1 = repair_fn()
        for k, v in poller.wait(servers, t1, True).items():
            back[k].append(v)
        print(f"  {name} run {run + 1}/{runs} done", file=sys.stderr)
    return gone, back


def fmt(xs):
    return " ".join("inf" if x == float("inf") else f"{x:.2f}" for x in xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gtmd", default="target/release/gtmd")
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    if not args.skip_peers:
        for tool in ("gdnsd", "pdns_server"):
            if not shutil.which(tool):
                raise SystemExit(f"{tool} not found: apt-get install gdnsd pdns-server pdns-backend-bind, or --skip-peers")
    work = tempfile.mkdtemp(prefix="gtmd-failover-")
    victim, steady = Backend(VICTIM), Backend(STEADY)
    servers = make_servers(work, os.path.abspath(args.gtmd), args.skip_peers)
    results = {}
    try:
        victim.start()
        steady.start()
        for s in servers:
            s.start()
        poller = Poller(servers)
        results["killed"] = scenario("killed", servers, victim, poller, args.runs, victim.kill, victim.start)
        results["blackholed"] = scenario("blackholed", servers, victim, poller, args.runs, victim.freeze, victim.thaw)
    finally:
        for s in servers:
            s.stop()
        victim.stop()
        steady.stop()
    print(f"\nfailover convergence, {args.runs} runs each, polled every {int(POLL * 1000)} ms (seconds)")
    print(f"{'server':<10} {'scenario':<11} {'gone med':>9} {'back med':>9}   gone samples / back samples")
    for scen, (gone, back) in results.items():
        for s in servers:
            g, b = gone[s.label], back[s.label]
            print(f"{s.label:<10} {scen:<11} {statistics.median(g):>9.2f} {statistics.median(b):>9.2f}   {fmt(g)} / {fmt(b)}")
    print("\nDNS side over the whole run:")
    for s in servers:
        print(f"  {s.label:<10} queries {poller.queries[s.label]:>6}  timeouts {poller.timeouts[s.label]}  non-NOERROR {poller.errors[s.label]}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
