//! kafkabox: one binary that stands in for a Kafka cluster. Real Kafka producers publish to its
//! listener; every record batch is kept in sled (`kafkabox-storage`) exactly as sent.
//!
//! - [`config`]: settings from defaults, a TOML file, `KAFKABOX_*` variables and flags.
//! - [`broker`]: the listener, connection loop and ordered responses.
//! - [`api`]: one module per Kafka API.

pub mod api;
pub mod broker;
pub mod config;

pub use broker::Server;
pub use config::Config;
