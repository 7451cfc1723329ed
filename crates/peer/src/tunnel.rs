//! written by the tunnel driver task
