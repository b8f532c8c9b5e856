//! The DNS side: request handling, authoritative lookup, response fitting.

pub mod client;
pub mod door;
pub mod fast;
pub mod handler;
pub mod lookup;
pub mod response;
pub mod rrl;
pub mod sections;
pub mod slots;
pub mod tcp;
pub mod udp;

pub use handler::DnsHandler;
