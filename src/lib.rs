//! kar: backup and restore for Apache Kafka and its Schema Registry, into one self-contained,
//! verifiable archive file.
//!
//! The tree follows the pipeline. Every command is a library function with typed options and a
//! typed result; `cli` only turns command-line arguments into those calls.

pub mod archive;
#[cfg(feature = "kafka")]
pub mod backup;
pub mod cat;
#[cfg(feature = "kafka")]
pub mod cli;
pub mod config;
#[cfg(feature = "kafka")]
pub mod diff;
#[cfg(feature = "kafka")]
pub mod drill;
pub mod format;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
pub mod progress;
pub mod registry;
#[cfg(feature = "kafka")]
pub mod restore;
pub mod runtime;
pub mod schema;
