//! End-to-end tests: a real PostgreSQL cluster (started by tests/run.sh), the
//! real worker (in-process, or its binary where a process must die), real
//! HTTP receivers on 127.0.0.1. One binary, one module per concern.

mod backfill;
mod bytes;
mod capture;
mod chaos;
mod citus;
mod cluster;
mod concurrency;
mod dbtls;
mod delivery;
mod egress;
mod fairness;
mod fanout;
mod filters;
mod flavor;
mod observability;
mod operations;
mod ordering;
mod planted;
mod pooler;
mod queries;
mod ratelimits;
mod receivers;
mod recording;
mod restore;
mod retention;
mod retry;
mod roles;
mod security;
mod sql_flavor_upgrade;
mod upgrade;
