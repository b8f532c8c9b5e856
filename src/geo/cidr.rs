//! CIDR → value tables with longest-prefix match and an exact ECS scope.
//!
//! The prefixes are flattened once, at build time, into disjoint address intervals (a more
//! specific prefix cuts a hole in a less specific one; gaps hold "no match"). A lookup is a
//! binary search for the interval holding the address. That interval also gives the exact
//! EDNS Client Subnet scope: the shortest prefix around the address that lies wholly inside
//! the interval, i.e. the widest network for which the answer is certainly the same. Using
//! the matched entry's own length instead would be wrong whenever it has more specific
//! entries inside it (a resolver would cache the answer for those too).

use std::net::IpAddr;

use ipnet::IpNet;

/// Disjoint intervals of one address family: `(start, end, value index)`, sorted.
#[derive(Debug, Clone)]
struct Intervals {
    spans: Vec<(u128, u128, Option<usize>)>,
}

impl Intervals {
    /// Sweeps the prefixes in address order with a stack of the ones still open: CIDR
    /// prefixes either nest or are disjoint, so this yields the disjoint intervals in
    /// O(n log n).
    fn build(mut prefixes: Vec<(u128, u8, usize)>, bits: u8) -> Self {
        let max = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let end_of = |start: u128, len: u8| {
            let host = if len == 0 { max } else { (max >> len) & max };
            start | host
        };
        // Outer prefixes first at the same start; a stable sort keeps later duplicates later.
        prefixes.sort_by_key(|&(start, len, _)| (start, len));
        let mut spans: Vec<(u128, u128, Option<usize>)> =
            Vec::with_capacity(prefixes.len() * 2 + 1);
        // Open prefixes: (start, end, value).
        let mut stack: Vec<(u128, u128, usize)> = Vec::new();
        // The first address not yet covered by an emitted span; None once past `max`.
        let mut cursor: Option<u128> = Some(0);
        let emit = |spans: &mut Vec<_>, cursor: &mut Option<u128>, upto: u128, v| {
            if let Some(c) = *cursor
                && c <= upto
            {
                spans.push((c, upto, v));
                *cursor = upto.checked_add(1);
            }
        };
        for (start, len, value) in prefixes {
            let end = end_of(start, len);
            while let Some(&(_, top_end, top_value)) = stack.last() {
                if top_end >= start {
                    break;
                }
                emit(&mut spans, &mut cursor, top_end, Some(top_value));
                stack.pop();
            }
            if start > 0 {
                let outer = stack.last().map(|&(_, _, v)| v);
                emit(&mut spans, &mut cursor, start - 1, outer);
            }
            match stack.last_mut() {
                Some(top) if top.0 == start && top.1 == end => top.2 = value,
                _ => stack.push((start, end, value)),
            }
        }
        while let Some((_, top_end, top_value)) = stack.pop() {
            emit(&mut spans, &mut cursor, top_end, Some(top_value));
        }
        emit(&mut spans, &mut cursor, max, None);
        Self { spans }
    }

    /// The interval holding `x`.
    fn find(&self, x: u128) -> (u128, u128, Option<usize>) {
        let i = self.spans.partition_point(|&(s, _, _)| s <= x) - 1;
        self.spans[i]
    }
}

/// The shortest prefix length `l` (0..=bits) such that the `l`-bit network around `x` lies
/// inside `[start, end]`.
fn scope(x: u128, start: u128, end: u128, bits: u8) -> u8 {
    let max = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    for len in 0..=bits {
        let host = if len == 0 { max } else { (max >> len) & max };
        let net = x & !host & max;
        if net >= start && (net | host) <= end {
            return len;
        }
    }
    bits
}

/// A longest-prefix-match table from networks to values.
#[derive(Debug, Clone)]
pub struct PrefixTable<V> {
    values: Vec<V>,
    v4: Intervals,
    v6: Intervals,
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            v4: Intervals::build(Vec::new(), 32),
            v6: Intervals::build(Vec::new(), 128),
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a, V> {
    pub value: Option<&'a V>,
    /// The widest prefix length around the address with the same answer.
    pub scope: u8,
}

impl<V> PrefixTable<V> {
    /// Builds the table; when the same network is listed twice, the later entry wins.
    pub fn build(entries: impl IntoIterator<Item = (IpNet, V)>) -> Self {
        let mut values = Vec::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (net, value) in entries {
            let i = values.len();
            values.push(value);
            match net.trunc() {
                IpNet::V4(n) => v4.push((u32::from(n.network()) as u128, n.prefix_len(), i)),
                IpNet::V6(n) => v6.push((u128::from(n.network()), n.prefix_len(), i)),
            }
        }
        Self {
            values,
            v4: Intervals::build(v4, 32),
            v6: Intervals::build(v6, 128),
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Longest-prefix match for `addr`, and the exact scope of that answer.
    pub fn lookup(&self, addr: IpAddr) -> Match<'_, V> {
        let (x, bits, table) = match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32, &self.v4),
            IpAddr::V6(a) => (u128::from(a), 128, &self.v6),
        };
        let (s, e, v) = table.find(x);
        Match {
            value: v.map(|i| &self.values[i]),
            scope: scope(x, s, e, bits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &'static str)]) -> PrefixTable<&'static str> {
        PrefixTable::build(entries.iter().map(|(n, v)| (n.parse().unwrap(), *v)))
    }

    fn look(t: &PrefixTable<&'static str>, ip: &str) -> (Option<&'static str>, u8) {
        let m = t.lookup(ip.parse().unwrap());
        (m.value.copied(), m.scope)
    }

    #[test]
    fn longest_prefix_wins_with_exact_scopes() {
        let t = table(&[
            ("10.0.0.0/8", "us"),
            ("10.1.0.0/16", "eu"),
            ("10.1.2.0/24", "de"),
        ]);
        assert_eq!(look(&t, "10.1.2.3"), (Some("de"), 24));
        assert_eq!(
            look(&t, "10.1.3.3"),
            (Some("eu"), 24),
            "10.1.3.0/24 does not hold 10.1.2/24"
        );
        assert_eq!(look(&t, "10.1.128.1"), (Some("eu"), 17));
        assert_eq!(
            look(&t, "10.2.0.1"),
            (Some("us"), 15),
            "10.2/15 avoids 10.1/16"
        );
        assert_eq!(look(&t, "10.200.0.1"), (Some("us"), 9));
        assert_eq!(look(&t, "192.0.2.1"), (None, 1), "128/1 holds no entry");
        assert_eq!(look(&t, "11.0.0.1"), (None, 8));
    }

    #[test]
    fn empty_table_matches_nothing_with_scope_zero() {
        let t = table(&[]);
        assert_eq!(look(&t, "1.2.3.4"), (None, 0));
        assert_eq!(look(&t, "2001:db8::1"), (None, 0));
    }

    #[test]
    fn ipv6_and_host_routes() {
        let t = table(&[
            ("2001:db8::/32", "doc"),
            ("2001:db8:1::/48", "one"),
            ("192.0.2.7/32", "host"),
        ]);
        assert_eq!(look(&t, "2001:db8:1::5"), (Some("one"), 48));
        assert_eq!(look(&t, "2001:db8:2::5"), (Some("doc"), 47));
        assert_eq!(look(&t, "192.0.2.7"), (Some("host"), 32));
        assert_eq!(look(&t, "192.0.2.6"), (None, 32));
        assert_eq!(look(&t, "::1"), (None, 3));
    }

    #[test]
    fn later_duplicate_wins() {
        let t = table(&[("10.0.0.0/8", "a"), ("10.0.0.0/8", "b")]);
        assert_eq!(look(&t, "10.9.9.9"), (Some("b"), 8));
    }

    #[test]
    fn whole_space_prefix() {
        let t = table(&[("0.0.0.0/0", "any"), ("::/0", "any6")]);
        assert_eq!(look(&t, "8.8.8.8"), (Some("any"), 0));
        assert_eq!(look(&t, "2001:db8::1"), (Some("any6"), 0));
    }
}
