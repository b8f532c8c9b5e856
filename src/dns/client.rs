//! Who is asking: the resolver's address and, when present and trusted, the EDNS Client
//! Subnet (RFC 7871) it forwarded.

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, ResponseCode},
    rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
};
use ipnet::IpNet;

use crate::{geo::Location, snapshot::ClientSettings};

/// A client subnet from ECS, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// The address, already zero beyond `source_prefix`.
    pub addr: IpAddr,
    pub source_prefix: u8,
}

/// What the handler knows of the client of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The resolver (or stub) that sent the query.
    pub src: IpAddr,
    /// ECS that gtmd accepted (valid, trusted, not ignored globally). Its presence means the
    /// response echoes ECS.
    pub ecs: Option<Ecs>,
}

/// Sticky hashing groups clients by /24 (IPv4) or /56 (IPv6) when nothing narrower is known.
pub const STICKY_V4: u8 = 24;
pub const STICKY_V6: u8 = 56;

fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    IpNet::new(addr, prefix).map_or(addr, |n| n.trunc().addr())
}

impl Client {
    /// Reads and checks the ECS option of a query. Malformed ECS is FORMERR (RFC 7871
    /// §7.1.1); ECS from an untrusted resolver, or with `ignore_ecs`, is ignored.
    pub fn from_query(
        src: IpAddr,
        edns: Option<&Edns>,
        settings: &ClientSettings,
    ) -> Result<Self, ResponseCode> {
        let subnet = match edns.and_then(|e| e.option(EdnsCode::Subnet)) {
            Some(EdnsOption::Subnet(s)) => Some(*s),
            _ => None,
        };
        let Some(subnet) = subnet else {
            return Ok(Self { src, ecs: None });
        };
        let ecs = validate(&subnet)?;
        Ok(Self::with_ecs(src, Some(ecs), settings))
    }

    /// Like [`Client::from_query`], from the Client Subnet option's data as it stands on
    /// the wire (`None`: the query has none). The raw bytes are needed because a decoded
    /// option no longer shows address bytes beyond what the source prefix needs, which
    /// RFC 7871 §6 rejects with FORMERR like the other malformations.
    pub fn from_wire(
        src: IpAddr,
        ecs: Option<&[u8]>,
        settings: &ClientSettings,
    ) -> Result<Self, ResponseCode> {
        match ecs {
            None => Ok(Self { src, ecs: None }),
            Some(data) => {
                let ecs = read_ecs(data).ok_or(ResponseCode::FormErr)?;
                Ok(Self::with_ecs(src, Some(ecs), settings))
            }
        }
    }

    /// A client from an already validated ECS (or none), applying the trust settings.
    pub fn with_ecs(src: IpAddr, ecs: Option<Ecs>, settings: &ClientSettings) -> Self {
        let trusted = !settings.ignore_ecs
            && settings
                .ecs_trusted
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.contains(&src)));
        Self {
            src,
            ecs: ecs.filter(|_| trusted),
        }
    }

    /// The address to locate, the ECS in use (None when the app ignores it), and the
    /// sticky subnet (hash key input and its prefix length).
    pub fn view(&self, ignore_ecs: bool) -> ClientAddr {
        match self.ecs {
            // SOURCE PREFIX 0: the resolver withholds the client: locate the resolver.
            Some(ecs) if !ignore_ecs && ecs.source_prefix > 0 => {
                let sticky = if ecs.addr.is_ipv4() {
                    STICKY_V4
                } else {
                    STICKY_V6
                };
                let prefix = ecs.source_prefix.min(sticky);
                ClientAddr {
                    locate: ecs.addr,
                    sticky_net: masked(ecs.addr, prefix),
                    sticky_prefix: prefix,
                }
            }
            _ => {
                let prefix = if self.src.is_ipv4() {
                    STICKY_V4
                } else {
                    STICKY_V6
                };
                ClientAddr {
                    locate: self.src,
                    sticky_net: masked(self.src, prefix),
                    sticky_prefix: prefix,
                }
            }
        }
    }

    /// The ECS option for the response with `scope`, when one is to be echoed.
    pub fn echo(&self, scope: u8) -> Option<EdnsOption> {
        let ecs = self.ecs?;
        Some(EdnsOption::Subnet(ClientSubnet::new(
            ecs.addr,
            ecs.source_prefix,
            scope,
        )))
    }
}

/// Where to locate a client and how to group it for sticky hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub locate: IpAddr,
    pub sticky_net: IpAddr,
    pub sticky_prefix: u8,
}

impl ClientAddr {
    /// The sticky hash key of the subnet.
    pub fn sticky_key(&self) -> u64 {
        // On the query path: a fixed buffer, no allocation.
        let mut bytes = [0u8; 17];
        let n = match self.sticky_net {
            IpAddr::V4(a) => {
                bytes[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                bytes[..16].copy_from_slice(&a.octets());
                16
            }
        };
        bytes[n] = self.sticky_prefix;
        crate::policy::stable_hash(&bytes[..=n])
    }

    pub fn locate_with(&self, geo: &crate::geo::Geo) -> Location {
        geo.locate(self.locate)
    }
}

/// The Client Subnet option `d` (its data, after code and length), if it is exactly as
/// RFC 7871 §6 wants it: a known family, SOURCE PREFIX-LENGTH within the family, SCOPE 0
/// (a query), exactly as many address bytes as the source prefix needs, and no address
/// bit set beyond it. `None` is FORMERR. The one reader of the option on the wire: the
/// fast path passes what this refuses to the full path, which answers it FORMERR.
/// (`inline`: it was part of the fast path's parser, in the same codegen unit.)
#[inline]
pub fn read_ecs(d: &[u8]) -> Option<Ecs> {
    let head = d.get(..4)?;
    let family = u16::from_be_bytes([head[0], head[1]]);
    let (source, scope) = (head[2], head[3]);
    let addr = &d[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    let bytes = source.div_ceil(8) as usize;
    if scope != 0 || source > max || addr.len() != bytes {
        return None;
    }
    if source % 8 != 0 && addr[bytes - 1] & (0xff >> (source % 8)) != 0 {
        return None;
    }
    let ip = if family == 1 {
        let mut o = [0u8; 4];
        o[..bytes].copy_from_slice(addr);
        IpAddr::from(o)
    } else {
        let mut o = [0u8; 16];
        o[..bytes].copy_from_slice(addr);
        IpAddr::from(o)
    };
    Some(Ecs {
        addr: ip,
        source_prefix: source,
    })
}

fn validate(subnet: &ClientSubnet) -> Result<Ecs, ResponseCode> {
    let addr = subnet.addr();
    let source = subnet.source_prefix();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    // In queries SCOPE must be 0, and address bits beyond SOURCE must be zero.
    if subnet.scope_prefix() != 0 || source > max || masked(addr, source) != addr {
        return Err(ResponseCode::FormErr);
    }
    Ok(Ecs {
        addr,
        source_prefix: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClientSettings {
        ClientSettings::default()
    }

    fn edns_with(subnet: ClientSubnet) -> Edns {
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Subnet(subnet));
        e
    }

    #[test]
    fn valid_ecs_is_used_and_echoed() {
        let e = edns_with(ClientSubnet::new("192.0.2.0".parse().unwrap(), 24, 0));
        let c = Client::from_query("10.0.0.1".parse().unwrap(), Some(&e), &settings()).unwrap();
        let v = c.view(false);
        assert_eq!(v.locate, "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(v.sticky_prefix, 24);
        assert!(c.echo(24).is_some());
        // An app that ignores ECS locates the resolver.
        assert_eq!(c.view(true).locate, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_ecs_is_formerr() {
        for s in [
            ClientSubnet::new("192.0.2.1".parse().unwrap(), 24, 0), // bits beyond the prefix
            ClientSubnet::new("192.0.2.0".parse().unwrap(), 24, 16), // scope set in a query
        ] {
            let e = edns_with(s);
            assert_eq!(
                Client::from_query("10.0.0.1".parse().unwrap(), Some(&e), &settings()),
                Err(ResponseCode::FormErr)
            );
        }
    }

    /// RFC 7871 §6 on the wire: exactly the address bytes the source prefix needs.
    #[test]
    fn the_option_on_the_wire_must_be_exact() {
        let ok = read_ecs(&[0, 1, 24, 0, 192, 0, 2]).unwrap();
        assert_eq!(ok.addr, "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(read_ecs(&[0, 1, 0, 0]).unwrap().source_prefix, 0);
        for bad in [
            &[0, 1, 24, 0, 192, 0, 2, 0][..], // a byte too many
            &[0, 1, 0, 0, 0],                 // a byte for a /0
            &[0, 1, 24, 0, 192, 0],           // a byte too few
            &[0, 1, 23, 0, 192, 0, 3],        // a bit beyond the prefix
            &[0, 1, 24, 8, 192, 0, 2],        // a scope in a query
            &[0, 1, 33, 0, 1, 2, 3, 4, 5],    // longer than IPv4
            &[0, 3, 8, 0, 1],                 // unknown family
            &[0, 1, 24],                      // cut short
        ] {
            assert_eq!(read_ecs(bad), None, "{bad:?}");
            let wire = Client::from_wire("10.0.0.1".parse().unwrap(), Some(bad), &settings());
            assert_eq!(wire, Err(ResponseCode::FormErr), "{bad:?}");
        }
    }

    #[test]
    fn untrusted_or_ignored_ecs_is_not_used() {
        let e = edns_with(ClientSubnet::new("192.0.2.0".parse().unwrap(), 24, 0));
        let trusted_only = ClientSettings {
            ecs_trusted: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            ..settings()
        };
        let c = Client::from_query("172.16.0.1".parse().unwrap(), Some(&e), &trusted_only).unwrap();
        assert_eq!(c.ecs, None);
        let c = Client::from_query("10.1.1.1".parse().unwrap(), Some(&e), &trusted_only).unwrap();
        assert!(c.ecs.is_some());
        let ignore = ClientSettings {
            ignore_ecs: true,
            ..settings()
        };
        let c = Client::from_query("10.1.1.1".parse().unwrap(), Some(&e), &ignore).unwrap();
        assert_eq!(c.ecs, None);
    }

    #[test]
    fn source_prefix_zero_locates_the_resolver() {
        let e = edns_with(ClientSubnet::new("0.0.0.0".parse().unwrap(), 0, 0));
        let c = Client::from_query("10.9.9.9".parse().unwrap(), Some(&e), &settings()).unwrap();
        assert_eq!(c.view(false).locate, "10.9.9.9".parse::<IpAddr>().unwrap());
        assert!(c.echo(0).is_some(), "echoed with scope 0");
    }
}
