//! The pg_webhook wire contract, shared by the extension (`webhook_sign`,
//! `webhook_verify`) and the worker (which signs every request).
//!
//! This crate is pure on purpose: no I/O, no clock, no random numbers. Every
//! input that varies (the timestamp, the secret's bytes) is a parameter, so the
//! same code is testable against published vectors and usable inside a
//! PostgreSQL backend. It also holds the destination rules (which URLs and
//! addresses may be sent to), because the extension and the worker must agree
//! on them.
#![warn(missing_docs)]

pub mod destination;
pub mod envelope;
pub mod patterns;
pub mod signing;

pub use envelope::{body, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
pub use signing::{sign, signature_header, verify, Secret, SecretError};
