#!/usr/bin/env python3
"""Writes tests/data/geo-test.mmdb: a tiny GeoIP2-City-shaped MaxMind database for gtmd's
tests. The data is made up by the gtmd authors (documentation and benchmark address ranges,
approximate city coordinates) and is under the same license as gtmd; nothing here comes
from MaxMind's databases.

Regenerate with:  pip install mmdb-writer && python3 tests/data/make_geo_mmdb.py
(the tests only read the committed file; nothing is downloaded at test time).
"""

import os

from mmdb_writer import MMDBWriter
from netaddr import IPSet

ENTRIES = [
    # network, country, continent, (lat, lon)
    ("192.0.2.0/24", "DE", "EU", (50.11, 8.68)),  # Frankfurt
    ("198.51.100.0/24", "US", "NA", (38.9, -77.04)),  # Washington
    ("203.0.113.0/24", "JP", "AS", (35.68, 139.69)),  # Tokyo
    ("198.18.0.0/16", "FR", "EU", (48.86, 2.35)),  # Paris
    ("198.18.7.0/24", "US", "NA", (37.77, -122.42)),  # San Francisco, inside the /16
    ("100.64.0.0/10", "BR", "SA", None),  # country only, no coordinates
    ("2001:db8:e00::/40", "DE", "EU", (50.11, 8.68)),
    ("2001:db8:a00::/40", "US", "NA", (38.9, -77.04)),
]


def main():
    w = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True,
                   description={"en": "gtmd test data"})
    for net, country, continent, coords in ENTRIES:
        record = {
            "country": {"iso_code": country},
            "continent": {"code": continent},
        }
        if coords:
            record["location"] = {"latitude": coords[0], "longitude": coords[1]}
        w.insert_network(IPSet([net]), record)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "geo-test.mmdb")
    w.to_db_file(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
