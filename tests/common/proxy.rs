//! A TCP proxy in front of the real broker, to take the broker away from one client: `cut` closes
//! every connection through it and refuses new ones until `restore`. The broker's `OUTAGE`
//! listener (see `scripts/services`) advertises the proxy's address, so clients that bootstrap
//! through the proxy keep using it for every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    up: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
}

/// The broker's OUTAGE listener, and the address it advertises (where the proxy listens).
pub fn outage_addresses() -> (SocketAddr, SocketAddr) {
    let port = |var: &str, default: u16| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        SocketAddr::from(([127, 0, 0, 1], port("KAR_KAFKA_OUTAGE_PORT", 9096))),
        SocketAddr::from(([127, 0, 0, 1], port("KAR_KAFKA_OUTAGE_PROXY_PORT", 9097))),
    )
}

fn bind(at: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    // The port is bound again after every cut while old connections may linger in TIME_WAIT.
    s.set_reuseaddr(true)?;
    s.bind(at)?;
    s.listen(128)
}

impl TcpProxy {
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> TcpProxy {
        let (up, mut rx) = watch::channel(true);
        let accepted = Arc::new(AtomicUsize::new(0));
        // Bound here, so that the proxy accepts as soon as `start` returns.
        let mut first = Some(
            bind(listen)
                .unwrap_or_else(|e| panic!("the test proxy cannot listen on {listen}: {e}")),
        );
        let count = accepted.clone();
        let for_pipes = rx.clone();
        tokio::spawn(async move {
            loop {
                if rx.wait_for(|up| *up).await.is_err() {
                    return;
                }
                let listener = match first.take() {
                    Some(l) => l,
                    None => match bind(listen) {
                        Ok(l) => l,
                        Err(e) => panic!("the test proxy cannot listen on {listen} again: {e}"),
                    },
                };
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((client, _)) = r else { continue };
                            count.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(pipe(client, upstream, for_pipes.clone()));
                        }
                        r = rx.wait_for(|up| !*up) => {
                            if r.is_err() {
                                return;
                            }
                            break; // drops the listener: new connections are refused
                        }
                    }
                }
            }
        });
        TcpProxy { up, accepted }
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
    // Both sockets are dropped here: the client sees its connection closed.
}
