#!/usr/bin/env python3
"""Writes the fuzzers' seed inputs into fuzz/seeds/<target>/ (committed; rerun after
changing the test fixtures). Packet seeds are real queries for the names in
tests/common/fixtures.rs, prefixed with the 10-byte set-up header the targets read
(config choice and client, then the policy seed); config seeds are the example config
and small configs covering every section."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

ZONE_NAMES = ["app.example.test", "v4only.example.test", "mid.example.test",
              "big.example.test", "www.example.test", "example.test", "ns1.example.test",
              "a.b.c.example.test", "srv.example.test", "mail.example.test",
              "sub.example.test", "x.sub.example.test", "x.inner.example.test",
              "nope.example.test", "longtxt.example.test", "example.org"]
POLICY_NAMES = ["geo.p.test", "fenced.p.test", "near.p.test", "sticky.p.test",
                "plain.p.test", "noecs.p.test", "p.test", "nope.p.test"]
TYPES = [1, 28, 15, 16, 2, 6, 5, 33, 257, 255, 12, 43]


def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"


def query(qname, qtype, edns=None, ecs=None, flags=0x0100, do=False, before=(), after=(),
          exact=True):
    """`before`/`after`: raw additional records around the OPT; `exact=False` sends the
    ECS address bytes as given instead of cutting them to the prefix."""
    extra = len(before) + len(after)
    body = struct.pack(">HHHHHH", 0x1234, flags, 1, 0, 0, (1 if edns else 0) + extra)
    body += name(qname) + struct.pack(">HH", qtype, 1)
    body += b"".join(before)
    if edns:
        opts = b""
        if ecs:
            family, prefix, addr = ecs
            nbytes = (prefix + 7) // 8
            data = struct.pack(">HBB", family, prefix, 0) + (addr[:nbytes] if exact else addr)
            opts = struct.pack(">HH", 8, len(data)) + data
        ttl = 0x8000 if do else 0
        body += b"\0" + struct.pack(">HHIH", 41, edns, ttl, len(opts)) + opts
    return body + b"".join(after)


def tsig(key="k.example.", alg="hmac-sha256."):
    rdata = name(alg.rstrip(".")) + struct.pack(">HIH", 0, 1796144912, 300)
    rdata += struct.pack(">H", 32) + b"\x5a" * 32 + struct.pack(">HHH", 0x1234, 0, 0)
    return name(key.rstrip(".")) + struct.pack(">HHIH", 250, 255, 0, len(rdata)) + rdata


def write(target, items):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for i, data in enumerate(items):
        with open(os.path.join(d, f"seed-{i:03}"), "wb") as f:
            f.write(data)


def packets():
    out = []
    for config, names in ((0, ZONE_NAMES), (1, POLICY_NAMES)):
        for i, n in enumerate(names):
            for j, t in enumerate(TYPES[: 4 if i % 2 else 12]):
                client = (i + j) % 4
                head = bytes([config | client << 1, 7 * i + j]) + struct.pack("<Q", i * 31 + j)
                out.append(head + query(n, t))
                out.append(head + query(n, t, edns=1232))
            head = bytes([config | 2 << 1, 9]) + struct.pack("<Q", i)
            out.append(head + query(n, 1, edns=4096, ecs=(1, 24, bytes([81, 2, 69]))))
            out.append(head + query(n, 28, edns=512, ecs=(2, 48, bytes([0x20, 1, 0xd, 0xb8, 0, 1]))))
            out.append(head + query(n, 1, edns=1232, ecs=(1, 0, b"")))
    return out + compliance()


def compliance():
    """What DNS test tools check (issue 13 point 8): DO echoed, TSIG (unknown key, placed
    last or not), ECS with extra address bytes, other opcodes with CD and AD set."""
    out = []
    t = tsig()
    for config, n in ((0, "app.example.test"), (0, "ns1.example.test"), (1, "geo.p.test")):
        head = bytes([config | 3 << 1, 1]) + struct.pack("<Q", 7)
        out.append(head + query(n, 1, edns=1232, do=True))
        out.append(head + query(n, 28, edns=1232, do=True, ecs=(1, 24, bytes([10, 1, 2]))))
        out.append(head + query(n, 1, edns=1232, do=True, after=[t]))
        out.append(head + query(n, 1, after=[t]))
        out.append(head + query(n, 1, edns=1232, before=[t]))
        out.append(head + query(n, 1, after=[t, t]))
        out.append(head + query(n, 1, edns=1232, ecs=(1, 24, bytes([10, 1, 2, 0])), exact=False))
        out.append(head + query(n, 1, edns=1232, ecs=(1, 0, bytes([0])), exact=False))
        for opcode in (1, 2, 4, 5, 15):
            out.append(head + query(n, 1, edns=1232, do=True, flags=opcode << 11 | 0x0130))
    return out


def configs():
    with open(os.path.join(HERE, "..", "config", "gtmd.toml"), "rb") as f:
        example = f.read()
    small = b"""[server]
listen = ["127.0.0.1:5300"]
[rrl]
enabled = true
exempt = ["10.0.0.0/8"]
[geo]
regions = [{ name = "eu", networks = ["192.0.2.0/24", "2001:db8::/32"] }]
[[zones]]
origin = "t.test"
nameservers = ["ns.t.test"]
[zones.soa]
mname = "ns.t.test"
rname = "h.t.test"
[[zones.records]]
name = "ns"
type = "A"
value = "192.0.2.1"
[[zones.records]]
name = "sub"
type = "NS"
value = "ns.elsewhere.net."
[[clusters]]
name = "a"
ingress = ["192.0.2.10", "2001:db8::10"]
app_probe = { kind = "tcp", port = 443, interval = "1s" }
[[clusters]]
name = "b"
ingress = ["192.0.2.20"]
drain = true
[[apps]]
hostname = "w.t.test"
policy = "weighted"
sticky = true
targets = [{ cluster = "a", weight = 3 }, { cluster = "b", weight = 1 }]
[[apps]]
hostname = "g.t.test"
policy = "geo"
targets = [{ cluster = "a" }, { cluster = "b" }]
pools = [{ name = "eu", clusters = ["a"] }, { name = "us", clusters = ["b"] }]
rules = [{ match = "region:eu", pools = ["eu"] }, { match = "default", pools = ["us"] }]
[[apps]]
hostname = "f.t.test"
policy = "failover"
targets = [{ cluster = "a", priority = 1 }, { cluster = "b", priority = 2 }]
probe = { kind = "http", path = "/healthz", expect_status = [200], rise = 2, fall = 2 }
"""
    return [example, small, small + b"\0SERVER__MAX_UDP_PAYLOAD=1400\nRRL__SLIP=3\n",
            b"[server]\nlisten = \"x\"\n", b"[[apps]]\nhostname = 1\n"]


if __name__ == "__main__":
    write("packet", packets())
    write("differential", packets())
    write("config", configs())
    print("seeds written to", os.path.join(HERE, "seeds"))
