//! The chaos suite's sink: a TCP listener the `tcp` jobs deliver to, counting each delivery of
//! each job (payload `chaos-N`, one line per connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// What the sink received.
#[derive(Debug, Default)]
struct Received {
    /// Deliveries per job number.
    deliveries: Mutex<HashMap<u64, u32>>,
    /// Connections that closed before a whole line arrived (a worker killed mid-write).
    partial: AtomicU64,
}

/// A TCP listener on 127.0.0.1 recording every delivery; stops when dropped.
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Received::default());
        let r = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors under a burst: wait a moment, keep serving.
                        eprintln!("chaos sink: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    let read = tokio::time::timeout(
                        Duration::from_secs(30),
                        stream.read_to_end(&mut bytes),
                    )
                    .await;
                    if !matches!(read, Ok(Ok(_))) {
                        r.partial.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    let text = String::from_utf8_lossy(&bytes);
                    if !text.ends_with('\n') {
                        r.partial.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut deliveries = r.deliveries.lock().unwrap();
                    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                        let number = line.trim().strip_prefix("chaos-");
                        if let Some(n) = number.and_then(|n| n.parse::<u64>().ok()) {
                            *deliveries.entry(n).or_default() += 1;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// Deliveries per job number so far.
    pub fn deliveries(&self) -> HashMap<u64, u32> {
        self.received.deliveries.lock().unwrap().clone()
    }

    /// Connections that ended without a whole line.
    pub fn partial(&self) -> u64 {
        self.received.partial.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
