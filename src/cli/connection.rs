//! How to reach Kafka and the Schema Registry, declared once: each setting is a flag and a key of
//! the config file's `kafka:` or `registry:` section (flags override the file), and becomes the
//! library's [`KafkaConnection`] or [`RegistrySettings`], which check that they fit together.

use std::convert::Infallible;
use std::path::PathBuf;

use serde::Deserialize;

use super::settings::settings;
use crate::config::Secret;
use crate::kafka::{KafkaConnection, SaslMechanism, SecurityProtocol};
use crate::registry::client::RegistrySettings;

/// `--security-protocol` values (clap stays in the CLI layer; the library's enum has none of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocolArg {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl From<SecurityProtocolArg> for SecurityProtocol {
    fn from(a: SecurityProtocolArg) -> Self {
        match a {
            SecurityProtocolArg::Plaintext => SecurityProtocol::Plaintext,
            SecurityProtocolArg::Ssl => SecurityProtocol::Ssl,
            SecurityProtocolArg::SaslPlaintext => SecurityProtocol::SaslPlaintext,
            SecurityProtocolArg::SaslSsl => SecurityProtocol::SaslSsl,
        }
    }
}

/// `--sasl-mechanism` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
pub enum SaslMechanismArg {
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl From<SaslMechanismArg> for SaslMechanism {
    fn from(a: SaslMechanismArg) -> Self {
        match a {
            SaslMechanismArg::Plain => SaslMechanism::Plain,
            SaslMechanismArg::ScramSha256 => SaslMechanism::ScramSha256,
            SaslMechanismArg::ScramSha512 => SaslMechanism::ScramSha512,
        }
    }
}

/// A secret from the command line or the environment.
fn secret(s: &str) -> Result<Secret, Infallible> {
    Ok(Secret::new(s))
}

settings! {
    /// How to reach Kafka: the flags and the config file's `kafka:` section.
    pub struct KafkaSettings {
        /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]
        #[arg(long)]
        pub bootstrap: Option<String>,
        /// [default: PLAINTEXT]
        #[arg(long, value_enum)]
        pub security_protocol: Option<SecurityProtocolArg>,
        #[arg(long, value_enum)]
        pub sasl_mechanism: Option<SaslMechanismArg>,
        #[arg(long)]
        pub sasl_username: Option<String>,
        /// SASL password (better from the environment than on the command line)
        #[arg(long, env = "KAR_KAFKA_SASL_PASSWORD", hide_env_values = true, value_parser = secret)]
        pub sasl_password: Option<Secret>,
        /// PEM file of the CA that signed the brokers' certificates
        #[arg(long = "ssl-ca", value_name = "PEM")]
        pub ssl_ca_location: Option<PathBuf>,
        /// PEM client certificate, for mutual TLS
        #[arg(long = "ssl-cert", value_name = "PEM")]
        pub ssl_certificate_location: Option<PathBuf>,
        /// PEM client key, for mutual TLS
        #[arg(long = "ssl-key", value_name = "PEM")]
        pub ssl_key_location: Option<PathBuf>,
        #[arg(long, env = "KAR_KAFKA_SSL_KEY_PASSWORD", hide_env_values = true, value_parser = secret)]
        pub ssl_key_password: Option<Secret>,
        /// Check that the broker's certificate names the host [default: true]
        #[arg(long, value_name = "BOOL")]
        pub ssl_endpoint_identification: Option<bool>,
    }
}

impl KafkaSettings {
    /// The library's connection (checked when a command uses it).
    pub fn connection(self) -> KafkaConnection {
        KafkaConnection {
            bootstrap: self.bootstrap.unwrap_or_default(),
            security_protocol: self.security_protocol.map(Into::into).unwrap_or_default(),
            sasl_mechanism: self.sasl_mechanism.map(Into::into),
            sasl_username: self.sasl_username,
            sasl_password: self.sasl_password,
            ssl_ca_location: self.ssl_ca_location,
            ssl_certificate_location: self.ssl_certificate_location,
            ssl_key_location: self.ssl_key_location,
            ssl_key_password: self.ssl_key_password,
            ssl_endpoint_identification: self.ssl_endpoint_identification,
        }
    }
}

settings! {
    /// How to reach the Schema Registry: the flags and the config file's `registry:` section.
    pub struct RegistryFlags {
        /// Schema Registry URL, e.g. http://127.0.0.1:8081
        #[arg(long = "registry", id = "registry_url", value_name = "URL")]
        pub url: Option<String>,
        /// Basic-auth user for the registry
        #[arg(long = "registry-username", id = "registry_username")]
        pub username: Option<String>,
        #[arg(long = "registry-password", id = "registry_password", env = "KAR_REGISTRY_PASSWORD", hide_env_values = true, value_parser = secret)]
        pub password: Option<Secret>,
        /// Bearer token for the registry
        #[arg(long = "registry-token", id = "registry_token", env = "KAR_REGISTRY_TOKEN", hide_env_values = true, value_parser = secret)]
        pub bearer_token: Option<Secret>,
        /// PEM CA for the registry's certificate
        #[arg(long = "registry-ca", id = "registry_ca", value_name = "PEM")]
        pub ssl_ca_location: Option<PathBuf>,
        /// PEM client certificate and PKCS#8 key, for mutual TLS with the registry
        #[arg(long = "registry-cert", id = "registry_cert", value_name = "PEM")]
        pub ssl_certificate_location: Option<PathBuf>,
        #[arg(long = "registry-key", id = "registry_key", value_name = "PEM")]
        pub ssl_key_location: Option<PathBuf>,
        /// Registry requests per second [default: 25]
        #[arg(long = "registry-rate-limit", id = "registry_rate_limit")]
        pub rate_limit: Option<u32>,
        /// Attempts per registry request, the first included [default: 8]
        #[arg(long = "registry-max-attempts", id = "registry_max_attempts")]
        pub max_attempts: Option<u32>,
        /// Seconds one registry request may take with all its retries [default: 120]
        #[arg(long = "registry-deadline", id = "registry_deadline", value_name = "SECS")]
        pub deadline_secs: Option<u64>,
        /// Seconds one HTTP exchange with the registry may take [default: 30]
        #[arg(long = "registry-timeout", id = "registry_timeout", value_name = "SECS")]
        pub timeout_secs: Option<u64>,
        /// Registry requests in flight at once [default: 4]
        #[arg(long = "registry-concurrency", id = "registry_concurrency")]
        pub concurrency: Option<usize>,
    }
}

impl RegistryFlags {
    /// The library's registry settings; `None` when no URL is given. Settings without a URL are
    /// an error: they would be dropped unseen.
    pub fn settings(self) -> anyhow::Result<Option<RegistrySettings>> {
        let Some(url) = self.url else {
            let any = self.username.is_some()
                || self.password.is_some()
                || self.bearer_token.is_some()
                || self.ssl_ca_location.is_some()
                || self.ssl_certificate_location.is_some()
                || self.ssl_key_location.is_some()
                || self.rate_limit.is_some()
                || self.max_attempts.is_some()
                || self.deadline_secs.is_some()
                || self.timeout_secs.is_some()
                || self.concurrency.is_some();
            anyhow::ensure!(
                !any,
                "registry settings are given without a registry URL: give --registry URL (or registry.url in the config file)"
            );
            return Ok(None);
        };
        let d = RegistrySettings::new(url);
        Ok(Some(RegistrySettings {
            username: self.username,
            password: self.password,
            bearer_token: self.bearer_token,
            ssl_ca_location: self.ssl_ca_location,
            ssl_certificate_location: self.ssl_certificate_location,
            ssl_key_location: self.ssl_key_location,
            rate_limit: self.rate_limit.unwrap_or(d.rate_limit),
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            deadline_secs: self.deadline_secs.unwrap_or(d.deadline_secs),
            timeout_secs: self.timeout_secs.unwrap_or(d.timeout_secs),
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            ..d
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::settings::Merge;

    #[test]
    fn flags_over_the_file_make_the_library_connection() {
        let file: KafkaSettings = serde_json::from_str(
            r#"{"bootstrap": "file:9092", "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "kar",
                "sasl_password": "p", "ssl_ca_location": "/ca.pem"}"#,
        )
        .unwrap();
        let flags = KafkaSettings {
            bootstrap: Some("flag:9092".into()),
            ..Default::default()
        };
        let c = flags.over(file).connection();
        assert_eq!(c.bootstrap, "flag:9092");
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.sasl_mechanism, Some(SaslMechanism::ScramSha512));
        assert_eq!(c.sasl_password.as_ref().map(Secret::expose), Some("p"));
        assert_eq!(c.ssl_ca_location, Some(PathBuf::from("/ca.pem")));
        assert!(c.validate().is_err(), "/ca.pem does not exist");
        assert!(serde_json::from_str::<KafkaSettings>(r#"{"ssl_ca": "x"}"#).is_err());
    }

    #[test]
    fn registry_settings_need_a_url_and_keep_the_library_defaults() {
        let none = RegistryFlags::default().settings().unwrap();
        assert!(none.is_none());
        let orphan = RegistryFlags {
            username: Some("u".into()),
            ..Default::default()
        };
        assert!(
            orphan
                .settings()
                .unwrap_err()
                .to_string()
                .contains("without a registry URL")
        );
        // Every key examples/backup.yaml names.
        let all: RegistryFlags = serde_json::from_str(
            r#"{"url": "https://r:8081", "username": "kar", "password": "p", "bearer_token": "t",
                "ssl_ca_location": "/ca.pem", "ssl_certificate_location": "/c.pem",
                "ssl_key_location": "/k.pem", "rate_limit": 25, "max_attempts": 8,
                "deadline_secs": 120, "timeout_secs": 30, "concurrency": 4}"#,
        )
        .unwrap();
        let all = all.settings().unwrap().unwrap();
        assert_eq!(all.bearer_token.as_ref().map(Secret::expose), Some("t"));
        assert_eq!(all.ssl_key_location, Some(PathBuf::from("/k.pem")));
        let file: RegistryFlags =
            serde_json::from_str(r#"{"url": "http://r:8081", "rate_limit": 5}"#).unwrap();
        let s = file.settings().unwrap().unwrap();
        let d = RegistrySettings::new("http://r:8081");
        assert_eq!((s.url.as_str(), s.rate_limit), ("http://r:8081", 5));
        assert_eq!(
            (
                s.max_attempts,
                s.deadline_secs,
                s.timeout_secs,
                s.concurrency
            ),
            (
                d.max_attempts,
                d.deadline_secs,
                d.timeout_secs,
                d.concurrency
            )
        );
    }

    /// Every flag of a command is declared once: clap's own check of the commands (unique names
    /// and ids across the flattened Kafka, registry and command settings).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }
}
