//! A registry of a test's own: the same AxonOps binary `scripts/services` built, started on a free
//! port with an in-memory store, for tests that change global state (global configuration and
//! mode) which the shared registries' other tests depend on. Stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnRegistry {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn binary() -> std::path::PathBuf {
    if let Ok(b) = std::env::var("KAR_TEST_REGISTRY_BIN") {
        return b.into();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let gomod = std::fs::read_to_string(format!("{root}/scripts/registry/go.mod")).unwrap();
    let version = gomod
        .lines()
        .find_map(|l| l.strip_prefix("require github.com/axonops/axonops-schema-registry "))
        .expect("scripts/registry/go.mod pins the registry")
        .trim()
        .to_string();
    let cache = std::env::var("KAR_CACHE_DIR").unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
        format!("{base}/kar")
    });
    format!("{cache}/bin/axonops-schema-registry-{version}").into()
}

impl OwnRegistry {
    pub fn start() -> OwnRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  host: \"127.0.0.1\"\n  port: {port}\nstorage:\n  type: memory\ncompatibility:\n  default_level: BACKWARD\nlogging:\n  level: warn\n  format: text\n"
            ),
        )
        .unwrap();
        let bin = binary();
        let child = Command::new(&bin)
            .arg("-config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (run scripts/services up): {e}",
                    bin.display()
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let mut me = OwnRegistry {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers(port) {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("the test's own registry exited while starting: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the test's own registry did not start in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /subjects` answers 200 (a plain HTTP/1.0 request: the tests' HTTP client is async).
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /subjects HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}
