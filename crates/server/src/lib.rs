//! burrowd, Burrow's control plane: HTTP API, token auth, workspace ownership, audit log,
//! short-lived TURN credentials, the signaling broker and an embedded STUN/TURN relay.
//!
//! It brokers the WebRTC handshake between clients and agents (see
//! [`burrow_proto::signal`]) and never carries tunnel data. It serves the dashboard on its
//! own origin and, with an apps URL, each workspace app's page on an origin of the app's
//! own ([`host`], [`apps`]), where the service worker serves the app through the tunnel.
//!
//! Embedding: [`start`] a [`ServerConfig`] to get a [`RunningServer`]; create accounts with
//! [`admin_add_user`] and [`admin_add_workspace`] (or the [`Db`] methods while serving).

pub mod admin;
pub mod api;
pub mod app_workers;
pub mod apps;
pub mod broker;
pub mod db;
pub mod demo;
pub mod error;
pub mod host;
pub mod origins;
pub mod relay;
pub mod secret;
pub mod server;
mod signaling;
pub mod web;

pub use admin::{admin_add_user, admin_add_workspace, admin_audit, format_audit_table};
pub use api::{AppState, IceConfig, Timing, TurnConfig, app};
pub use db::{AuditRow, Db, DbError};
pub use origins::Origins;
pub use relay::RelayConfig;
pub use server::{RelayMode, RunningServer, ServerConfig, ServerError, start};
