//! Schema Registry: the Confluent wire-format header that ties every serialized record to a schema
//! ID. (The REST client, snapshot and restore of the registry build on this module.)

pub mod client;
pub mod dek;
pub mod export;
pub mod graph;
pub mod snapshot;
pub mod wire;
