//! kafkabox: one binary that stands in for a Kafka cluster. Real Kafka producers publish to its
//! listener; every record batch is kept in sled (`kafkabox-storage`) exactly as sent.
//!
//! - [`config`]: settings from defaults, a TOML file, `KAFKABOX_*` variables and flags.
//! - [`broker`]: the listener, connection loop and ordered responses.
//! - [`api`]: one module per Kafka API.
//! - [`pipeline`]: in-process handlers fed from the log, with their own committed offsets.
//! - [`appliance`]: the embedding API (`Appliance::builder()`).

pub mod api;
pub mod appliance;
pub mod broker;
pub mod config;
pub mod contract;
pub mod handlers;
pub mod http;
pub mod pipeline;
pub mod profile;

pub use appliance::{Appliance, ApplianceBuilder, ApplianceHandle};
pub use broker::Server;
pub use config::Config;
