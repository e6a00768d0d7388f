//! A TCP proxy in front of the real broker, to take the broker away from one client: `cut` closes
//! every connection through it and refuses new ones until `restore`. The broker's `OUTAGE`
//! listener (see `scripts/services`) advertises the proxy's address, so clients that bootstrap
//! through the proxy keep using it for every connection. With [`Faults`], it reads the Kafka
//! requests going through and answers some itself, as a broker whose group coordinator is not
//! ready does, or goes silent on the connection that carries a producer's records.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    up: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
}

/// Held by a test while it has a proxy on the OUTAGE listener's advertised address: one at a time.
pub async fn outage_port() -> tokio::sync::MutexGuard<'static, ()> {
    static PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    PORT.lock().await
}

/// Kafka's error codes of a group coordinator that cannot serve yet: loading the group's
/// partition of `__consumer_offsets` (a broker just started), or no longer the coordinator.
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const NOT_COORDINATOR: i16 = 16;

const OFFSET_FETCH: i16 = 9;
const PRODUCE: i16 = 0;
/// The request that adds a transaction's consumer offsets to it, sent to the group's coordinator.
pub const TXN_OFFSET_COMMIT: i16 = 28;

/// Answers the proxy gives itself: to each of the next OffsetFetch requests (v8 and later, what
/// librdkafka sends to Kafka 2.8+), a group-level error code, in order, instead of the broker's
/// answer.
/// Or: the connection that carries the next request of a kind goes silent.
#[derive(Clone, Default)]
pub struct Faults {
    offset_fetch: Arc<Mutex<VecDeque<i16>>>,
    answered: Arc<AtomicUsize>,
    /// 1 + the API key whose next request silences its connection (0: none).
    silence_key: Arc<AtomicI32>,
    /// Requests of that key let through before the one that silences.
    silence_skip: Arc<AtomicUsize>,
    silenced: Arc<AtomicUsize>,
    /// How long each Produce request is held before it goes on, in ms (0: not held).
    produce_delay_ms: Arc<AtomicUsize>,
}

impl Faults {
    pub fn arm(&self, codes: &[i16]) {
        self.offset_fetch.lock().unwrap().extend(codes);
    }

    /// The connection that carries the next Produce request (that one included) stops carrying
    /// anything either way, and stays open: a flow a firewall dropped, a peer that hangs.
    pub fn silence_next_produce(&self) {
        self.silence_after(PRODUCE, 0);
    }

    /// Like [`Faults::silence_next_produce`], for the request with API key `key` after the next
    /// `skip` ones.
    pub fn silence_after(&self, key: i16, skip: usize) {
        self.silence_skip.store(skip, Ordering::SeqCst);
        self.silence_key.store(i32::from(key) + 1, Ordering::SeqCst);
    }

    /// Every Produce request from now on is held `d` before it goes on to the broker (and the
    /// requests behind it on its connection with it): a link slow for a producer's batches.
    pub fn delay_produce(&self, d: std::time::Duration) {
        self.produce_delay_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    /// How long `frame` is held before it goes on.
    fn delay(&self, frame: &[u8]) -> Option<std::time::Duration> {
        let key = i16::from_be_bytes([frame[4], frame[5]]);
        let ms = self.produce_delay_ms.load(Ordering::SeqCst);
        (key == PRODUCE && ms > 0).then(|| std::time::Duration::from_millis(ms as u64))
    }

    /// Connections silenced so far.
    pub fn silenced(&self) -> usize {
        self.silenced.load(Ordering::SeqCst)
    }

    /// Whether `frame` is the request that silences its connection.
    fn silences(&self, frame: &[u8]) -> bool {
        let key = i16::from_be_bytes([frame[4], frame[5]]);
        if self.silence_key.load(Ordering::SeqCst) == i32::from(key) + 1
            && self
                .silence_skip
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return false;
        }
        let hit = self
            .silence_key
            .compare_exchange(i32::from(key) + 1, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if hit {
            self.silenced.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// Requests answered by the proxy so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// The proxy's answer to one request frame (size prefix included), if it answers it.
    fn answer(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let req = &frame[4..];
        let key = i16::from_be_bytes([req[0], req[1]]);
        let version = i16::from_be_bytes([req[2], req[3]]);
        if key != OFFSET_FETCH || version < 8 {
            return None;
        }
        let code = self.offset_fetch.lock().unwrap().pop_front()?;
        self.answered.fetch_add(1, Ordering::SeqCst);
        Some(offset_fetch_error(req, code))
    }
}

/// An OffsetFetch response (v8+, flexible) to `req` with `code` as its one group's error.
fn offset_fetch_error(req: &[u8], code: i16) -> Vec<u8> {
    // Request header v2: key, version, correlation ID, client ID (INT16 length), tagged fields.
    let id_len = i16::from_be_bytes([req[8], req[9]]).max(0) as usize;
    let mut at = 10 + id_len;
    let mut next = || {
        let (v, n) = uvarint(&req[at..]);
        at += n;
        v
    };
    assert_eq!(next(), 0, "tagged fields in a request header");
    // Body: Groups (compact array) whose first member starts with GroupId (compact string).
    assert!(next() >= 2, "an OffsetFetch without a group");
    let len = next() - 1;
    let group = &req[at..at + len];
    let mut b = req[4..8].to_vec(); // correlation ID
    b.push(0); // the response header's tagged fields
    b.extend_from_slice(&0i32.to_be_bytes()); // ThrottleTimeMs
    b.push(2); // Groups: one
    put_uvarint(&mut b, group.len() + 1);
    b.extend_from_slice(group);
    b.push(1); // Topics: none
    b.extend_from_slice(&code.to_be_bytes());
    b.push(0); // the group's tagged fields
    b.push(0); // the response's tagged fields
    let mut frame = (b.len() as i32).to_be_bytes().to_vec();
    frame.extend(b);
    frame
}

fn uvarint(b: &[u8]) -> (usize, usize) {
    let mut v = 0usize;
    for (i, byte) in b.iter().enumerate() {
        v |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("a truncated varint in a request");
}

fn put_uvarint(b: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
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
        TcpProxy::start_with(listen, upstream, None).await
    }

    /// A proxy that answers requests as `faults` says.
    pub async fn with_faults(listen: SocketAddr, upstream: SocketAddr, faults: Faults) -> TcpProxy {
        TcpProxy::start_with(listen, upstream, Some(faults)).await
    }

    async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: Option<Faults>,
    ) -> TcpProxy {
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
                            let up = for_pipes.clone();
                            match &faults {
                                None => tokio::spawn(pipe(client, upstream, up)),
                                Some(f) => tokio::spawn(framed(client, upstream, up, f.clone())),
                            };
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

/// A pipe that reads the client's requests one by one, to answer some of them itself.
async fn framed(
    client: TcpStream,
    upstream: SocketAddr,
    mut up: watch::Receiver<bool>,
    faults: Faults,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Responses from the broker and the proxy's own go to the client whole, one at a time.
    let to_client = Arc::new(tokio::sync::Mutex::new(to_client));
    let silent = Arc::new(AtomicBool::new(false));
    let down = {
        let (to_client, silent) = (to_client.clone(), silent.clone());
        async move {
            while let Some(frame) = read_frame(&mut from_server).await {
                if silent.load(Ordering::SeqCst) {
                    break;
                }
                if to_client.lock().await.write_all(&frame).await.is_err() {
                    return;
                }
            }
            // Silenced: the sockets stay open, nothing more goes through.
            std::future::pending::<()>().await
        }
    };
    let requests = async move {
        while let Some(frame) = read_frame(&mut from_client).await {
            if faults.silences(&frame) {
                silent.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await
            }
            if let Some(d) = faults.delay(&frame) {
                tokio::time::sleep(d).await;
            }
            let sent = match faults.answer(&frame) {
                Some(reply) => to_client.lock().await.write_all(&reply).await,
                None => to_server.write_all(&frame).await,
            };
            if sent.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = requests => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}

/// One Kafka frame (INT32 size, then that many bytes), size included; None at the end.
async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    r.read_exact(&mut size).await.ok()?;
    let n = usize::try_from(i32::from_be_bytes(size)).ok()?;
    let mut frame = vec![0; 4 + n];
    frame[..4].copy_from_slice(&size);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}
