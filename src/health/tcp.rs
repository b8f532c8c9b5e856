//! TCP connect probes for apps that do not speak HTTP.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::outcome::{Outcome, Reason};

pub async fn probe(addr: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let reason = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Reason::Timeout(timeout),
        Ok(Ok(_stream)) => Reason::Connected,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Reason::ConnectionRefused,
        Ok(Err(e)) => Reason::Connect(e.to_string()),
    };
    Outcome {
        up: reason == Reason::Connected,
        reason,
        duration: start.elapsed(),
    }
}
