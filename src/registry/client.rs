//! A Schema Registry REST client fit for production registries: a token-bucket rate limit (managed
//! registries allow about 25–75 requests/s and answer 429 past that), retries with exponential
//! backoff and jitter on 429, 5xx and connection failures honouring `Retry-After`, an attempt limit
//! and an overall deadline per request, timeouts, bounded concurrency, and basic, bearer or mTLS
//! authentication. Credentials never appear in errors or logs: errors name the method, the
//! endpoint path, the HTTP status and the registry's own error code and message.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::Secret;
use crate::progress::{Event, Progress};

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("registry {method} {endpoint}: HTTP {status}{code}: {message}", code = .error_code.map(|c| format!(" (error code {c})")).unwrap_or_default())]
    Http {
        method: Method,
        endpoint: String,
        status: u16,
        error_code: Option<i64>,
        message: String,
    },
    #[error(
        "registry {method} {endpoint}: gave up after {attempts} attempts in {seconds:.1}s; last failure: {last}"
    )]
    GaveUp {
        method: Method,
        endpoint: String,
        attempts: u32,
        seconds: f64,
        last: String,
    },
    #[error(
        "registry {method} {endpoint}: the reply is not what the Schema Registry API documents: {detail}"
    )]
    BadReply {
        method: Method,
        endpoint: String,
        detail: String,
    },
    #[error("registry settings: {0}")]
    Config(String),
}

impl RegistryError {
    /// The registry's error code, when it answered with one (e.g. 40401 subject not found).
    pub fn error_code(&self) -> Option<i64> {
        match self {
            RegistryError::Http { error_code, .. } => *error_code,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How to reach a registry (the CLI fills it from flags and the config file's `registry:`
/// section).
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Base URL, e.g. https://registry.example:8081 (credentials in the URL are moved to basic
    /// auth and never printed).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bearer_token: Option<Secret>,
    /// PEM CA for the registry's certificate.
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM client certificate and PKCS#8 key, for mutual TLS.
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    /// Requests per second (token bucket, no burst). Default 25.
    pub rate_limit: u32,
    /// Attempts per request, the first included. Default 8.
    pub max_attempts: u32,
    /// Time one request may take with all its retries, in seconds. Default 120.
    pub deadline_secs: u64,
    /// Timeout of one HTTP exchange, in seconds. Default 30.
    pub timeout_secs: u64,
    /// Requests in flight at once. Default 4.
    pub concurrency: usize,
}

fn default_rate() -> u32 {
    25
}
fn default_attempts() -> u32 {
    8
}
fn default_deadline() -> u64 {
    120
}
fn default_timeout() -> u64 {
    30
}
fn default_concurrency() -> usize {
    4
}

impl RegistrySettings {
    pub fn new(url: impl Into<String>) -> Self {
        RegistrySettings {
            url: url.into(),
            username: None,
            password: None,
            bearer_token: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            rate_limit: default_rate(),
            max_attempts: default_attempts(),
            deadline_secs: default_deadline(),
            timeout_secs: default_timeout(),
            concurrency: default_concurrency(),
        }
    }
}

#[derive(Clone)]
enum Auth {
    None,
    Basic(String, Secret),
    Bearer(Secret),
}

#[derive(Clone)]
pub struct RegistryClient {
    base: reqwest::Url,
    http: reqwest::Client,
    auth: Auth,
    limiter: Arc<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
    max_attempts: u32,
    deadline: Duration,
    /// Told of every attempt's answer, retry and rate-limit wait (metrics).
    observer: Progress,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryClient({})", self.base)
    }
}

fn read_file(p: &PathBuf, what: &str) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(p)
        .map_err(|e| RegistryError::Config(format!("reading the {what} {}: {e}", p.display())))
}

impl RegistryClient {
    pub fn new(s: &RegistrySettings) -> Result<Self, RegistryError> {
        let mut base = reqwest::Url::parse(s.url.trim_end_matches('/'))
            .map_err(|e| RegistryError::Config(format!("registry URL is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(RegistryError::Config(format!(
                "registry URL scheme {} is not http or https",
                base.scheme()
            )));
        }
        let mut auth = Auth::None;
        if !base.username().is_empty() {
            let user = base.username().to_string();
            let pw = base.password().unwrap_or_default().to_string();
            auth = Auth::Basic(user, Secret::new(pw));
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        match (&s.username, &s.password, &s.bearer_token) {
            (Some(u), Some(p), None) => auth = Auth::Basic(u.clone(), p.clone()),
            (None, None, Some(t)) => auth = Auth::Bearer(t.clone()),
            (None, None, None) => {}
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(RegistryError::Config(
                    "basic auth needs both a username and a password".into(),
                ));
            }
            _ => {
                return Err(RegistryError::Config(
                    "give basic auth or a bearer token, not both".into(),
                ));
            }
        }
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(s.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("kar/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &s.ssl_ca_location {
            let cert = reqwest::Certificate::from_pem(&read_file(ca, "registry CA")?)
                .map_err(|e| RegistryError::Config(format!("registry CA {}: {e}", ca.display())))?;
            b = b.add_root_certificate(cert);
        }
        match (&s.ssl_certificate_location, &s.ssl_key_location) {
            (Some(c), Some(k)) => {
                let id = reqwest::Identity::from_pkcs8_pem(
                    &read_file(c, "client certificate")?,
                    &read_file(k, "client key")?,
                )
                .map_err(|e| {
                    RegistryError::Config(format!(
                        "client certificate {} / key {}: {e}",
                        c.display(),
                        k.display()
                    ))
                })?;
                b = b.identity(id);
            }
            (None, None) => {}
            _ => {
                return Err(RegistryError::Config(
                    "mutual TLS needs both a client certificate and its key".into(),
                ));
            }
        }
        let http = b
            .build()
            .map_err(|e| RegistryError::Config(format!("HTTP client: {e}")))?;
        let rate = NonZeroU32::new(s.rate_limit.max(1)).expect("at least 1");
        let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(1).expect("1"));
        Ok(RegistryClient {
            base,
            http,
            auth,
            limiter: Arc::new(RateLimiter::direct(quota)),
            in_flight: Arc::new(Semaphore::new(s.concurrency.max(1))),
            max_attempts: s.max_attempts.max(1),
            deadline: Duration::from_secs(s.deadline_secs.max(1)),
            observer: Progress::default(),
        })
    }

    /// This client, telling `observer` of every request's attempts (see [`Event::RegistryAnswer`]).
    pub fn observed_by(mut self, observer: Progress) -> RegistryClient {
        self.observer = observer;
        self
    }

    /// Who is told of this client's requests: workflows tell it what they did through it.
    pub fn observer(&self) -> &Progress {
        &self.observer
    }

    /// The same registry seen through one context's base path (`/contexts/{context}`, Confluent's
    /// and AxonOps'): subjects, IDs, configs and modes of that context. Rate limit and
    /// concurrency are shared with this client.
    pub fn in_context(&self, context: &str) -> RegistryClient {
        let mut c = self.clone();
        let path = format!(
            "{}/contexts/{}",
            self.base.path().trim_end_matches('/'),
            path_segment(context)
        );
        c.base.set_path(&path);
        c
    }

    /// The base URL, without credentials.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// GET, parsed as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RegistryError> {
        self.request(Method::GET, path, None).await
    }

    /// GET of a JSON list. Some registries answer an empty list with `null` (AxonOps does, for
    /// `GET /subjects` on an empty registry): that is an empty list too.
    pub async fn get_list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, RegistryError> {
        Ok(self.get::<Option<Vec<T>>>(path).await?.unwrap_or_default())
    }

    /// GET of a JSON list, with `None` for 404 and an empty list for `null`.
    pub async fn get_list_opt<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<Vec<T>>, RegistryError> {
        Ok(self
            .get_opt::<Option<Vec<T>>>(path)
            .await?
            .map(Option::unwrap_or_default))
    }

    /// GET, with `None` for 404.
    pub async fn get_opt<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, RegistryError> {
        match self.request(Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(RegistryError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Any method with an optional JSON body, parsed as `T`.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, RegistryError> {
        // Errors name the registry with the endpoint (a proxy's HTML page must still say whose it
        // is); the base URL holds no credentials.
        let url = format!("{}{}", self.base_url(), path);
        let endpoint = url.clone();
        let started = Instant::now();
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempts = 0u32;
        let template = endpoint_template(self.base.path(), path);
        loop {
            attempts += 1;
            self.wait_for_rate_limit().await;
            let permit = self
                .in_flight
                .acquire()
                .await
                .expect("semaphore never closed");
            let mut req = self.http.request(method.clone(), &url).header(
                "Accept",
                "application/vnd.schemaregistry.v1+json, application/json",
            );
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                    .json(b);
            }
            req = match &self.auth {
                Auth::None => req,
                Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
                Auth::Bearer(t) => req.bearer_auth(t.expose()),
            };
            let sent = Instant::now();
            let outcome = req.send().await;
            drop(permit);
            self.observer.event(Event::RegistryAnswer {
                method: method.as_str(),
                endpoint: &template,
                status: outcome.as_ref().ok().map(|r| r.status().as_u16()),
                seconds: sent.elapsed().as_secs_f64(),
            });
            let (last, retry_after) = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let bytes = resp.bytes().await.map_err(|e| RegistryError::BadReply {
                            method: method.clone(),
                            endpoint: endpoint.clone(),
                            detail: format!("reading the body: {e}"),
                        })?;
                        // 204 No Content (Confluent's DEK deletions): a JSON null.
                        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
                        return serde_json::from_slice(bytes).map_err(|e| {
                            RegistryError::BadReply {
                                method: method.clone(),
                                endpoint: endpoint.clone(),
                                detail: e.to_string(),
                            }
                        });
                    }
                    let retry_after = retry_after(resp.headers());
                    let text = resp.text().await.unwrap_or_default();
                    let (error_code, message) = registry_error(&text);
                    if !retryable(status) {
                        return Err(RegistryError::Http {
                            method,
                            endpoint,
                            status: status.as_u16(),
                            error_code,
                            message,
                        });
                    }
                    (format!("HTTP {}: {message}", status.as_u16()), retry_after)
                }
                // Connection refused or reset, timeouts: worth another try.
                Err(e) => (transport_error(&e), None),
            };
            let wait =
                retry_after.unwrap_or_else(|| delays.next().unwrap_or(Duration::from_secs(10)));
            if attempts >= self.max_attempts || started.elapsed() + wait > self.deadline {
                return Err(RegistryError::GaveUp {
                    method,
                    endpoint,
                    attempts,
                    seconds: started.elapsed().as_secs_f64(),
                    last,
                });
            }
            tracing::debug!(%endpoint, attempts, ?wait, "registry request failed, retrying: {last}");
            self.observer.event(Event::RegistryRetry {
                wait_seconds: wait.as_secs_f64(),
            });
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for the rate limit, telling how long when it held the request back.
    async fn wait_for_rate_limit(&self) {
        if self.limiter.check().is_ok() {
            return;
        }
        let waited = Instant::now();
        self.limiter.until_ready().await;
        self.observer.event(Event::RateLimited {
            seconds: waited.elapsed().as_secs_f64(),
        });
    }
}

/// The endpoint of `path` under the base path `base`, without what varies: every segment after
/// one naming a collection (subjects, versions, IDs, contexts, KEKs, DEKs, configs, modes) is
/// replaced by that collection's placeholder, and the query is dropped, so that metrics count
/// endpoints, not subjects.
pub fn endpoint_template(base: &str, path: &str) -> String {
    let full = format!("{}{}", base.trim_end_matches('/'), path);
    let full = full.split('?').next().unwrap_or_default();
    let mut out = String::new();
    let mut previous = "";
    for seg in full.split('/').filter(|s| !s.is_empty()) {
        let placeholder = match previous {
            "subjects" => Some("{subject}"),
            "versions" => Some("{version}"),
            "ids" | "guids" => Some("{id}"),
            "contexts" => Some("{context}"),
            "keks" => Some("{kek}"),
            "deks" => Some("{dek}"),
            "config" | "mode" => Some("{subject}"),
            _ => None,
        };
        out.push('/');
        out.push_str(placeholder.unwrap_or(seg));
        previous = if placeholder.is_some() { "" } else { seg };
    }
    if out.is_empty() { "/".into() } else { out }
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and read as 1 s).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(match v.trim().parse::<u64>() {
        Ok(s) => Duration::from_secs(s.min(300)),
        Err(_) => Duration::from_secs(1),
    })
}

/// The registry's `{"error_code": …, "message": …}`, or the body itself.
fn registry_error(body: &str) -> (Option<i64>, String) {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => (
            v.get("error_code").and_then(|c| c.as_i64()),
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| body.chars().take(300).collect()),
        ),
        Err(_) => (None, body.chars().take(300).collect()),
    }
}

/// A transport error without the URL (reqwest puts it in its messages; ours names the endpoint).
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    let mut src = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// A subject name as one URL path segment: subject names may hold any character, so everything
/// but unreserved characters is percent-encoded.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::endpoint_template;

    #[test]
    fn endpoints_are_counted_without_names_numbers_or_queries() {
        for (base, path, want) in [
            ("/", "/subjects", "/subjects"),
            (
                "/",
                "/subjects/orders-value/versions/3?deleted=true",
                "/subjects/{subject}/versions/{version}",
            ),
            (
                "/",
                "/subjects/a%2Fb/versions/latest/referencedby",
                "/subjects/{subject}/versions/{version}/referencedby",
            ),
            ("/", "/schemas/ids/7/versions", "/schemas/ids/{id}/versions"),
            ("/sr", "/mode/orders-value?force=true", "/sr/mode/{subject}"),
            ("/", "/config", "/config"),
            (
                "/contexts/.staging",
                "/subjects/x/versions",
                "/contexts/{context}/subjects/{subject}/versions",
            ),
            (
                "/",
                "/dek-registry/v1/keks/k1/deks/orders/versions/1",
                "/dek-registry/v1/keks/{kek}/deks/{dek}/versions/{version}",
            ),
            ("", "", "/"),
        ] {
            assert_eq!(endpoint_template(base, path), want, "{base} {path}");
        }
    }
}
