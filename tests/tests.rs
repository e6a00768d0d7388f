//! All integration tests, built as one binary: every test binary links librdkafka again, and the
//! machine this runs on has two cores. One module per area.
//!
//! These tests talk to the real services started by `scripts/services up` (a Kafka broker and two
//! Schema Registry instances); addresses come from `KAR_TEST_BOOTSTRAP`,
//! `KAR_TEST_REGISTRY_SOURCE` and `KAR_TEST_REGISTRY_TARGET`.

mod archive;
mod backup;
mod cat;
mod chain;
mod chain_restore;
mod common;
mod compact;
mod continuous;
mod contracts;
mod diff;
mod drill;
mod encryption;
mod metrics;
mod operations;
mod registry;
mod repair;
mod restore;
mod services;
mod signing;
mod standby;
mod stream;
mod vectors;
mod verify;
mod volumes;
