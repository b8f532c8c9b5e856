#!/usr/bin/env python3
"""Two gtmd instances in a fleet on loopback: how long the second takes to be seen live, the
gossip bytes an instance sends at rest, and how long until a killed peer is seen dead; at
gossip_interval 100ms and 1s. Prints the median of --runs whole runs with the range.

Usage: benches/fleet_basics.py [--runs 3] [--gtmd target/debug/gtmd]
Uses the example config (config/gtmd.toml) with a [fleet] section, a fresh key in a temporary
directory, ports on 127.0.0.1 chosen by the kernel. Every wait is bounded (60 s); the
instances are stopped by PID at the end of each run.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WAIT = 60.0


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/fleet", timeout=2) as r:
            return json.load(r)
    except OSError:
        return None


def sent_bytes(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('gtmd_fleet_gossip_bytes_total{direction="sent"}'):
                return float(line.split()[-1])
    raise SystemExit("no gtmd_fleet_gossip_bytes_total in /metrics")


def until(what, cond):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > WAIT:
            raise SystemExit(f"timed out after {WAIT:g} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def start(args, work, node, gossip, peers, interval):
    config = os.path.join(work, f"{node}.toml")
    with open(os.path.join(ROOT, "config", "gtmd.toml")) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(f'{text}\n[fleet]\nsecret_file = "{work}/key"\ngossip_interval = "{interval}"\n')
    admin = free_port(socket.SOCK_STREAM)
    env = dict(os.environ,
               GTMD__SERVER__LISTEN=f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
               GTMD__ADMIN__LISTEN=f"127.0.0.1:{admin}",
               GTMD__FLEET__NODE=node, GTMD__FLEET__LISTEN=f"127.0.0.1:{gossip}")
    if peers:
        env["GTMD__FLEET__PEERS"] = peers
    proc = subprocess.Popen([args.gtmd, "serve", "--config", config, "--no-watch"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, admin


def one_run(args, interval):
    with tempfile.TemporaryDirectory(prefix="gtmd-fleet-") as work:
        with open(os.path.join(work, "key"), "w") as f:
            f.write(secrets.token_urlsafe(32))
        procs = []
        try:
            ga, gb = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
            a, admin_a = start(args, work, "a", ga, None, interval)
            procs.append(a)
            until("a's admin endpoint", lambda: fleet(admin_a) is not None)
            b, _ = start(args, work, "b", gb, f"127.0.0.1:{ga}", interval)
            procs.append(b)
            joined = until("b seen live by a", lambda: (fleet(admin_a) or {}).get("live_peers") == 1)
            time.sleep(5)  # settle: the join's catch-up is not "at rest"
            s0, t0 = sent_bytes(admin_a), time.monotonic()
            time.sleep(10)
            rate = (sent_bytes(admin_a) - s0) / (time.monotonic() - t0)
            b.send_signal(signal.SIGKILL)
            b.wait(10)
            dead = until("b seen dead by a", lambda: (fleet(admin_a) or {}).get("live_peers") == 0)
            return joined, rate, dead
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gtmd", default=os.path.join(ROOT, "target", "debug", "gtmd"))
    args = ap.parse_args()
    for interval in ["100ms", "1s"]:
        runs = [one_run(args, interval) for _ in range(args.runs)]
        cols = list(zip(*runs))

        def fmt(values, unit, digits):
            return (f"{statistics.median(values):.{digits}f} {unit} "
                    f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")
        print(f"gossip_interval {interval}, {args.runs} runs: seen live after {fmt(cols[0], 's', 2)}; "
              f"sent at rest {fmt(cols[1], 'B/s', 0)}; a killed peer seen dead after {fmt(cols[2], 's', 2)}",
              flush=True)


if __name__ == "__main__":
    main()
