//! Burrow's end-to-end test harness.
//!
//! [`services`] starts real PostgreSQL, sshd and coturn instances on 127.0.0.1 in per-test
//! temporary directories and stops them (and everything they spawned) on drop.

pub mod burrow;
pub mod services;
