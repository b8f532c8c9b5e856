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
        Ok(Ok(stream)) => {
            // Closed with a reset rather than the FIN handshake: no TIME_WAIT socket per
            // probe (see `http::reset_on_close`).
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            Reason::Connected
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Reason::ConnectionRefused,
        Ok(Err(e)) => Reason::Connect(e.to_string()),
    };
    Outcome {
        up: reason == Reason::Connected,
        reason,
        duration: start.elapsed(),
    }
}
