//! Orchestration: the claim loop and everything that decides *when*
//! (pacing, slots in flight, the maintenance schedule), on top of the
//! database and HTTP layers. The only layer that spawns the worker's tasks.

pub mod error;
mod inflight;
mod maintenance;
mod pacing;
pub mod worker;
