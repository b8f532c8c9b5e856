#!/usr/bin/env python3
"""gtmd against Knot and gdnsd on this machine, side by side, one table.

Each server serves the same small zone (bench.test) on loopback: a static name, a
health-checked weighted GSLB name (gdnsd: DYNA weighted with http_status; gtmd: weighted
policy with HTTP probes; one address per answer) and a health-checked name answering three
addresses (gdnsd: DYNA multifo over 127.0.0.11-13 with http_status; gtmd: policy `all` over
three clusters at those addresses with HTTP probes; a local HTTP backend listens on each, as
gdnsd probes the answered address itself); gtmd also serves a geo name queried with EDNS
Client Subnet.
The server is pinned to CPU 0 (every thread, after start: Knot re-pins its workers), dnsperf
to CPU 1. Throughput runs are `dnsperf -c 4 -q 100 -l SECONDS`; the table reports qps, the
server's CPU use (user+sys from /proc over the run), qps per server CPU (the fair figure:
one dnsperf thread saturates near 350k qps here) and ratios; a fixed 10k qps run gives
p50/p99 latency (Knot on the static name, gtmd and gdnsd on the
three-address name, gtmd also on the weighted one). Medians of --runs runs. It installs nothing: it checks for knotd, gdnsd
and dnsperf (Debian packages knot, gdnsd, dnsperf) and stops everything it started.

TCP is measured twice: dnsperf over kept, pipelined connections, and one query per
connection (connect, query, reply, close: what a resolver retrying a truncated answer does)
with benches/tcp_oneshot.rs, 4 client threads on CPU 1.

Cores: gtmd and Knot each also run with two UDP workers on both CPUs (dnsperf shares
CPU 1): on this 2-core machine the meaningful figure is qps per server CPU with 2 workers
against 1 (1.00 = linear scaling), not raw qps.

Scale (unless --no-scale): gtmd with 10,000 apps x 5 clusters (benches/gen_config.py)
plus the bench zone: qps per CPU on the same weighted name as the small config (the
ratio is the "same qps with 10k apps loaded" figure), on random names across the 10,000
apps, the time `gtmd check` takes to load and build it, and RSS.

Usage: benches/compare.py [--runs 3] [--seconds 10] [--gtmd target/release/gtmd] [--quick]
                          [--no-scale]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ZONE = """$TTL 300
@ IN SOA ns1 hostmaster 1 7200 1800 259200 900
@ IN NS ns1
ns1 IN A 127.0.0.1
static IN A 192.0.2.1
"""

PORTS = {"gtmd": 5601, "knot": 5602, "gdnsd": 5603}
# The probed names' addresses: gdnsd probes the answered addresses themselves, so a
# backend listens on each.
BACKEND_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
BACKEND = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    def handle_error(self, *a): pass
S((sys.argv[1], 18090), H).serve_forever()
"""


def gtmd_config(port, admin, workers):
    return f"""
[server]
listen = ["127.0.0.1:{port}"]
udp_workers = {workers}
[admin]
listen = "127.0.0.1:{admin}"
[geo]
regions = [{{ name = "eu", networks = ["192.0.2.0/24"] }}, {{ name = "us", networks = ["198.51.100.0/24"] }}]
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
[[clusters]]
name = "a"
ingress = ["127.0.0.11"]
[[clusters]]
name = "b"
ingress = ["127.0.0.12"]
[[clusters]]
name = "c"
ingress = ["127.0.0.13"]
[[apps]]
hostname = "all.bench.test"
policy = "all"
probe = {{ kind = "http", port = 18090, interval = "5s" }}
targets = [{{ cluster = "a" }}, {{ cluster = "b" }}, {{ cluster = "c" }}]
[[apps]]
hostname = "w.bench.test"
policy = "weighted"
probe = {{ kind = "http", port = 18090, interval = "5s" }}
targets = [{{ cluster = "a", weight = 80 }}, {{ cluster = "b", weight = 20 }}]
[[apps]]
hostname = "geo.bench.test"
policy = "geo"
probe = {{ kind = "http", port = 18090, interval = "5s" }}
targets = [{{ cluster = "a" }}, {{ cluster = "b" }}]
pools = [{{ name = "eu", clusters = ["a"] }}, {{ name = "us", clusters = ["b"] }}]
rules = [{{ match = "region:eu", pools = ["eu", "us"] }}, {{ match = "default", pools = ["us", "eu"] }}]
"""


def knot_config(d, port, workers=1):
    return f"""server:
    listen: 127.0.0.1@{port}
    rundir: "{d}"
    udp-workers: {workers}
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}/db"
log:
  - target: stderr
    any: error
zone:
  - domain: bench.test
    storage: "{d}"
    file: bench.test.zone
"""


def gdnsd_config(d, port):
    return f"""options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {d}/run
  state_dir => {d}/state
  udp_threads => 1
  tcp_threads => 1
}}
service_types => {{
  web => {{ plugin => http_status, port => 18090, url_path => /, vhost => w.bench.test, interval => 5, timeout => 2 }}
}}
plugins => {{
  weighted => {{
    service_types => web
    w => {{ a => [ 127.0.0.11, 80 ], b => [ 127.0.0.12, 20 ] }}
  }}
  multifo => {{
    service_types => web
    all3 => {{ a => 127.0.0.11, b => 127.0.0.12, c => 127.0.0.13 }}
  }}
}}
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pin_all(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], stdout=subprocess.DEVNULL, check=False)


def answers(port, name):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=1", "+tries=1", name],
                         capture_output=True, text=True).stdout
    return out.split()


def dnsperf(port, qfile, seconds, extra=()):
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile,
           "-c", "4", "-q", "100", "-l", str(seconds), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    qps = lost = 0.0
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Queries per second:"):
            qps = float(line.split(":")[1])
        if line.startswith("Queries lost:"):
            lost = float(line.split(":")[1].split()[0])
    return qps, lost, out


def latency(port, qfile, seconds, extra=()):
    """p50/p99 in ms at a fixed 10k qps (dnsperf -v prints each query's latency)."""
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile,
           "-c", "4", "-Q", "10000", "-l", str(seconds), "-v", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    lat = []
    for line in out.splitlines():
        parts = line.split()
        # "> NOERROR name A 0.000123"
        if len(parts) >= 4 and parts[0] == ">":
            try:
                lat.append(float(parts[-1]) * 1000)
            except ValueError:
                pass
    if not lat:
        return float("nan"), float("nan")
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


class Server:
    def __init__(self, name, argv, port, workdir, env=None):
        self.name, self.argv, self.port, self.workdir, self.env = name, argv, port, workdir, env
        self.proc = None

    def start(self, probe_name="static.bench.test"):
        log = open(os.path.join(self.workdir, f"{self.name}.log"), "w")
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(["taskset", "-c", "0", *self.argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if answers(self.port, probe_name):
                pin_all(self.proc.pid, "0")
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not start; see {self.workdir}/{self.name}.log")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def oneshot(port, name, seconds):
    """TCP, one query per connection: (qps, errors)."""
    out = subprocess.run(["taskset", "-c", "1", ONESHOT, f"127.0.0.1:{port}", name, str(seconds), "4"],
                         capture_output=True, text=True).stdout.split()
    fields = dict(zip(out[::2], out[1::2]))
    return float(fields.get("qps", 0)), float(fields.get("errors", 0))


def measure(server, qfile, runs, seconds, extra=(), pin="0", load=None):
    """Median qps, CPU and qps per CPU over `runs` runs of dnsperf (or of `load`)."""
    pin_all(server.proc.pid, pin)
    res = []
    for _ in range(runs):
        c0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        if load:
            qps, lost = load()
        else:
            qps, lost, _ = dnsperf(server.port, qfile, seconds, extra)
        c1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
        cpu = (c1 - c0) / (t1 - t0)
        res.append((qps, cpu, lost))
    qps = statistics.median(r[0] for r in res)
    cpu = statistics.median(r[1] for r in res)
    lost = sum(r[2] for r in res)
    return {"qps": qps, "cpu": cpu, "per_cpu": qps / cpu if cpu > 0 else float("nan"),
            "lost": lost, "rss": rss_mib(server.proc.pid)}


ONESHOT = None
ALL3 = "3 addresses (all / multifo) UDP"


def build_oneshot():
    """Builds benches/tcp_oneshot.rs; returns the executable's path."""
    out = subprocess.run(["cargo", "bench", "--bench", "tcp_oneshot", "--no-run", "--message-format", "json"],
                         capture_output=True, text=True, check=True).stdout
    import json
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "tcp_oneshot" \
                and msg.get("executable"):
            return msg["executable"]
    raise SystemExit("could not build benches/tcp_oneshot.rs")


def reloads(admin):
    """gtmd_config_reloads_total{result="success"} from the admin endpoint."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('gtmd_config_reloads_total{result="success"}'):
            return float(line.split()[-1])
    return 0.0


def scale_config(work, port, admin):
    """10,000 apps x 5 clusters from gen_config.py, plus the bench zone's names."""
    big = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "gen_config.py"),
                          "--apps", "10000", "--clusters", "5", "--dns-port", str(port),
                          "--admin-port", str(admin)], capture_output=True, text=True, check=True).stdout
    bench = gtmd_config(port, admin, 1)
    path = os.path.join(work, "gtmd-10k.toml")
    with open(path, "w") as f:
        f.write(big + "\n" + bench[bench.index("[geo]"):])
    return path


def p99_rounds(servers, qfiles, rounds):
    """p50/p99 at 10k qps, the three servers running at once (all pinned to CPU 0, idle but
    for the one measured) and measured in turn, the order rotating each round: one 5 s
    sample per server is the machine's moment as much as the server, so the rounds
    interleave them and the medians compare servers measured under the same conditions."""
    loads = [("knot", "static"), ("gdnsd", "all3"), ("gtmd", "all3"), ("gtmd", "static"),
             ("gtmd", "gslb")]
    for s in servers.values():
        s.start()
    time.sleep(6)  # probes report the backends up
    for key in ("gdnsd", "gtmd"):
        if len(answers(servers[key].port, "all.bench.test")) != 3:
            raise SystemExit(f"{key}: all.bench.test does not answer 3 addresses")
    got = {l: [] for l in loads}
    for r in range(rounds):
        order = loads[r % len(loads):] + loads[:r % len(loads)]
        for key, q in order:
            got[(key, q)].append(latency(servers[key].port, qfiles[q], 5))
        line = ", ".join(f"{k} {q} {got[(k, q)][-1][1]:.3f}" for k, q in loads)
        print(f"round {r + 1}: p99 ms {line}", file=sys.stderr)
    print(f"\np50 / p99 at 10k qps (dnsperf -c 4 -Q 10000, 5 s), {rounds} interleaved rounds, "
          "median [range], ms")
    for k, q in loads:
        p50 = [x[0] for x in got[(k, q)]]
        p99 = [x[1] for x in got[(k, q)]]
        print(f"  {k:<6} {q:<7} p50 {statistics.median(p50):.3f} [{min(p50):.3f}-{max(p50):.3f}]"
              f"  p99 {statistics.median(p99):.3f} [{min(p99):.3f}-{max(p99):.3f}]")
    wins = sum(g[1] <= k[1] for g, k in zip(got[("gtmd", "all3")], got[("knot", "static")]))
    print(f"  rounds where gtmd all(3) p99 <= knot static p99: {wins} of {rounds}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--gtmd", default="target/release/gtmd")
    ap.add_argument("--quick", action="store_true", help="1 run of 3 s each (smoke test)")
    ap.add_argument("--no-scale", action="store_true", help="skip the 10,000-app rows")
    ap.add_argument("--p99-rounds", type=int, default=0,
                    help="only the 10k qps latency: N rounds, the three servers running side by "
                         "side and measured in turn (rotating order), 5 s each")
    a = ap.parse_args()
    global ONESHOT
    ONESHOT = build_oneshot()
    if a.quick:
        a.runs, a.seconds = 1, 3
    for tool in ("knotd", "gdnsd", "dnsperf", "dig", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install knot gdnsd dnsperf bind9-dnsutils")
    work = tempfile.mkdtemp(prefix="gtmd-compare-")
    qfiles = {}
    for name, lines in {
        "static": ["static.bench.test A"],
        "gslb": ["w.bench.test A"],
        "geo": ["geo.bench.test A"],
        "all3": ["all.bench.test A"],
    }.items():
        path = os.path.join(work, f"{name}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines * 100) + "\n")
        qfiles[name] = path
    ecs = ["-E", "8:00011800c00002"]  # ECS 192.0.2.0/24
    backends = [subprocess.Popen([sys.executable, "-c", BACKEND, ip]) for ip in BACKEND_IPS]
    for d in ("knot/db", "gdnsd/zones", "gdnsd/run", "gdnsd/state"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    with open(os.path.join(work, "knot/bench.test.zone"), "w") as f:
        f.write(ZONE)
    with open(os.path.join(work, "knot/knot.conf"), "w") as f:
        f.write(knot_config(os.path.join(work, "knot"), PORTS["knot"]))
    with open(os.path.join(work, "knot/knot2.conf"), "w") as f:
        f.write(knot_config(os.path.join(work, "knot"), PORTS["knot"] + 10, workers=2))
    with open(os.path.join(work, "gdnsd/zones/bench.test"), "w") as f:
        f.write(ZONE + "w 30 DYNA weighted!w\nall 30 DYNA multifo!all3\n")
    with open(os.path.join(work, "gdnsd/config"), "w") as f:
        f.write(gdnsd_config(os.path.join(work, "gdnsd"), PORTS["gdnsd"]))
    with open(os.path.join(work, "gtmd.toml"), "w") as f:
        f.write(gtmd_config(PORTS["gtmd"], 9601, 1))
    with open(os.path.join(work, "gtmd2.toml"), "w") as f:
        f.write(gtmd_config(PORTS["gtmd"] + 10, 9611, 2))
    servers = {
        "knot": Server("knot", ["knotd", "-c", os.path.join(work, "knot/knot.conf")], PORTS["knot"], work),
        "gdnsd": Server("gdnsd", ["gdnsd", "-c", os.path.join(work, "gdnsd"), "start"], PORTS["gdnsd"], work),
        "gtmd": Server("gtmd", [os.path.abspath(a.gtmd), "serve", "--config", os.path.join(work, "gtmd.toml"), "--no-watch"], PORTS["gtmd"], work, {"RUST_LOG": "warn"}),
    }
    rows = {}
    if a.p99_rounds:
        try:
            p99_rounds(servers, qfiles, a.p99_rounds)
        finally:
            for s in servers.values():
                s.stop()
            for b in backends:
                b.kill()
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        for key in ("knot", "gdnsd", "gtmd"):
            s = servers[key]
            s.start()
            time.sleep(1)
            print(f"measuring {key} ...", file=sys.stderr)
            rows[(key, "static UDP")] = measure(s, qfiles["static"], a.runs, a.seconds)
            if key in ("gdnsd", "gtmd"):
                time.sleep(6)  # probes report the backends up
                rows[(key, "GSLB weighted UDP")] = measure(s, qfiles["gslb"], a.runs, a.seconds)
                if len(answers(s.port, "all.bench.test")) != 3:
                    raise SystemExit(f"{key}: all.bench.test does not answer 3 addresses")
                rows[(key, ALL3)] = measure(s, qfiles["all3"], a.runs, a.seconds)
                rows[(key, ALL3)]["p50"], rows[(key, ALL3)]["p99"] = latency(s.port, qfiles["all3"], 5)
            if key == "gtmd":
                rows[(key, "geo + ECS UDP")] = measure(s, qfiles["geo"], a.runs, a.seconds, ecs)
                p50, p99 = latency(s.port, qfiles["gslb"], 5)
                rows[(key, "GSLB weighted UDP")]["p50"], rows[(key, "GSLB weighted UDP")]["p99"] = p50, p99
            if key in ("knot", "gtmd"):
                rows[(key, "static TCP")] = measure(s, qfiles["static"], a.runs, a.seconds, ["-m", "tcp"])
                rows[(key, "static TCP, 1 query per connection")] = measure(
                    s, None, a.runs, a.seconds, load=lambda: oneshot(s.port, "static.bench.test", a.seconds))
            if key == "knot":
                p50, p99 = latency(s.port, qfiles["static"], 5)
                rows[(key, "static UDP")]["p50"], rows[(key, "static UDP")]["p99"] = p50, p99
            s.stop()
        # Two UDP workers on both CPUs (dnsperf shares CPU 1 with them).
        two = [
            ("gtmd", Server("gtmd-2cpu", [os.path.abspath(a.gtmd), "serve", "--config", os.path.join(work, "gtmd2.toml"), "--no-watch"], PORTS["gtmd"] + 10, work, {"RUST_LOG": "warn"})),
            ("knot", Server("knot-2cpu", ["knotd", "-c", os.path.join(work, "knot/knot2.conf")], PORTS["knot"] + 10, work)),
        ]
        for key, s2 in two:
            print(f"measuring {key} with 2 workers ...", file=sys.stderr)
            s2.start()
            time.sleep(1)
            rows[(key + " 2 workers", "static UDP, 2 server CPUs shared with dnsperf")] = measure(
                s2, qfiles["static"], a.runs, a.seconds, pin="0-1")
            s2.stop()
        if not a.no_scale:
            print("measuring gtmd with 10,000 apps ...", file=sys.stderr)
            path = scale_config(work, PORTS["gtmd"] + 20, 9621)
            t0 = time.monotonic()
            subprocess.run([os.path.abspath(a.gtmd), "check", "--config", path], check=True,
                           stdout=subprocess.DEVNULL)
            check_seconds = time.monotonic() - t0
            names = os.path.join(work, "scale.txt")
            import random
            rnd = random.Random(7)
            with open(names, "w") as f:
                f.write("".join(f"app{rnd.randrange(10000)}.scale.test A\n" for _ in range(100000)))
            big = Server("gtmd-10k", [os.path.abspath(a.gtmd), "serve", "--config", path, "--no-watch"], PORTS["gtmd"] + 20, work, {"RUST_LOG": "warn"})
            big.start()
            time.sleep(6)  # probes report the backends up
            rows[("gtmd 10k apps", "GSLB weighted UDP")] = measure(big, qfiles["gslb"], a.runs, a.seconds)
            rows[("gtmd 10k apps", "random app of 10,000 UDP")] = measure(big, names, a.runs, a.seconds)
            rows[("gtmd 10k apps", "GSLB weighted UDP")]["check"] = check_seconds
            # Reloads under load: the file changes (a comment, so the whole config is
            # loaded, validated and rebuilt) and SIGHUP, twice during one dnsperf run.
            def reload_twice():
                for n in (1, 2):
                    time.sleep(a.seconds / 3)
                    with open(path, "a") as f:
                        f.write(f"\n# reload {n}\n")
                    big.proc.send_signal(signal.SIGHUP)
            before = reloads(9621)
            t = threading.Thread(target=reload_twice)
            t.start()
            qps, lost, out = dnsperf(big.port, names, a.seconds)
            t.join()
            sent = next((l.split()[2] for l in out.splitlines() if "Queries sent:" in l), "?")
            # The second reload may still be building when dnsperf ends: wait for it.
            deadline = time.monotonic() + 30
            while reloads(9621) < before + 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            rows[("gtmd 10k apps", "random app of 10,000 UDP")]["reload"] = (reloads(9621) - before, lost, sent)
            big.stop()
    finally:
        for s in servers.values():
            s.stop()
        for b in backends:
            b.kill()
    print(f"\nDNS throughput, {a.runs} x {a.seconds} s runs (median), server on CPU 0, dnsperf -c 4 -q 100 on CPU 1")
    print(f"{'server':<16} {'load':<48} {'qps':>10} {'CPU':>6} {'qps/CPU':>10} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'lost':>5}")
    for (server, load), r in rows.items():
        print(f"{server:<16} {load:<48} {r['qps']:>10,.0f} {r['cpu']:>6.2f} {r['per_cpu']:>10,.0f} "
              f"{r.get('p50', float('nan')):>7.3f} {r.get('p99', float('nan')):>7.3f} {r['rss']:>8.1f} {r['lost']:>5.0f}")
    def ratio(x, y):
        return rows[x]["per_cpu"] / rows[y]["per_cpu"]
    print("\nratios of qps per server CPU:")
    print(f"  gtmd static / knot static          {ratio(('gtmd', 'static UDP'), ('knot', 'static UDP')):.2f}")
    print(f"  gtmd GSLB / gdnsd GSLB             {ratio(('gtmd', 'GSLB weighted UDP'), ('gdnsd', 'GSLB weighted UDP')):.2f}")
    print(f"  gtmd all(3) / gdnsd multifo        {ratio(('gtmd', ALL3), ('gdnsd', ALL3)):.2f}")
    print(f"  gtmd geo+ECS / gdnsd GSLB          {ratio(('gtmd', 'geo + ECS UDP'), ('gdnsd', 'GSLB weighted UDP')):.2f}")
    print(f"  gtmd TCP / knot TCP (pipelined)    {ratio(('gtmd', 'static TCP'), ('knot', 'static TCP')):.2f}")
    print(f"  gtmd TCP / knot TCP (1 q per conn) {ratio(('gtmd', 'static TCP, 1 query per connection'), ('knot', 'static TCP, 1 query per connection')):.2f}")
    print(f"  p99 at 10k qps: gtmd all(3) {rows[('gtmd', ALL3)]['p99']:.3f} ms, gdnsd multifo "
          f"{rows[('gdnsd', ALL3)]['p99']:.3f} ms, knot static {rows[('knot', 'static UDP')]['p99']:.3f} ms")
    two = "static UDP, 2 server CPUs shared with dnsperf"
    print(f"  gtmd 2 workers / 1 worker          {ratio(('gtmd 2 workers', two), ('gtmd', 'static UDP')):.2f}   (1.00 = linear)")
    print(f"  knot 2 workers / 1 worker          {ratio(('knot 2 workers', two), ('knot', 'static UDP')):.2f}")
    print(f"  gtmd 2 workers / knot 2 workers    {ratio(('gtmd 2 workers', two), ('knot 2 workers', two)):.2f}")
    if ("gtmd 10k apps", "GSLB weighted UDP") in rows:
        r = rows[("gtmd 10k apps", "GSLB weighted UDP")]
        print(f"  gtmd 10k apps / small, same name   {ratio(('gtmd 10k apps', 'GSLB weighted UDP'), ('gtmd', 'GSLB weighted UDP')):.2f}")
        print(f"  gtmd 10k apps random / small GSLB  {ratio(('gtmd 10k apps', 'random app of 10,000 UDP'), ('gtmd', 'GSLB weighted UDP')):.2f}")
        print(f"  10k apps: gtmd check (load + build) {r['check']:.2f} s, RSS serving {r['rss']:.0f} MiB")
        applied, lost, sent = rows[("gtmd 10k apps", "random app of 10,000 UDP")]["reload"]
        print(f"  10k apps: {applied:.0f} reloads applied during one dnsperf run: {lost:.0f} of {sent} queries lost")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
