//! A TCP proxy between the workers and PostgreSQL that can partition the network: while
//! partitioned it silently stops forwarding — no RST, no FIN, it just stops reading and writing
//! on every connection (new ones are accepted by the kernel and then hang) — and when healed,
//! forwarding resumes where it stopped.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on 127.0.0.1 to `upstream`; stops (closing its connections) when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    partitioned: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (partitioned, gate) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut gate = gate.clone();
                connections.spawn(async move {
                    // A connection made during a partition hangs until it heals.
                    if !until(&mut gate, false).await {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, gate.clone()), pump(sr, cw, gate));
                });
                // Reap finished connections as we go.
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            partitioned,
            task,
        }
    }

    /// Stops forwarding on every connection, silently.
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Resumes forwarding.
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while not partitioned; a read or write under way when the partition
/// begins is abandoned (both are cancel-safe) and what was read is held until it heals.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut gate: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if !until(&mut gate, false).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            _ = until(&mut gate, true) => continue,
        };
        let mut sent = 0;
        while sent < n {
            if !until(&mut gate, false).await {
                return;
            }
            tokio::select! {
                wrote = to.write(&buf[sent..n]) => match wrote {
                    Ok(0) | Err(_) => return,
                    Ok(k) => sent += k,
                },
                _ = until(&mut gate, true) => {}
            }
        }
    }
}

/// Waits until the partition flag is `partitioned`; false once the proxy is gone.
async fn until(gate: &mut watch::Receiver<bool>, partitioned: bool) -> bool {
    gate.wait_for(|p| *p == partitioned).await.is_ok()
}
