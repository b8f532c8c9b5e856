//! The fleet (issue 15, in progress): gtmd instances that share what they observe over
//! gossip. The gossip engine is `chitchat` (Scuttlebutt anti-entropy over UDP with
//! phi-accrual failure detection; each node writes only its own keys); gtmd adds what it
//! lacks for a server on the open internet: every datagram authenticated ([`auth`]).
//!
//! Not wired into the server yet: membership, the shared verdicts and the agreed decision
//! come next (see the issue).

pub mod auth;
pub mod member;
