//! The `provenance` metadata document (§5.1): who made the archive, from where, when, and
//! whether the backup was interrupted. Members in name order (see `kafka_topics`). The bootstrap
//! servers are kept without credentials (a connection string holds none: SASL secrets are
//! separate settings).

use serde::{Deserialize, Serialize};

pub const KIND: &str = "provenance";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub bootstrap: String,
    pub cluster_id: Option<String>,
    /// The command line as given (secrets come from the environment or a config file).
    pub command_line: Vec<String>,
    pub finished_at_ms: i64,
    pub interrupted: bool,
    pub kar_version: String,
    pub kind: String,
    pub started_at_ms: i64,
}
