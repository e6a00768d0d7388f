//! A fault-injecting HTTP proxy in front of a real registry: each request is either forwarded or
//! answered with the fault a policy picks (429 with Retry-After, 503, a dropped connection, or a
//! reply of the test's own). It records when each request came and its Authorization header.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// 503 with no body.
    Unavailable,
    /// The connection is closed without an answer.
    Drop,
    /// This status and JSON body.
    Reply(u16, String),
    /// Forwarded, with this path (and query) instead of the request's.
    Rewrite(String),
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::TooMany => "429",
            Fault::Unavailable => "503",
            Fault::Drop => "drop",
            Fault::Reply(..) => "reply",
            Fault::Rewrite(..) => "rewrite",
        }
    }
}

/// Decides, from the request's number (from 0), method, path and body, whether it gets a fault.
pub type Policy = dyn Fn(u32, &str, &str, &[u8]) -> Option<Fault> + Send + Sync;

pub struct HttpProxy {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<Instant>>>,
    /// The Authorization header of every request (empty when there was none).
    pub auth: Arc<Mutex<Vec<String>>>,
    pub faults: Arc<Mutex<BTreeMap<&'static str, u32>>>,
}

fn response(status: u16, reason: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub async fn http_proxy(
    target: String,
    policy: impl Fn(u32, &str, &str, &[u8]) -> Option<Fault> + Send + Sync + 'static,
) -> HttpProxy {
    let policy: Arc<Policy> = Arc::new(policy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let faults = Arc::new(Mutex::new(BTreeMap::new()));
    let (seen2, faults2, auth2) = (seen.clone(), faults.clone(), auth.clone());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (http, target, seen, faults, counter, auth, policy) = (
                http.clone(),
                target.clone(),
                seen2.clone(),
                faults2.clone(),
                counter.clone(),
                auth2.clone(),
                policy.clone(),
            );
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    buf.drain(..head_end + len);
                    seen.lock().unwrap().push(Instant::now());
                    auth.lock().unwrap().push(
                        head.lines()
                            .find_map(|l| {
                                l.strip_prefix("authorization: ")
                                    .or_else(|| l.strip_prefix("Authorization: "))
                            })
                            .unwrap_or_default()
                            .to_string(),
                    );
                    let mut parts = head.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or("GET").to_string(),
                        parts.next().unwrap_or("/").to_string(),
                    );
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let fault = policy(n, &method, &path, &body);
                    if let Some(f) = &fault {
                        *faults.lock().unwrap().entry(f.name()).or_default() += 1;
                    }
                    let reply = match fault {
                        Some(Fault::Drop) => return,
                        Some(Fault::TooMany) => response(
                            429,
                            "Too Many Requests",
                            "Retry-After: 1\r\n",
                            br#"{"error_code":42901,"message":"rate limited"}"#,
                        ),
                        Some(Fault::Unavailable) => response(503, "Service Unavailable", "", b""),
                        Some(Fault::Reply(status, body)) => {
                            response(status, "Refused", "", body.as_bytes())
                        }
                        forward @ (None | Some(Fault::Rewrite(_))) => {
                            let path = match forward {
                                Some(Fault::Rewrite(p)) => p,
                                _ => path,
                            };
                            let m = Method::from_bytes(method.as_bytes()).unwrap();
                            let mut req = http.request(m, format!("{target}{path}"));
                            if !body.is_empty() {
                                req = req
                                    .header(
                                        "Content-Type",
                                        "application/vnd.schemaregistry.v1+json",
                                    )
                                    .body(body);
                            }
                            let resp = req.send().await.unwrap();
                            let status = resp.status();
                            let bytes = resp.bytes().await.unwrap();
                            response(
                                status.as_u16(),
                                status.canonical_reason().unwrap_or(""),
                                "",
                                &bytes,
                            )
                        }
                    };
                    if sock.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    HttpProxy {
        addr,
        seen,
        auth,
        faults,
    }
}
