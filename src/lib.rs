//! kafkabox: one binary that stands in for a Kafka cluster. Real Kafka producers publish to its
//! listener; every record batch is kept in sled (`kafkabox-storage`) exactly as sent.
//!
//! - [`config`]: settings from defaults, a TOML file, `KAFKABOX_*` variables and flags.
//! - [`server`]: opens the store, builds TLS, binds the listeners, starts the services.
//! - [`listener`]: the Kafka transport: accept, TLS handshakes, frames, ordered responses.
//! - [`api`]: one file per Kafka API, translating to the domain services; the per-connection
//!   [`api::Session`].
//! - [`services`]: the domain services (topics, retention, groups) every front end calls.
//! - [`pipeline`]: in-process handlers fed from the log, with their own committed offsets.
//! - [`appliance`]: the embedding API (`Appliance::builder()`).
//! - `clients` (cargo feature `client`): librdkafka clients closed with a bound.
//! - `handle` (cargo feature `client`): the handlers as a consumer group on a Kafka cluster.

pub mod api;
pub mod appliance;
#[cfg(feature = "client")]
pub mod clients;
pub mod config;
pub mod contract;
pub mod datadir;
#[cfg(feature = "client")]
pub mod handle;
pub mod handlers;
pub mod http;
pub mod listener;
pub mod pipeline;
pub mod profile;
pub mod server;
pub mod services;
pub mod tls;

pub use appliance::{Appliance, ApplianceBuilder, ApplianceHandle};
pub use config::Config;
pub use server::Server;
