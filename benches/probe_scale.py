#!/usr/bin/env python3
"""Probe engine scale: 20,000 HTTP probes per 5 s interval against local nginx backends.

Generates a config of N apps x 5 clusters (default 4,000 x 5 = 20,000 app probes, interval
5s), serves the five cluster ingress addresses (127.0.1.1-5) from one nginx (2 workers, no access log,
stub_status on 127.0.0.1:18089 counting requests) answering 200
to everything, starts `gtmd serve` on it and, once the first probe round is complete,
samples gtmd's CPU (user+sys seconds per second of wall time, from /proc) and RSS for the
measurement window. Also checks that every sampled app answers all five clusters (so the
probes really succeed) and counts the requests nginx served during the window.

Usage: benches/probe_scale.py [--apps 4000] [--seconds 30] [--gtmd target/release/gtmd]
                              [--port 18081] [--dns-port 5394]
Prints gtmd's CPU per probe too: on a shared machine the backends may not keep up with
the full rate, and CPU per probe times the configured rate is then the fairer figure.
Needs: nginx (Debian nginx-light or nginx).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

CLUSTERS = [f"127.0.1.{i}" for i in range(1, 6)]
PORT = 18081
STATUS_PORT = 18089
DNS_PORT = 5394

NGINX_CONF = """
worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  fastcgi_temp_path {dir};
  uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  server {{
    {listen}
    location / {{ return 200 "ok"; }}
  }}
  server {{
    listen 127.0.0.1:{status_port};
    location / {{ stub_status; }}
  }}
}}
"""


def query_a(name, port):
    q = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, ("127.0.0.1", port))
    data, _ = s.recvfrom(4096)
    s.close()
    return struct.unpack(">H", data[6:8])[0]


def served(port=STATUS_PORT):
    """Requests nginx has served (stub_status), the probes' own included."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.split(b"\r\n\r\n", 1)[1].split(b"\n")[2].split()[2])


def time_wait():
    """TCP sockets in TIME_WAIT on this machine (from /proc/net/tcp, state 06)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                n += sum(1 for line in f if line.split()[3:4] == ["06"])
        except OSError:
            pass
    return n


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--gtmd", default="target/release/gtmd")
    ap.add_argument("--dns-port", type=int, default=DNS_PORT)
    ap.add_argument("--port", type=int, default=PORT, help="backend port (another port if one is busy)")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx not found: apt-get install nginx-light")
    work = tempfile.mkdtemp(prefix="gtmd-scale-")
    listen = "\n    ".join(f"listen {ip}:{args.port} backlog=4096;" for ip in CLUSTERS)
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(dir=work, listen=listen, status_port=STATUS_PORT))
    lines = [
        f'[server]\nlisten = ["127.0.0.1:{args.dns_port}"]\n',
        f'[health]\nmax_concurrent_probes = 1024\n[health.defaults]\nkind = "http"\nport = {args.port}\n'
        'path = "/healthz"\ninterval = "5s"\ntimeout = "2s"\n',
        '[[zones]]\norigin = "scale.test"\nnameservers = ["ns.outside.net"]\n'
        '[zones.soa]\nmname = "ns.outside.net"\nrname = "h.scale.test"\n',
    ]
    for i, ip in enumerate(CLUSTERS):
        lines.append(f'[[clusters]]\nname = "c{i}"\ningress = ["{ip}"]\n')
    targets = ", ".join(f'{{ cluster = "c{i}" }}' for i in range(len(CLUSTERS)))
    for a in range(args.apps):
        lines.append(f'[[apps]]\nhostname = "app{a}.scale.test"\ntargets = [{targets}]\n')
    with open(f"{work}/gtmd.toml", "w") as f:
        f.write("\n".join(lines))
    probes = args.apps * len(CLUSTERS)
    ng = subprocess.Popen([nginx, "-c", f"{work}/nginx.conf"], stderr=subprocess.DEVNULL)
    log = open(f"{work}/gtmd.log", "w")
    env = dict(os.environ, RUST_LOG="info")
    gt = None
    try:
        time.sleep(0.5)
        t_start = time.monotonic()
        gt = subprocess.Popen([args.gtmd, "serve", "--config", f"{work}/gtmd.toml"], stderr=log, env=env)
        deadline = time.monotonic() + 60
        while True:
            with open(f"{work}/gtmd.log") as f:
                text = f.read()
            if "first probe round complete" in text:
                break
            if time.monotonic() > deadline or gt.poll() is not None:
                raise SystemExit(f"no first probe round; see {work}/gtmd.log")
            time.sleep(0.2)
        first_round = time.monotonic() - t_start
        served0 = served()
        c0, w0 = cpu_seconds(gt.pid), time.monotonic()
        peak = 0
        while time.monotonic() - w0 < args.seconds:
            time.sleep(1)
            peak = max(peak, rss_kib(gt.pid))
        c1, w1 = cpu_seconds(gt.pid), time.monotonic()
        served1 = served()
        sampled = [0, args.apps // 2, args.apps - 1]
        answers = {a: query_a(f"app{a}.scale.test", args.dns_port) for a in sampled}
        transitions = len(re.findall("health transition", open(f"{work}/gtmd.log").read()))
        cpu = (c1 - c0) / (w1 - w0)
        rate = (served1 - served0) / (w1 - w0)
        print(f"probe engine scale: {args.apps} apps x {len(CLUSTERS)} clusters = {probes} probes, interval 5s")
        print(f"  first probe round complete after   {first_round:.1f} s")
        print(f"  probes served by nginx             {rate:,.0f} /s (expected {probes / 5:,.0f} /s)")
        print(f"  gtmd CPU (user+sys per wall second) {cpu * 100:.1f} % of one core over {w1 - w0:.0f} s")
        print(f"  gtmd CPU per probe                 {cpu / max(rate, 1) * 1e6:.1f} us ({cpu / max(rate, 1) * probes / 5 * 100:.1f} % of a core at {probes / 5:,.0f} probes/s)")
        print(f"  TIME_WAIT sockets                  {time_wait()}")
        print(f"  gtmd RSS                           {rss_kib(gt.pid) / 1024:.1f} MiB now, {peak / 1024:.1f} MiB peak sampled, VmHWM {rss_kib(gt.pid, 'VmHWM') / 1024:.1f} MiB")
        print(f"  health transitions logged          {transitions} (0 expected: every backend is up)")
        print(f"  A answers for apps {sampled}: {[answers[a] for a in sampled]} (5 expected each)")
    finally:
        if gt and gt.poll() is None:
            gt.send_signal(signal.SIGTERM)
            gt.wait(30)
        ng.send_signal(signal.SIGQUIT)
        try:
            ng.wait(10)
        except subprocess.TimeoutExpired:
            ng.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
