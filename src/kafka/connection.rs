//! How to reach a Kafka cluster. Passed through to librdkafka; secrets stay in [`Secret`]s and
//! never appear in logs or errors.

use std::path::PathBuf;

use rdkafka::ClientConfig;

use crate::config::Secret;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Connection settings that cannot work, found before anything is contacted.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "no Kafka bootstrap address: give --bootstrap HOST:PORT (or kafka.bootstrap in the config file)"
    )]
    NoBootstrap,
    #[error("security protocol {protocol} needs a SASL mechanism, username and password")]
    SaslIncomplete { protocol: String },
    #[error("SASL settings are given but the security protocol is not SASL_PLAINTEXT or SASL_SSL")]
    SaslWithoutProtocol,
    #[error("mutual TLS needs both a client certificate and its key")]
    HalfMutualTls,
    #[error("TLS file {} does not exist or is not a file", path.display())]
    TlsFile { path: PathBuf },
}

/// How to reach the cluster (the CLI fills it from flags and the config file's `kafka:` section).
#[derive(Debug, Clone, Default)]
pub struct KafkaConnection {
    /// Comma-separated HOST:PORT list.
    pub bootstrap: String,
    pub security_protocol: SecurityProtocol,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA that signed the brokers' certificates.
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_key_password: Option<Secret>,
    /// Check that the broker's certificate names the host (default true).
    pub ssl_endpoint_identification: Option<bool>,
}

impl KafkaConnection {
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        KafkaConnection {
            bootstrap: bootstrap.into(),
            ..Default::default()
        }
    }

    /// Checks that the settings fit together; the message names the setting.
    pub fn validate(&self) -> Result<(), ConnectionError> {
        if self.bootstrap.trim().is_empty() {
            return Err(ConnectionError::NoBootstrap);
        }
        let sasl = matches!(
            self.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        if sasl
            && (self.sasl_mechanism.is_none()
                || self.sasl_username.is_none()
                || self.sasl_password.is_none())
        {
            return Err(ConnectionError::SaslIncomplete {
                protocol: self.security_protocol.as_str().to_uppercase(),
            });
        }
        if !sasl && (self.sasl_mechanism.is_some() || self.sasl_username.is_some()) {
            return Err(ConnectionError::SaslWithoutProtocol);
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(ConnectionError::HalfMutualTls);
        }
        for p in [
            &self.ssl_ca_location,
            &self.ssl_certificate_location,
            &self.ssl_key_location,
        ]
        .into_iter()
        .flatten()
        {
            if !p.is_file() {
                return Err(ConnectionError::TlsFile { path: p.clone() });
            }
        }
        Ok(())
    }

    /// The librdkafka settings for this connection.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("security.protocol", self.security_protocol.as_str());
        if let Some(m) = self.sasl_mechanism {
            c.set("sasl.mechanism", m.as_str());
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p.expose());
        }
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        if let Some(p) = &self.ssl_ca_location {
            c.set("ssl.ca.location", path(p));
        }
        if let Some(p) = &self.ssl_certificate_location {
            c.set("ssl.certificate.location", path(p));
        }
        if let Some(p) = &self.ssl_key_location {
            c.set("ssl.key.location", path(p));
        }
        if let Some(p) = &self.ssl_key_password {
            c.set("ssl.key.password", p.expose());
        }
        if let Some(false) = self.ssl_endpoint_identification {
            c.set("ssl.endpoint.identification.algorithm", "none");
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings that cannot work are named before anything is contacted.
    #[test]
    fn impossible_settings_are_named() {
        let ok = KafkaConnection::plaintext("127.0.0.1:9092");
        assert!(ok.validate().is_ok());
        let err = |c: KafkaConnection| c.validate().unwrap_err().to_string();
        assert!(err(KafkaConnection::plaintext(" ")).contains("--bootstrap HOST:PORT"));
        let sasl = KafkaConnection {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            ..ok.clone()
        };
        assert_eq!(
            err(sasl),
            "security protocol SASL_SSL needs a SASL mechanism, username and password"
        );
        let stray = KafkaConnection {
            sasl_username: Some("kar".into()),
            ..ok.clone()
        };
        assert!(err(stray).contains("not SASL_PLAINTEXT or SASL_SSL"));
        let half = KafkaConnection {
            ssl_certificate_location: Some("/etc/hosts".into()),
            ..ok.clone()
        };
        assert!(err(half).contains("both a client certificate and its key"));
        let missing = KafkaConnection {
            ssl_ca_location: Some("/nonexistent/ca.pem".into()),
            ..ok
        };
        assert_eq!(
            err(missing),
            "TLS file /nonexistent/ca.pem does not exist or is not a file"
        );
    }
}
