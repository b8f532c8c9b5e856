#!/usr/bin/env python3
"""Two gtmd binaries, alternately, on compare.py's UDP loads: did a change slow the fast path?

Each round starts each binary fresh (server pinned to CPU 0, dnsperf on CPU 1, the same
config, probe backends and query files as benches/compare.py) and measures qps per server
CPU for 10 s (--seconds) per load; the rounds alternate binaries so both see the same moment of a
noisy machine. Prints every sample and after / before medians with their ranges.

Usage: benches/ab_udp.py BEFORE_BINARY AFTER_BINARY [--rounds 3] [--seconds 10]
                        [--loads static,gslb,geo,all3]
Needs what compare.py needs (dnsperf, taskset). Stops everything it started.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("compare", os.path.join(here, "compare.py"))
c = importlib.util.module_from_spec(spec)
spec.loader.exec_module(c)

ap = argparse.ArgumentParser()
ap.add_argument("before")
ap.add_argument("after")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--seconds", type=int, default=10)
ap.add_argument("--loads", default="static,gslb,geo,all3")
a = ap.parse_args()
loads = a.loads.split(",")
bins = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
work = tempfile.mkdtemp(prefix="gtmd-ab-")
queries = {}
for name, line in {"static": "static.bench.test A", "gslb": "w.bench.test A", "geo": "geo.bench.test A",
                    "all3": "all.bench.test A"}.items():
    path = os.path.join(work, f"{name}.txt")
    with open(path, "w") as f:
        f.write((line + "\n") * 100)
    queries[name] = path
extra = {"static": (), "gslb": (), "all3": (), "geo": ["-E", "8:00011800c00002"]}  # ECS 192.0.2.0/24
with open(os.path.join(work, "gtmd.toml"), "w") as f:
    f.write(c.gtmd_config(c.PORTS["gtmd"], 9601, 1))
backends = [subprocess.Popen([sys.executable, "-c", c.BACKEND, ip]) for ip in c.BACKEND_IPS]
res = {}
try:
    for r in range(a.rounds):
        for label, binary in bins.items():
            s = c.Server(f"gtmd-{label}", [binary, "serve", "--config", os.path.join(work, "gtmd.toml"), "--no-watch"],
                         c.PORTS["gtmd"], work, {"RUST_LOG": "warn"})
            s.start()
            time.sleep(6 if loads != ["static"] else 1)  # probes report the backends up
            if "all3" in loads and len(c.answers(s.port, "all.bench.test")) != 3:
                raise SystemExit(f"{label}: all.bench.test does not answer 3 addresses")
            for load in loads:
                m = c.measure(s, queries[load], 1, a.seconds, extra[load])
                res.setdefault((label, load), []).append(m["per_cpu"])
                print(f"round {r + 1} {label:6} {load:6} {m['per_cpu']:10,.0f} qps/CPU, lost {m['lost']:.0f}", flush=True)
            s.stop()
finally:
    for b in backends:
        b.kill()
for load in loads:
    after, before = res[("after", load)], res[("before", load)]
    print(f"{load:6} after/before {statistics.median(after) / statistics.median(before):.3f}  "
          f"after {min(after):,.0f}-{max(after):,.0f}  before {min(before):,.0f}-{max(before):,.0f}")
