//! The database layer: connections, the SQL the worker sends, and the
//! three conversations it has over them (claiming, recording, listening).
//!
//! Depends only on the leaves (claim, events, metrics, retry, text); never
//! on the configuration, HTTP, orchestration or serving layers above it.

pub mod connect;
pub mod error;
pub mod isolation;
pub mod listen;
pub mod queries;
pub mod queue;
pub mod record;
pub mod tls;
