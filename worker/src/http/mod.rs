//! The HTTP layer: signing and sending one delivery, refusing private
//! destinations, keeping secrets out of what a receiver echoes back.
//!
//! Depends on the configuration and the leaves (claim, retry, text); never
//! on the database.

pub mod dispatch;
pub mod guard;
pub(crate) mod redact;
