//! File descriptors: the soft limit raised at start, and a budget that keeps the
//! descriptors probes need out of clients' reach.
//!
//! Every client connection (DNS over TCP, admin HTTP) holds a descriptor, and so does every
//! probe in flight. When clients held them all, every probe failed with "Too many open
//! files" and gtmd withdrew healthy clusters. So at start the worst case of client
//! connections (each listener's cap) is added to what probes need
//! (`health.max_concurrent_probes`, the probe engine's semaphore), the bound sockets and a
//! [`RESERVE`] for everything else (stdio, the runtime, the config watcher, the accept that
//! finds a listener full). If that exceeds the soft limit the client caps are lowered to
//! fit, with a WARN saying so.
//!
//! Lowering rather than refusing to start: the descriptor limit belongs to the host (a
//! container runtime, a systemd unit) and often differs from the one the config was written
//! for; refusing would turn an unrelated platform change into no DNS at all, while a lower
//! connection cap only sheds excess clients, visibly (the WARN, and the
//! `gtmd_tcp_rejected_total` / `gtmd_admin_rejected_total` counters).

use std::io;

/// Descriptors kept for everything that is neither a client nor a probe nor a bound
/// socket.
pub const RESERVE: u64 = 64;

/// The soft and hard `RLIMIT_NOFILE` before and after [`raise_soft_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

fn get() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The current soft limit on open descriptors.
pub fn soft_limit() -> io::Result<u64> {
    Ok(get()?.rlim_cur as u64)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: the soft default (often 1024) is a
/// guard for select()-era programs, and gtmd's connection caps are what bounds it instead.
pub fn raise_soft_limit() -> io::Result<Raised> {
    let mut lim = get()?;
    let soft_before = lim.rlim_cur as u64;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let now = get()?;
    Ok(Raised {
        soft_before,
        soft: now.rlim_cur as u64,
        hard: now.rlim_max as u64,
    })
}

/// What a running gtmd may hold open at worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Bound sockets (UDP, TCP, admin).
    pub sockets: u64,
    /// DNS TCP listeners, and the connection cap of each.
    pub tcp_listeners: u64,
    pub tcp_max_connections: u64,
    /// The admin connection cap (0: no admin endpoint).
    pub admin_max_connections: u64,
    /// Probes in flight at most.
    pub probes: u64,
}

impl Demand {
    /// Descriptors needed by everything but clients.
    fn fixed(&self) -> u64 {
        self.sockets + self.probes + RESERVE
    }

    pub fn total(&self) -> u64 {
        self.fixed() + self.tcp_listeners * self.tcp_max_connections + self.admin_max_connections
    }
}

/// The client caps that fit the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub tcp_max_connections: u64,
    pub admin_max_connections: u64,
    /// The caps are below the configured ones.
    pub lowered: bool,
    /// Probes, sockets and the reserve alone exceed the limit: probes may fail whatever
    /// clients do.
    pub probes_exceed: bool,
}

/// The client caps for `demand` under a soft limit of `limit` descriptors: the configured
/// ones if the worst case fits, else lower ones (at least 1 each) that fit. The admin
/// endpoint keeps its (small) cap unless it would take more than a quarter of what is left
/// for clients: DNS is the service.
pub fn plan(limit: u64, demand: Demand) -> Budget {
    let configured = Budget {
        tcp_max_connections: demand.tcp_max_connections,
        admin_max_connections: demand.admin_max_connections,
        lowered: false,
        probes_exceed: false,
    };
    if demand.total() <= limit {
        return configured;
    }
    let for_clients = limit.saturating_sub(demand.fixed());
    let admin = if demand.admin_max_connections == 0 {
        0
    } else {
        demand.admin_max_connections.min(for_clients / 4).max(1)
    };
    let tcp = (for_clients.saturating_sub(admin) / demand.tcp_listeners.max(1))
        .min(demand.tcp_max_connections)
        .max(1);
    Budget {
        tcp_max_connections: tcp,
        admin_max_connections: admin,
        lowered: true,
        probes_exceed: for_clients == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMAND: Demand = Demand {
        sockets: 5,
        tcp_listeners: 2,
        tcp_max_connections: 1000,
        admin_max_connections: 64,
        probes: 1024,
    };

    #[test]
    fn the_configured_caps_stand_when_the_worst_case_fits() {
        assert_eq!(DEMAND.total(), 5 + 2000 + 64 + 1024 + RESERVE);
        let b = plan(DEMAND.total(), DEMAND);
        assert!(!b.lowered);
        assert_eq!((b.tcp_max_connections, b.admin_max_connections), (1000, 64));
    }

    #[test]
    fn over_the_limit_clients_are_lowered_to_leave_probes_theirs() {
        let b = plan(2048, DEMAND);
        assert!(b.lowered && !b.probes_exceed);
        let left = 2048 - 5 - 1024 - RESERVE;
        assert_eq!(b.admin_max_connections, 64);
        assert_eq!(b.tcp_max_connections, (left - 64) / 2);
        let lowered = Demand {
            tcp_max_connections: b.tcp_max_connections,
            admin_max_connections: b.admin_max_connections,
            ..DEMAND
        };
        assert!(lowered.total() <= 2048);
        // Little room: the admin cap gives way too.
        let small = Demand {
            probes: 16,
            ..DEMAND
        };
        let b = plan(256, small);
        let left = 256 - 5 - 16 - RESERVE;
        assert_eq!(b.admin_max_connections, left / 4);
        assert_eq!(b.tcp_max_connections, (left - left / 4) / 2);
    }

    #[test]
    fn probes_alone_over_the_limit_leave_one_connection_each() {
        let b = plan(1024, DEMAND);
        assert!(b.lowered && b.probes_exceed);
        assert_eq!((b.tcp_max_connections, b.admin_max_connections), (1, 1));
        let no_admin = Demand {
            admin_max_connections: 0,
            ..DEMAND
        };
        assert_eq!(plan(1024, no_admin).admin_max_connections, 0);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let r = raise_soft_limit().unwrap();
        assert_eq!(r.soft, r.hard);
        assert!(r.soft >= r.soft_before);
        assert_eq!(soft_limit().unwrap(), r.hard);
    }
}
