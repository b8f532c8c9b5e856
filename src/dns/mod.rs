//! The DNS side: request handling, authoritative lookup, response fitting.

pub mod client;
pub mod handler;
pub mod lookup;
pub mod response;

pub use handler::DnsHandler;
