#!/usr/bin/env python3
"""A fleet of three gtmd instances at scale: 10,000 apps x 5 clusters, HTTP probes.

The config of benches/outage.py (policy all, an HTTP probe on every app x cluster, interval
5 s, gtmd's defaults otherwise; one nginx per cluster address 127.0.1.1-5) with a `[fleet]`
(gossip every second, a shared key) is served by three instances a, b, c on loopback
(DNS 5821-5823, admin 9821-9823, gossip 7951-7953). With --probes-per-target K (default
1) each target is probed by K of the three; 0 leaves it out (every instance probes every
target: three times the probes, which saturates this 2-core machine).

Per run it prints:
  join      how long c takes from its start to answering DNS and to /readyz (a and b up)
  at rest   per instance, over --rest-seconds from --settle-seconds after c is ready:
            gossip bytes sent per second, the fleet's
            own work (gtmd_fleet_work_seconds_total, as a share of one core) and the
            process's CPU (user+sys per wall second)
  outage    cluster 127.0.1.1's nginx is SIGKILLed; all 10,000 names are polled on the
            three instances every --period s; per name, the time from the kill until all
            three answer without it for good (the slowest of the three): first, median,
            p99, last; gossip bytes per second per instance while it is applied. The outage
            lasts until every name has been without it for longer than flap_window (60 s)
  recovery  a new nginx: the same until all three answer it again
and at the end the median [range] of each figure over --runs whole runs.

Usage: benches/fleet_scale.py [--runs 3] [--apps 10000] [--probes-per-target 1]
Needs: nginx (Debian nginx-light); a release build (cargo build --release).
"""

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outage  # noqa: E402  (the outage benchmark's backends, configs, poller)

NODES = ["a", "b", "c"]
DNS = {n: 5821 + i for i, n in enumerate(NODES)}
ADMIN = {n: 9821 + i for i, n in enumerate(NODES)}
GOSSIP = {n: 7951 + i for i, n in enumerate(NODES)}
# The parts of gtmd_fleet_work_seconds_total.
WORK_PARTS = ["transport", "sweep", "publish", "read"]


def get(node, path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[node]}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def gauges(node, pid=None):
    """One scrape of /metrics (and the process's CPU seconds when `pid` is given), and
    when it was taken: every rate is the difference of two scrapes of the same node over
    the time between them. (A scrape of 10,000 apps' metrics takes a good part of a
    second; rates over a common span of all three nodes' scrapes came out ~15 % high.)"""
    t = time.monotonic()
    _, text = get(node, "/metrics")
    cpu = outage.cpu_seconds(pid) if pid else 0.0
    t = (t + time.monotonic()) / 2
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return {
        "t": t,
        "cpu": cpu,
        # Probes run so far: every cluster's probe duration histogram count.
        "probes": sum(v for k, v in values.items()
                      if k.startswith("gtmd_probe_duration_seconds_count")),
        "sent": values.get('gtmd_fleet_gossip_bytes_total{direction="sent"}', 0.0),
        # Gossip datagrams dropped, every reason.
        "rejected": sum(v for k, v in values.items()
                        if k.startswith("gtmd_fleet_packets_rejected_total{")),
        # The fleet's own work, every part.
        "work": sum(v for k, v in values.items()
                    if k.startswith("gtmd_fleet_work_seconds_total{")),
        **{f"work_{part}": values.get(f'gtmd_fleet_work_seconds_total{{part="{part}"}}', 0.0)
           for part in WORK_PARTS},
    }


def rate(after, before, key):
    """Per second, between two scrapes of one node."""
    return (after[key] - before[key]) / (after["t"] - before["t"])


def write_config(path, args, key):
    outage.write_gtmd_config(path, args.apps, 5, 0)
    k = f"probes_per_target = {args.probes_per_target}\n" if args.probes_per_target else ""
    with open(path, "a") as f:
        f.write(f'\n[fleet]\nnode = "a"\nlisten = "127.0.0.1:{GOSSIP["a"]}"\n'
                f'secret_file = "{key}"\n{k}')


def start(gtmd, config, node, log_path):
    env = dict(os.environ, RUST_LOG=os.environ.get("GTMD_BENCH_LOG", "info"),
               GTMD__SERVER__LISTEN=f"127.0.0.1:{DNS[node]}",
               GTMD__ADMIN__LISTEN=f"127.0.0.1:{ADMIN[node]}",
               GTMD__FLEET__NODE=node,
               GTMD__FLEET__LISTEN=f"127.0.0.1:{GOSSIP[node]}")
    if node != "a":
        env["GTMD__FLEET__PEERS"] = f"127.0.0.1:{GOSSIP['a']},127.0.0.1:{GOSSIP['b']}"
    log = open(log_path, "w")
    return outage.spawn([gtmd, "serve", "--config", config, "--no-watch"],
                        stderr=log, stdout=log, env=env)


def until_ready(node, proc, log_path, limit=180):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gtmd {node} exited:\n{outage.tail(log_path)}")
        try:
            if get(node, "/readyz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"gtmd {node} not ready after {limit} s:\n{outage.tail(log_path)}")


def first_answer(node, proc, log_path, limit=180):
    probe = outage.Server(f"{node}-start", DNS[node], [f"app0.{outage.ZONE}"], "127.0.1.1")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gtmd {node} exited:\n{outage.tail(log_path)}")
        probe.begin_round(0)
        probe.send(0, 1, 0)
        time.sleep(0.01)
        probe.drain()
        if probe.got[0]:
            probe.sock.close()
            return
    raise SystemExit(f"gtmd {node} did not answer within {limit} s")


def agreed_times(servers, want_victim, t0, first=False):
    """Per name: seconds from t0 until the last of the servers took its final streak (the
    first of them with first=True: the detection, before the fleet's agreement)."""
    out, never = [], 0
    pick = min if first else max
    for i in range(servers[0].n):
        if all(s.streak[i] is want_victim for s in servers):
            out.append(pick(s.since[i] for s in servers) - t0)
        else:
            never += 1
    return out, never


def until_settled(poller, servers, want_victim, limit):
    deadline = time.monotonic() + limit
    for s in servers:
        s.start_phase()
    while time.monotonic() < deadline:
        poller.round()
        if all(s.settled(want_victim, time.monotonic(), 0) for s in servers):
            return True
    return False


def one_run(run, args, nginx, work):
    key = os.path.join(work, "key")
    with open(key, "w") as f:
        f.write(os.urandom(24).hex())
    config = os.path.join(work, "gtmd.toml")
    write_config(config, args, key)
    ips = outage.cluster_ips(5)
    names = outage.app_names(args.apps)
    backends = [outage.Backend(nginx, ip, work) for ip in ips]
    procs = {}
    result = {}
    try:
        for b in backends:
            b.start()
        for node in ["a", "b"]:
            log = os.path.join(work, f"gtmd-{node}-{run}.log")
            procs[node] = start(args.gtmd, config, node, log)
            until_ready(node, procs[node], log)
        log_c = os.path.join(work, f"gtmd-c-{run}.log")
        t0 = time.monotonic()
        procs["c"] = start(args.gtmd, config, "c", log_c)
        first_answer("c", procs["c"], log_c)
        result["join_answer"] = time.monotonic() - t0
        until_ready("c", procs["c"], log_c)
        result["join_ready"] = time.monotonic() - t0

        os.sched_setaffinity(0, {args.poller_cpu})
        servers = [outage.Server(n, DNS[n], names, ips[outage.VICTIM]) for n in NODES]
        poller = outage.Poller(servers, args.period, args.query_timeout, args.window)
        outage.warm_up(poller, limit=300)

        # At rest (no polling): gossip bytes, the fleet's own work, the process CPU, once c's
        # own first observations (its probes' first results, spread over an interval) are
        # shared and nothing changes any more.
        time.sleep(max(0.0, t0 + result["join_ready"] + args.settle_seconds - time.monotonic()))
        before = {n: gauges(n, procs[n].pid) for n in NODES}
        time.sleep(args.rest_seconds)
        for n in NODES:
            g = gauges(n, procs[n].pid)
            result[f"rest_bytes_{n}"] = rate(g, before[n], "sent")
            result[f"rest_work_{n}"] = 100 * rate(g, before[n], "work")
            result[f"rest_parts_{n}"] = {p: 100 * rate(g, before[n], f"work_{p}") for p in WORK_PARTS}
            result[f"rest_cpu_{n}"] = 100 * rate(g, before[n], "cpu")
            result[f"rest_probes_{n}"] = rate(g, before[n], "probes")
        outage.warm_up(poller, limit=120)

        # The outage.
        before = {n: gauges(n) for n in NODES}
        for s in servers:
            s.start_phase()
        backends[outage.VICTIM].kill()
        t_kill = time.monotonic()
        settled = until_settled(poller, servers, False, args.limit)
        done, never = agreed_times(servers, False, t_kill)
        result["out"] = outage.distribution(done, never)
        result["out_first"] = outage.distribution(*agreed_times(servers, False, t_kill, True))
        for n in NODES:
            g = gauges(n)
            result[f"out_bytes_{n}"] = rate(g, before[n], "sent")
            result[f"out_work_{n}"] = 100 * rate(g, before[n], "work")
            result[f"out_rejected_{n}"] = g["rejected"] - before[n]["rejected"]
        if not settled:
            print(f"  run {run}: not every name agreed without the victim within {args.limit} s",
                  file=sys.stderr)
        # Held until every name has been without it for longer than flap_window: a shorter
        # outage would measure the flap hold on the way back, not the recovery.
        last_drop = t_kill + (result["out"]["last"] if done else 0)
        poller.rounds_until(max(t_kill + args.outage_seconds, last_drop + outage.FLAP_WINDOW + 1))

        # The recovery.
        before = {n: gauges(n) for n in NODES}
        backends[outage.VICTIM].start()
        t_back = time.monotonic()
        until_settled(poller, servers, True, args.limit)
        done, never = agreed_times(servers, True, t_back)
        result["back"] = outage.distribution(done, never)
        for n in NODES:
            g = gauges(n)
            result[f"back_bytes_{n}"] = rate(g, before[n], "sent")
        for s in servers:
            s.sock.close()
        result["rss_c"] = outage.rss_mib(procs["c"].pid)
    finally:
        for p in procs.values():
            outage.stop(p)
        for b in backends:
            try:
                b.stop()
            except Exception:
                pass
    return result


def dist(d):
    return (f"first {d['first']:.2f}  median {d['median']:.2f}  p99 {d['p99']:.2f}  "
            f"last {d['last']:.2f}  never {d['never']}")


def print_run(run, r):
    print(f"run {run}:")
    print(f"  join: c answers DNS after {r['join_answer']:.2f} s, ready after {r['join_ready']:.2f} s")
    for n in NODES:
        print(f"  at rest, {n}: gossip {r[f'rest_bytes_{n}']:.0f} B/s sent, fleet work "
              f"{r[f'rest_work_{n}']:.2f} % of a core, process CPU {r[f'rest_cpu_{n}']:.1f} %, "
              f"{r[f'rest_probes_{n}']:.0f} probes/s")
        parts = r[f"rest_parts_{n}"]
        print("    fleet work by part (% of a core): "
              + ", ".join(f"{p} {parts[p]:.2f}" for p in WORK_PARTS))
    print(f"  outage, all three without the victim (s from the kill): {dist(r['out'])}")
    print(f"    (the first of the three without it: {dist(r['out_first'])})")
    for n in NODES:
        print(f"    {n}: gossip {r[f'out_bytes_{n}']:.0f} B/s sent, fleet work "
              f"{r[f'out_work_{n}']:.2f} % of a core, "
              f"{r[f'out_rejected_{n}']:.0f} gossip datagrams rejected")
    print(f"  recovery, all three with it again (s from the restart): {dist(r['back'])}")
    print(f"  c's RSS at the end: {r['rss_c']:.0f} MiB")
    sys.stdout.flush()


def median_range(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def summary(results):
    print(f"\nmedian [range] over {len(results)} runs:")
    rows = [
        ("join: c answers DNS (s)", [r["join_answer"] for r in results]),
        ("join: c ready (s)", [r["join_ready"] for r in results]),
        ("at rest: gossip sent, max of the three (B/s)",
         [max(r[f"rest_bytes_{n}"] for n in NODES) for r in results]),
        ("at rest: fleet work, max of the three (% of a core)",
         [max(r[f"rest_work_{n}"] for n in NODES) for r in results]),
        ("at rest: process CPU, max of the three (%)",
         [max(r[f"rest_cpu_{n}"] for n in NODES) for r in results]),
        ("outage: all three without it, median name (s)", [r["out"]["median"] for r in results]),
        ("outage: the first of the three without it, last name (s)",
         [r["out_first"]["last"] for r in results]),
        ("outage: all three without it, last name (s)", [r["out"]["last"] for r in results]),
        ("outage: gossip sent, max of the three (B/s)",
         [max(r[f"out_bytes_{n}"] for n in NODES) for r in results]),
        ("outage: fleet work, max of the three (% of a core)",
         [max(r[f"out_work_{n}"] for n in NODES) for r in results]),
        ("recovery: all three with it, last name (s)", [r["back"]["last"] for r in results]),
    ]
    for label, xs in rows:
        print(f"  {label}: {median_range(xs)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--apps", type=int, default=10000)
    ap.add_argument("--probes-per-target", type=int, default=1)
    ap.add_argument("--rest-seconds", type=float, default=30)
    ap.add_argument("--settle-seconds", type=float, default=20,
                    help="the rest window starts this long after c is ready")
    ap.add_argument("--limit", type=float, default=120, help="longest wait for an outage or recovery")
    ap.add_argument("--outage-seconds", type=float, default=65,
                    help="the shortest outage (at least flap_window + 1 s after the last name left)")
    ap.add_argument("--period", type=float, default=0.5)
    ap.add_argument("--query-timeout", type=float, default=1.0)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--poller-cpu", type=int, default=max(os.sched_getaffinity(0)))
    ap.add_argument("--gtmd", default="target/release/gtmd")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("needs nginx (apt-get install nginx-light)")
    print(f"fleet of 3, {args.apps} apps x 5 clusters, probes_per_target "
          f"{args.probes_per_target or 'all'}; bound: detection {outage.gtmd_bounds('refused')[0]:.1f} s + 1 s")
    results = []
    for run in range(1, args.runs + 1):
        work = tempfile.mkdtemp(prefix="gtmd-fleet-")
        try:
            r = one_run(run, args, nginx, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"  kept {work}", file=sys.stderr)
        print_run(run, r)
        results.append(r)
    summary(results)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
