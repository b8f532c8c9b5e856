#!/usr/bin/env python3
"""Generates a large gtmd config for scale figures: N apps x C clusters.

Usage: benches/gen_config.py [--apps 10000] [--clusters 5] [--probe none|http]
                             [--probe-port 18081] [--dns-port 5394] [--admin-port 9194] > big.toml
Clusters get ingress 127.0.1.1.. (loopback), apps round-robin over the policies all,
weighted (sticky) and failover.
"""

import argparse

ap = argparse.ArgumentParser()
ap.add_argument("--apps", type=int, default=10000)
ap.add_argument("--clusters", type=int, default=5)
ap.add_argument("--probe", choices=["none", "http"], default="none")
ap.add_argument("--probe-port", type=int, default=18081)
ap.add_argument("--interval", default="5s")
ap.add_argument("--dns-port", type=int, default=5394)
ap.add_argument("--admin-port", type=int, default=9194)
ap.add_argument("--policy", choices=["mixed", "all", "weighted", "failover"], default="mixed",
                help="mixed: round-robin over all, weighted (sticky) and failover")
a = ap.parse_args()

out = [
    f'[server]\nlisten = ["127.0.0.1:{a.dns_port}"]\n',
    f'[admin]\nlisten = "127.0.0.1:{a.admin_port}"\n',
    f'[health.defaults]\nkind = "{a.probe}"\n'
    f'port = {a.probe_port}\npath = "/healthz"\ninterval = "{a.interval}"\n',
    '[[zones]]\norigin = "scale.test"\nnameservers = ["ns.outside.net"]\n'
    '[zones.soa]\nmname = "ns.outside.net"\nrname = "h.scale.test"\n'
    '[[zones.records]]\nname = "static"\ntype = "A"\nvalue = "192.0.2.1"\n',
]
for c in range(a.clusters):
    out.append(f'[[clusters]]\nname = "c{c}"\ningress = ["127.0.1.{c + 1}"]\n'
               f'lat = {10 + c * 7}\nlon = {c * 20 - 50}\n')
policies = ["all", "weighted", "failover"] if a.policy == "mixed" else [a.policy]
for i in range(a.apps):
    p = policies[i % len(policies)]
    # "mixed" keeps every setting on every app, as it always did (its figures stay
    # comparable); a single-policy config sets only what its policy reads, as an operator's would.
    def settings(c):
        s = ""
        if a.policy == "mixed" or p == "weighted":
            s += f", weight = {10 + (i + c) % 90}"
        if a.policy == "mixed" or p == "failover":
            s += f", priority = {1 + c % 2}"
        return s
    targets = ", ".join(f'{{ cluster = "c{c}"{settings(c)} }}' for c in range(a.clusters))
    extra = "sticky = true\n" if p == "weighted" else ""
    out.append(f'[[apps]]\nhostname = "app{i}.scale.test"\npolicy = "{p}"\n{extra}targets = [{targets}]\n')
print("\n".join(out))
