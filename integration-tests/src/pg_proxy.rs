//! A TCP proxy in front of PostgreSQL that can cut a connection at the worst moment: right
//! after the server committed a transaction, before the client hears so. The client sees a
//! lost connection during `COMMIT`, an unknown outcome, though the commit happened.
//!
//! It can also fall silent on the connections open at a moment, the way a server that went
//! away without closing them does (a failover, a restarted container behind NAT): their
//! sockets stay open, what the client sends is taken, and nothing ever comes back.
//!
//! Connect with `sslmode=disable`: the proxy reads the server's messages (type byte, length,
//! body) and has to see them in the clear.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
#[derive(Debug)]
pub struct PgProxy {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    /// Bumped to silence the connections open at that moment; dropped with the proxy, which
    /// closes the silenced ones.
    silence: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Commits still to cut.
    armed: AtomicUsize,
    /// Connections cut so far.
    cut: AtomicUsize,
}

impl PgProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let (silence, silenced) = tokio::sync::watch::channel(0);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let mut silenced = silenced.clone();
                silenced.mark_unchanged();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = relay(client, server, state, silenced).await;
                    }
                });
            }
        });
        Ok(Self { port, state, silence, accept })
    }

    /// Starts a proxy to the server of `url` (`postgres://user:password@host:port/database`,
    /// the host an IP address, as the harness gives it).
    pub async fn in_front_of(url: &str) -> anyhow::Result<Self> {
        let (_, tail) = url.rsplit_once('@').ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
        let (host, _) = tail.split_once('/').ok_or_else(|| anyhow::anyhow!("no database in {url}"))?;
        Self::start(host.parse()?).await
    }

    /// Falls silent on every connection open now: the server's side is closed, the
    /// client's stays open, and the client is never answered again (until the proxy is
    /// dropped). Connections made afterwards work.
    pub fn silence_open_connections(&self) {
        self.silence.send_modify(|epoch| *epoch += 1);
    }

    /// Cuts the connection of each of the next `count` commits, after the server committed.
    pub fn cut_next_commits(&self, count: usize) {
        self.state.armed.fetch_add(count, Ordering::SeqCst);
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// A database URL through the proxy, from one that goes straight to the server.
    pub fn url(&self, direct: &str) -> anyhow::Result<String> {
        let (head, tail) = direct.rsplit_once('@').ok_or_else(|| anyhow::anyhow!("no host in {direct}"))?;
        let (_, path) = tail.split_once('/').ok_or_else(|| anyhow::anyhow!("no database in {direct}"))?;
        let separator = if path.contains('?') { '&' } else { '?' };
        Ok(format!("{head}@127.0.0.1:{}/{path}{separator}sslmode=disable", self.port))
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    state: Arc<State>,
    mut silenced: tokio::sync::watch::Receiver<u64>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    // Server to client, message by message: type byte, then a length that counts itself.
    let downstream = async {
        loop {
            let mut header = [0; 5];
            server_read.read_exact(&mut header).await?;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut message = header.to_vec();
            message.resize(1 + length, 0);
            server_read.read_exact(&mut message[5..]).await?;
            if header[0] == b'C'
                && message[5..].starts_with(b"COMMIT\0")
                && state.armed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
            {
                state.cut.fetch_add(1, Ordering::SeqCst);
                return Ok::<(), std::io::Error>(()); // dropped: the client never hears it
            }
            client_write.write_all(&message).await?;
        }
    };
    let outcome = tokio::select! {
        outcome = downstream => outcome,
        Ok(()) = silenced.changed() => {
            // The client's reading half goes with the copy; its writing half keeps the
            // socket open, unanswered, until the proxy is dropped.
            upstream.abort();
            drop(server_read);
            while silenced.changed().await.is_ok() {}
            drop(client_write);
            return Ok(());
        }
    };
    upstream.abort();
    outcome
}
