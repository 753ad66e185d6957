//! PostgreSQL-specific store tests: transactional enqueue, wake-ups through LISTEN/NOTIFY and the
//! listener's recovery, concurrent migrations and claims across store instances, the plans of the
//! claim and the finish, and connection errors. Each test uses its own schema and drops it.
//!
//! Needs `SPOOLER_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it the
//! tests that need a server print that they were skipped.

mod common;

use common::{
    connect, count_jobs, drop_schema, fresh_schema, fresh_store, one_connection_store, options, url,
};
use serde_json::json;
use spooler_core::store::prelude::*;
use spooler_core::{JobClaim, JobFinish, ManualClock, NewJob, Outcome, Store, SystemClock, Wakeup};
use spooler_postgres::PgStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Waits up to `within` for a wake-up naming `queue`.
async fn wakeup_for(rx: &mut broadcast::Receiver<Wakeup>, queue: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return false,
            Ok(Ok(w)) if w.queue == queue => return true,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("subscription closed: {e}"),
        }
    }
}

fn claim(queue: &str, kind: &str, limit: u32, worker: &str) -> JobClaim {
    JobClaim {
        queues: vec![queue.into()],
        kinds: vec![kind.into()],
        limit,
        worker_id: worker.into(),
        lease: Duration::from_secs(60),
    }
}

mod connecting {
    use super::*;
    use spooler_core::StoreError;
    use spooler_postgres::PgOptions;

    #[tokio::test]
    async fn postgres_unreachable_server_fails_fast_naming_host_and_port() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let started = std::time::Instant::now();
        let err = PgStore::connect_with(
            "postgres://me:hunter2@127.0.0.1:1/db",
            PgOptions {
                connect_timeout: Duration::from_secs(2),
                ..PgOptions::default()
            },
        )
        .await
        .expect_err("nothing listens on port 1");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.contains("is the server running"), "{text}");
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }

    #[tokio::test]
    async fn postgres_bad_schema_name_is_rejected_before_connecting() {
        let err = PgStore::connect("postgres://me@127.0.0.1:1/db?schema=a;drop")
            .await
            .expect_err("invalid schema");
        assert!(
            matches!(
                err,
                StoreError::InvalidInput {
                    field: "schema",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn postgres_schema_from_url_and_password_redacted_in_describe() {
        let Some(url) = url() else { return };
        let schema = fresh_schema("spurl");
        let sep = if url.contains('?') { '&' } else { '?' };
        let store = connect(&format!("{url}{sep}schema={schema}"), PgOptions::default()).await;
        assert_eq!(store.schema(), schema);
        assert_eq!(store.channel(), format!("{schema}_jobs"));
        store.migrate().await.unwrap();
        let ins = store
            .job_insert(&NewJob::new("k", json!({})))
            .await
            .unwrap();
        assert!(ins.job.id > 0);
        assert!(!store.describe().contains("hunter2"));
        drop_schema(&store).await;
    }

    /// `url` with `params` added to its query.
    fn with_params(url: &str, params: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{params}")
    }

    /// Whether this store's connections are encrypted, as the server sees its own session.
    async fn over_tls(store: &PgStore) -> bool {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// The server's certificate file, when the server has TLS on and the file is readable here
    /// (the test server runs on this machine); `None`, after saying so, otherwise.
    async fn server_certificate(url: &str) -> Option<String> {
        let plain = PgStore::connect(&with_params(url, "sslmode=disable"))
            .await
            .unwrap();
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(plain.pool())
            .await
            .unwrap();
        let file: String = sqlx::query_scalar("SHOW ssl_cert_file")
            .fetch_one(plain.pool())
            .await
            .unwrap();
        if ssl != "on" || std::fs::metadata(&file).is_err() {
            eprintln!(
                "skipped: the test server has no TLS (ssl = {ssl}) or {file} is not readable"
            );
            return None;
        }
        Some(file)
    }

    #[tokio::test]
    async fn postgres_sslmode_require_encrypts_and_disable_does_not() {
        let Some(url) = url() else { return };
        if server_certificate(&url).await.is_none() {
            return;
        }
        let tls = PgStore::connect(&with_params(&url, "sslmode=require")).await;
        assert!(over_tls(&tls.unwrap()).await, "sslmode=require");
        // The default is libpq's, prefer: TLS when the server offers it.
        assert!(
            over_tls(&PgStore::connect(&url).await.unwrap()).await,
            "prefer"
        );
        let plain = PgStore::connect(&with_params(&url, "sslmode=disable")).await;
        assert!(!over_tls(&plain.unwrap()).await, "sslmode=disable");
    }

    #[tokio::test]
    async fn postgres_verify_full_checks_the_certificate_against_the_host_named() {
        let Some(url) = url() else { return };
        let Some(cert) = server_certificate(&url).await else {
            return;
        };
        // The certificate names `localhost`, a self-signed one: trusted as the root given.
        if !url.contains("@127.0.0.1:") {
            eprintln!(
                "skipped: {url} does not name 127.0.0.1, which the test reaches as localhost"
            );
            return;
        }
        let named = url.replacen("@127.0.0.1:", "@localhost:", 1);
        let verified = PgStore::connect(&with_params(
            &named,
            &format!("sslmode=verify-full&sslrootcert={cert}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("verify-full to localhost: {e}"));
        assert!(over_tls(&verified).await);
        // The same certificate does not name 127.0.0.1: refused, saying where and why.
        let err = PgStore::connect(&with_params(
            &url,
            &format!("sslmode=verify-full&sslrootcert={cert}"),
        ))
        .await
        .expect_err("the certificate does not name 127.0.0.1");
        let text = err.to_string();
        assert!(text.contains("TLS to PostgreSQL at 127.0.0.1:"), "{text}");
        assert!(text.contains("verify-full"), "{text}");
        // Without the root, the self-signed certificate chains to no public CA.
        let err = PgStore::connect(&with_params(&named, "sslmode=verify-ca"))
            .await
            .expect_err("a self-signed certificate is not publicly trusted");
        assert!(err.to_string().contains("verify-ca"), "{err}");
    }

    #[tokio::test]
    async fn postgres_timeouts_in_the_url_are_applied() {
        let Some(url) = url() else { return };
        let store = PgStore::connect(&with_params(&url, "statement_timeout=250"))
            .await
            .unwrap();
        let set: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(set, "250ms");
        let slow = sqlx::query("SELECT pg_sleep(2)")
            .execute(store.pool())
            .await
            .expect_err("the statement outlives its timeout");
        assert!(slow.to_string().contains("statement timeout"), "{slow}");
        // A server that accepts the connection and never answers: the URL's connect_timeout holds.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let err = PgStore::connect(&format!(
            "postgres://me@127.0.0.1:{port}/db?connect_timeout=1&sslmode=disable"
        ))
        .await
        .expect_err("nobody answers");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        drop(silent);
        let bad = PgStore::connect("postgres://me@127.0.0.1:1/db?connect_timeout=soon")
            .await
            .expect_err("not a timeout");
        assert!(
            matches!(
                bad,
                StoreError::InvalidInput {
                    field: "connect_timeout",
                    ..
                }
            ),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn postgres_unknown_database_names_the_fix() {
        let Some(url) = url() else { return };
        let (base, _) = url.rsplit_once('/').expect("URL has a database");
        let err = PgStore::connect(&format!("{base}/spooler_no_such_db"))
            .await
            .expect_err("database does not exist");
        let text = err.to_string();
        assert!(text.contains("createdb"), "{text}");
    }
}

mod transactional {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rolled_back_enqueue_leaves_no_job() {
        let Some(url) = url() else { return };
        let store = fresh_store(&url, Arc::new(SystemClock)).await;
        let mut tx = store.pool().begin().await.unwrap();
        let ins = store
            .job_insert_tx(&mut tx, &[NewJob::new("k", json!({"in": "tx"}))])
            .await
            .unwrap();
        let id = ins[0].job.id;
        assert_eq!(
            store.job_get(id).await.unwrap(),
            None,
            "invisible before commit"
        );
        tx.rollback().await.unwrap();
        assert_eq!(store.job_get(id).await.unwrap(), None);
        assert!(
            store
                .job_claim(&claim("default", "k", 10, "w"))
                .await
                .unwrap()
                .jobs
                .is_empty()
        );
        drop_schema(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_committed_enqueue_wakes_another_process() {
        let Some(url) = url() else { return };
        // A second store on the same schema stands for another process with an idle worker.
        let (store, other) = store_pair(&url).await;
        let mut rx = other.subscribe();
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
        let ins = store
            .job_insert_tx(&mut tx, &[NewJob::new("k", json!({})).queue("txq")])
            .await
            .unwrap();
        assert!(
            !wakeup_for(&mut rx, "txq", Duration::from_millis(200)).await,
            "no wake-up before commit"
        );
        tx.commit().await.unwrap();
        assert!(
            wakeup_for(&mut rx, "txq", Duration::from_secs(5)).await,
            "wake-up at commit"
        );
        let got = other
            .job_claim(&claim("txq", "k", 10, "w"))
            .await
            .unwrap()
            .jobs;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, ins[0].job.id);
        drop_schema(&store).await;
    }
}

/// The queues woken before a wake-up for the queue `marker` arrives (within 5 s). Notifications
/// arrive in commit order, so everything committed before the marker was heard by then.
async fn heard_before_marker(rx: &mut broadcast::Receiver<Wakeup>) -> Vec<String> {
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let w = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the marker within 5s")
            .expect("subscription open");
        if w.queue == "marker" {
            return heard;
        }
        heard.push(w.queue);
    }
}

/// Records a worker as alive through `store`, as a worker process does when it starts: only then
/// do other processes send `NOTIFY` for their enqueues.
async fn register_worker(store: &PgStore, id: &str) {
    let now = chrono::Utc::now();
    store
        .worker_heartbeat(&spooler_core::WorkerInfo {
            id: id.to_string(),
            host: "test".into(),
            pid: std::process::id(),
            version: String::new(),
            queues: Default::default(),
            kinds: vec!["k".into()],
            running: 0,
            started_at: now,
            last_seen_at: now,
        })
        .await
        .unwrap();
}

/// A store on a fresh schema and a second one on the same schema, as two processes would hold,
/// each with its listener connected.
async fn store_pair(url: &str) -> (PgStore, PgStore) {
    let store = fresh_store(url, Arc::new(SystemClock)).await;
    let other = connect(url, options(store.schema(), Arc::new(SystemClock))).await;
    wait_listening(&store).await;
    wait_listening(&other).await;
    (store, other)
}

/// Waits until the store's listener is connected (it starts in the background at connect).
async fn wait_listening(store: &PgStore) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = store.listener_backend_pid() {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener did not connect within 10s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

mod wakeups {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_notifications_are_coalesced_per_queue() {
        let Some(url) = url() else { return };
        let (store, other) = store_pair(&url).await;
        register_worker(&other, "other").await;
        let mut rx = other.subscribe();
        let batch: Vec<NewJob> = (0..1000)
            .map(|i| NewJob::new("k", json!({ "i": i })).queue(if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        store.job_insert_many(batch).await.unwrap();
        // Notifications arrive in commit order: once the marker is heard, the batch's all were.
        store
            .job_insert(&NewJob::new("k", json!({})).queue("marker"))
            .await
            .unwrap();
        let mut heard = heard_before_marker(&mut rx).await;
        heard.sort();
        assert_eq!(
            heard,
            vec!["a", "b"],
            "one notification per queue for 1000 jobs"
        );
        drop_schema(&store).await;
    }

    /// A store's own enqueue wakes its workers once, directly: its `NOTIFY`, meant for other
    /// processes, is not heard back as a second wake-up (and a second, empty claim). A job enqueued
    /// in the caller's transaction has no direct wake-up and still wakes this store at commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_own_enqueue_wakes_this_store_once_and_others_by_notify() {
        let Some(url) = url() else { return };
        let (store, other) = store_pair(&url).await;
        register_worker(&store, "this").await;
        register_worker(&other, "other").await;
        let mut own = store.subscribe();
        let mut others = other.subscribe();
        for round in 0..3 {
            store
                .job_insert(&NewJob::new("k", json!({ "round": round })).queue("q1"))
                .await
                .unwrap();
            assert!(
                wakeup_for(&mut others, "q1", Duration::from_secs(5)).await,
                "the other store is woken by NOTIFY (round {round})"
            );
            // Sent after the first store's NOTIFY was delivered, so heard after any echo of it.
            other
                .job_insert(&NewJob::new("k", json!({})).queue("marker"))
                .await
                .unwrap();
            let heard = heard_before_marker(&mut own).await;
            assert_eq!(
                heard,
                vec!["q1"],
                "one wake-up per own enqueue (round {round})"
            );
        }
        let mut tx = store.pool().begin().await.unwrap();
        store
            .job_insert_tx(&mut tx, &[NewJob::new("k", json!({})).queue("txq")])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            wakeup_for(&mut own, "txq", Duration::from_secs(5)).await,
            "an enqueue in the caller's transaction wakes this store at commit"
        );
        drop_schema(&store).await;
    }

    /// With no worker in any other process there is no one to wake: enqueues send no `NOTIFY`.
    /// A worker that starts elsewhere is heard of within a second or two, and woken from then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_no_notify_until_another_process_runs_a_worker() {
        let Some(url) = url() else { return };
        let (store, other) = store_pair(&url).await;
        register_worker(&store, "this").await;
        let mut own = store.subscribe();
        let mut others = other.subscribe();
        store
            .job_insert(&NewJob::new("k", json!({})).queue("q1"))
            .await
            .unwrap();
        assert!(wakeup_for(&mut own, "q1", Duration::from_secs(1)).await);
        assert!(
            !wakeup_for(&mut others, "q1", Duration::from_millis(500)).await,
            "no NOTIFY while only this store's worker is alive"
        );
        register_worker(&other, "other").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            store
                .job_insert(&NewJob::new("k", json!({})).queue("q2"))
                .await
                .unwrap();
            if wakeup_for(&mut others, "q2", Duration::from_millis(200)).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the other process's worker was not woken within 5s of its first heartbeat"
            );
        }
        // A worker that stops (and says so) is not woken any more.
        other.worker_remove("other").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store
            .job_insert(&NewJob::new("k", json!({})).queue("q3"))
            .await
            .unwrap();
        // One more insert after the check expired is what makes the notifier look again.
        store
            .job_insert(&NewJob::new("k", json!({})).queue("q3"))
            .await
            .unwrap();
        assert!(
            !wakeup_for(&mut others, "q3", Duration::from_millis(500)).await,
            "no NOTIFY once the other worker is gone"
        );
        drop_schema(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_listener_killed_reconnects_and_wakeups_continue() {
        let Some(url) = url() else { return };
        let producer = fresh_store(&url, Arc::new(SystemClock)).await;
        let worker = connect(&url, options(producer.schema(), Arc::new(SystemClock))).await;
        let first_pid = wait_listening(&worker).await;
        register_worker(&worker, "worker").await;
        let mut rx = worker.subscribe();
        // Jobs keep arriving from the other store while the listener is killed.
        let feeder = {
            let producer = producer.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    producer
                        .job_insert(&NewJob::new("k", json!({ "i": i })).queue("live"))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        assert!(wakeup_for(&mut rx, "live", Duration::from_secs(5)).await);
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(first_pid)
            .fetch_one(producer.pool())
            .await
            .unwrap();
        assert!(killed, "listener backend {first_pid} terminated");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let second_pid = loop {
            match worker.listener_backend_pid() {
                Some(pid) if pid != first_pid => break pid,
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "listener did not reconnect in 10s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_ne!(second_pid, first_pid);
        assert!(worker.listener_reconnects() >= 1);
        // Everything received so far is stale; the next wake-ups must come from the new connection.
        while rx.try_recv().is_ok() {}
        assert!(
            wakeup_for(&mut rx, "live", Duration::from_secs(5)).await,
            "wake-ups continue after the listener reconnected"
        );
        feeder.abort();
        // Every job is still there to run.
        let mut claimed = 0;
        loop {
            let got = worker
                .job_claim(&claim("live", "k", 100, "w"))
                .await
                .unwrap()
                .jobs;
            if got.is_empty() {
                break;
            }
            claimed += got.len();
        }
        assert!(claimed > 0);
        drop_schema(&producer).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_half_open_listener_is_detected_and_replaced() {
        let Some(url) = url() else { return };
        let producer = fresh_store(&url, Arc::new(SystemClock)).await;
        // The worker reaches PostgreSQL through a proxy that can go silent without closing.
        let target = proxy::target_of(&url);
        let proxy = proxy::Proxy::start(&target).await;
        let proxied = proxy::rewrite(&url, proxy.port());
        let mut opts = options(producer.schema(), Arc::new(SystemClock));
        opts.listener_ping_interval = Duration::from_millis(300);
        opts.connect_timeout = Duration::from_secs(1);
        let worker = connect(&proxied, opts).await;
        let first_pid = wait_listening(&worker).await;
        register_worker(&worker, "worker").await;
        let mut rx = worker.subscribe();
        // Every connection open now stops forwarding in both directions but stays open.
        proxy.freeze_existing();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match worker.listener_backend_pid() {
                Some(pid) if pid != first_pid => break,
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "half-open listener not replaced within 10s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        producer
            .job_insert(&NewJob::new("k", json!({})).queue("after"))
            .await
            .unwrap();
        assert!(wakeup_for(&mut rx, "after", Duration::from_secs(5)).await);
        drop(worker);
        drop_schema(&producer).await;
    }
}

/// A TCP proxy for the half-open test: forwards bytes, and can stop forwarding on the connections
/// it already has without closing them (what a dead peer behind a NAT looks like).
mod proxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub struct Proxy {
        port: u16,
        frozen_below: Arc<AtomicU64>,
        next: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// `host:port` of the server in a `postgres://` URL.
    pub fn target_of(url: &str) -> String {
        let rest = url.split_once("://").unwrap().1;
        let authority = rest.split(['/', '?']).next().unwrap();
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:5432")
        }
    }

    /// The URL with its host and port replaced by the proxy's.
    pub fn rewrite(url: &str, port: u16) -> String {
        let target = target_of(url);
        let host_only = target.rsplit_once(':').unwrap().0.to_string();
        if url.contains(&target) {
            url.replacen(&target, &format!("127.0.0.1:{port}"), 1)
        } else {
            url.replacen(&host_only, &format!("127.0.0.1:{port}"), 1)
        }
    }

    impl Proxy {
        pub async fn start(target: &str) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let frozen_below = Arc::new(AtomicU64::new(0));
            let next = Arc::new(AtomicU64::new(1));
            let target = target.to_string();
            let (f, n) = (frozen_below.clone(), next.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(server) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    let id = n.fetch_add(1, Ordering::SeqCst);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pipe(cr, sw, id, f.clone()));
                    tokio::spawn(pipe(sr, cw, id, f.clone()));
                }
            });
            Proxy {
                port,
                frozen_below,
                next,
                task,
            }
        }

        pub fn port(&self) -> u16 {
            self.port
        }

        /// Connections made so far stop forwarding; new ones work.
        pub fn freeze_existing(&self) {
            self.frozen_below
                .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        id: u64,
        frozen_below: Arc<AtomicU64>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if id < frozen_below.load(Ordering::SeqCst) {
                // Swallow the bytes and keep both sockets open: a silent peer.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

mod migrations {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_migrations_one_migrates_all_start() {
        let Some(url) = url() else { return };
        let schema = fresh_schema("spmig");
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(connect(&url, options(&schema, Arc::new(SystemClock))).await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .map(|store| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.migrate().await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("every concurrent migrate succeeds");
        }
        let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM \"{schema}\".spooler_migrations ORDER BY version"
        )))
        .fetch_all(stores[0].pool())
        .await
        .unwrap();
        let expected: Vec<i64> = spooler_postgres::MIGRATIONS.iter().map(|m| m.0).collect();
        assert_eq!(versions, expected, "each migration recorded once");
        for store in &stores {
            let ins = store
                .job_insert(&NewJob::new("k", json!({})))
                .await
                .unwrap();
            assert!(ins.job.id > 0);
        }
        drop_schema(&stores[0]).await;
    }
}

mod claims {
    use super::*;
    use std::collections::HashSet;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_claims_across_stores_never_share_a_job() {
        let Some(url) = url() else { return };
        const JOBS: usize = 5_000;
        let first = fresh_store(&url, Arc::new(SystemClock)).await;
        let batch: Vec<NewJob> = (0..JOBS)
            .map(|i| NewJob::new("k", json!({ "i": i })))
            .collect();
        for chunk in batch.chunks(1000) {
            first.job_insert_many(chunk.to_vec()).await.unwrap();
        }
        let mut stores = vec![first.clone()];
        for _ in 1..4 {
            stores.push(connect(&url, options(first.schema(), Arc::new(SystemClock))).await);
        }
        let mut tasks = Vec::new();
        for (s, store) in stores.iter().enumerate() {
            for t in 0..3 {
                let store = store.clone();
                let worker = format!("s{s}t{t}");
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = store
                            .job_claim(&claim("default", "k", 25, &worker))
                            .await
                            .unwrap()
                            .jobs;
                        if got.is_empty() {
                            return mine;
                        }
                        let finishes: Vec<JobFinish> = got
                            .iter()
                            .map(|j| JobFinish {
                                lease: j.lease(),
                                outcome: Outcome::Completed { result: None },
                            })
                            .collect();
                        let acks = store.job_finish_many(&finishes).await.unwrap();
                        assert!(
                            acks.iter().all(|a| *a),
                            "every finish of a held claim is accepted"
                        );
                        mine.extend(got.into_iter().map(|j| j.id));
                    }
                }));
            }
        }
        let mut seen = HashSet::new();
        for t in tasks {
            for id in t.await.unwrap() {
                assert!(seen.insert(id), "job {id} claimed twice");
            }
        }
        assert_eq!(seen.len(), JOBS);
        let counts: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT state, count(*) FROM \"{}\".jobs GROUP BY state",
            first.schema()
        )))
        .fetch_all(first.pool())
        .await
        .unwrap();
        assert_eq!(counts, vec![("completed".to_string(), JOBS as i64)]);
        drop_schema(&first).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_claim_uses_the_partial_index_with_a_deep_backlog() {
        let Some(url) = url() else { return };
        let store = fresh_store(&url, Arc::new(ManualClock::new())).await;
        let schema = store.schema().to_string();
        // 20,000 available jobs in the claimed queue, as many in another, and finished history.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".jobs (queue, kind, args, state, max_attempts, run_at, created_at, finished_at)
             SELECT CASE WHEN g % 3 = 0 THEN 'other' ELSE 'default' END, 'k', '{{}}',
                    CASE WHEN g % 3 = 2 THEN 'completed' ELSE 'available' END, 25,
                    now() - (g || ' ms')::interval, now(),
                    CASE WHEN g % 3 = 2 THEN now() END
               FROM generate_series(1, 60000) g"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE \"{schema}\".jobs")))
            .execute(store.pool())
            .await
            .unwrap();
        // A producer claims from one queue; a claim may name several (each probed on the index).
        let mut from_two = claim("default", "k", 100, "w");
        from_two.queues.push("other".into());
        for asked in [claim("default", "k", 100, "w"), from_two] {
            let plan = store.explain_claim(&asked).await.unwrap();
            assert!(
                plan.contains("Index Scan using jobs_claim"),
                "claim uses the partial index:\n{plan}"
            );
            assert!(
                !plan.contains("Seq Scan on jobs"),
                "no sequential scan:\n{plan}"
            );
            assert!(
                !plan.contains("Bitmap"),
                "no bitmap scan (it would lose the index order):\n{plan}"
            );
            // The index scan feeds LockRows and the Limit with nothing sorted in between: the
            // backlog is never sorted (an outer sort orders at most `limit` rows per queue).
            let lines: Vec<&str> = plan.lines().collect();
            let scan = lines
                .iter()
                .position(|l| l.contains("Index Scan using jobs_claim"))
                .unwrap();
            let lock = lines[..scan]
                .iter()
                .rposition(|l| l.contains("LockRows"))
                .unwrap_or_else(|| panic!("LockRows above the index scan:\n{plan}"));
            assert!(
                lines[..lock].iter().any(|l| l.contains("Limit")),
                "a Limit above LockRows:\n{plan}"
            );
            assert!(
                !lines[lock..scan].iter().any(|l| l.contains("Sort")),
                "nothing sorted between the index scan and LockRows:\n{plan}"
            );
        }
        let got = store
            .job_claim(&claim("default", "k", 100, "w"))
            .await
            .unwrap()
            .jobs;
        assert_eq!(got.len(), 100);
        drop_schema(&store).await;
    }
}

mod plans {
    use super::*;

    /// Runs `sql` on the store's schema, which `{s}` names.
    async fn execute(store: &PgStore, sql: &str) {
        let sql = sql.replace("{s}", &format!("\"{}\"", store.schema()));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }

    /// A burst of 20,000 available jobs of kind `k`, written behind the store's back (no
    /// statistics are taken).
    async fn burst(store: &PgStore) {
        execute(
            store,
            "INSERT INTO {s}.jobs (queue, kind, args, state, max_attempts, run_at, created_at)
             SELECT 'default', 'k', '{}', 'available', 25, now(), now()
               FROM generate_series(1, 20000)",
        )
        .await;
    }

    /// A queue that sat empty (and was vacuumed so) and then ran a trickle of jobs must not keep
    /// plans made for an empty table: when a burst arrives, the claim and the finish walk their
    /// indexes instead of scanning and sorting the whole backlog on every call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_plans_made_on_an_empty_queue_still_use_the_indexes_when_it_is_deep() {
        let Some(url) = url() else { return };
        // One connection, so every statement below is prepared and planned on the one we inspect.
        let store = one_connection_store(&url).await;
        execute(&store, "VACUUM ANALYZE {s}.jobs_active").await;
        let empty_claim_plan = store
            .explain_claim(&claim("default", "k", 10, "w"))
            .await
            .unwrap();
        // A trickle: more runs of each statement than PostgreSQL's custom-plan trials (five).
        for i in 0..12 {
            store
                .job_insert_many(vec![NewJob::new("k", json!({ "i": i }))])
                .await
                .unwrap();
            let jobs = store
                .job_claim(&claim("default", "k", 10, "w"))
                .await
                .unwrap()
                .jobs;
            assert_eq!(jobs.len(), 1);
            let finishes: Vec<JobFinish> = jobs
                .iter()
                .map(|job| JobFinish {
                    lease: job.lease(),
                    outcome: Outcome::Completed { result: None },
                })
                .collect();
            assert_eq!(store.job_finish_many(&finishes).await.unwrap(), vec![true]);
        }
        // The burst, without a fresh ANALYZE (autovacuum may be off or behind).
        burst(&store).await;
        // The finish keeps one plan per connection too (a function's, as the claim's).
        let finish_plan = store.explain_finish().await.unwrap();
        // The claim keeps one plan per connection; it is the same whatever the statistics say.
        let claim_plan = store
            .explain_claim(&claim("default", "k", 10, "w"))
            .await
            .unwrap();
        for (what, plan) in [
            ("claim planned on the empty queue", &empty_claim_plan),
            ("claim", &claim_plan),
            ("finish", &finish_plan),
        ] {
            assert!(
                !plan.contains("Seq Scan on jobs_active"),
                "the {what} scans the whole queue:\n{plan}"
            );
        }
        assert!(
            claim_plan.contains("Index Scan using jobs_claim")
                && empty_claim_plan.contains("Index Scan using jobs_claim"),
            "the claim walks the claim index:\n{claim_plan}"
        );
        assert!(
            finish_plan.contains("Index Scan using jobs_active_pkey"),
            "the finish finds each job by its key:\n{finish_plan}"
        );
        drop_schema(&store).await;
    }

    /// Statistics taken while a deep queue had nothing running say that almost no job runs. The
    /// write of outcomes, planned then and kept for the connection's life, must still find each
    /// job by its key: walking the running jobs instead costs every finish all of them (a finish
    /// of 100 jobs with 400 running took 40 ms instead of 2).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_the_finish_finds_jobs_by_key_when_statistics_show_none_running() {
        let Some(url) = url() else { return };
        let store = one_connection_store(&url).await;
        burst(&store).await;
        execute(&store, "VACUUM ANALYZE {s}.jobs_active").await;
        let claimed = store
            .job_claim(&claim("default", "k", 400, "w"))
            .await
            .unwrap()
            .jobs;
        assert_eq!(claimed.len(), 400);
        let finish_plan = store.explain_finish().await.unwrap();
        assert!(
            finish_plan.contains("Index Scan using jobs_active_pkey")
                && !finish_plan.contains("jobs_running_lease"),
            "the finish finds each job by its key, not by walking the running ones:\n{finish_plan}"
        );
        drop_schema(&store).await;
    }
}

mod leadership {
    use super::*;
    use spooler_core::LeaderElect;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_leader_dies_and_another_process_takes_over() {
        let Some(url) = url() else { return };
        let clock = Arc::new(ManualClock::new());
        let a = fresh_store(&url, clock.clone()).await;
        let b = connect(&url, options(a.schema(), clock.clone())).await;
        let elect = |holder: &str| LeaderElect {
            name: "maintenance".into(),
            holder: holder.into(),
            ttl: Duration::from_secs(10),
        };
        assert!(a.leader_try_elect(&elect("a")).await.unwrap());
        assert!(!b.leader_try_elect(&elect("b")).await.unwrap());
        // `a` dies without resigning: its pool and listener go away.
        let schema_keeper = b.clone();
        drop(a);
        clock.advance(Duration::from_secs(11));
        assert!(
            b.leader_try_elect(&elect("b")).await.unwrap(),
            "b leads once a's lease lapses"
        );
        drop_schema(&schema_keeper).await;
    }
}

mod history {
    use super::*;
    use spooler_core::{Clock, JobPrune, JobState, StoreError};
    use std::collections::HashSet;

    /// How many jobs of `schema` each partition holds.
    async fn partition_counts(store: &PgStore) -> (i64, i64) {
        let schema = store.schema();
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (SELECT count(*) FROM \"{schema}\".jobs_active),
                    (SELECT count(*) FROM \"{schema}\".jobs_done)"
        )))
        .fetch_one(store.pool())
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_finished_jobs_leave_the_hot_partition_and_come_back_on_retry() {
        let Some(url) = url() else { return };
        let clock = Arc::new(ManualClock::new());
        let store = fresh_store(&url, clock.clone()).await;
        let jobs: Vec<NewJob> = (0..6)
            .map(|i| NewJob::new("k", json!({ "i": i })))
            .collect();
        let ids: Vec<i64> = store
            .job_insert_many(jobs)
            .await
            .unwrap()
            .iter()
            .map(|i| i.job.id)
            .collect();
        assert_eq!(partition_counts(&store).await, (6, 0));

        let got = store
            .job_claim(&claim("default", "k", 3, "w"))
            .await
            .unwrap()
            .jobs;
        let outcomes = [
            Outcome::Completed {
                result: Some(json!({"ok": true})),
            },
            Outcome::Failed {
                error: "broken".into(),
            },
            Outcome::Released,
        ];
        let finishes: Vec<JobFinish> = got
            .iter()
            .zip(outcomes)
            .map(|(j, outcome)| JobFinish {
                lease: j.lease(),
                outcome,
            })
            .collect();
        assert_eq!(
            store.job_finish_many(&finishes).await.unwrap(),
            vec![true; 3]
        );
        let cancelled = store.job_cancel(ids[5]).await.unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        // Completed, failed and cancelled moved out; the released job and two untouched stay.
        assert_eq!(partition_counts(&store).await, (3, 3));
        let completed = store.job_get(got[0].id).await.unwrap().unwrap();
        assert_eq!(completed.state, JobState::Completed);
        assert_eq!(completed.result, Some(json!({"ok": true})));
        let failed = store.job_get(got[1].id).await.unwrap().unwrap();
        assert_eq!(
            failed.errors.len(),
            1,
            "the attempt's error moved with the job"
        );

        // A late result for the finished job is still rejected once the row has moved.
        let late = store
            .job_finish_many(&[JobFinish {
                lease: got[0].lease(),
                outcome: Outcome::Completed { result: None },
            }])
            .await
            .unwrap();
        assert_eq!(late, vec![false]);

        // Retry brings the failed job back to the hot partition, where a claim finds it.
        let retried = store.job_retry(got[1].id).await.unwrap();
        assert_eq!(retried.state, JobState::Available);
        assert_eq!(partition_counts(&store).await, (4, 2));
        let again = store
            .job_claim(&claim("default", "k", 10, "w"))
            .await
            .unwrap()
            .jobs;
        let again: HashSet<i64> = again.iter().map(|j| j.id).collect();
        assert!(again.contains(&got[1].id), "the retried job is claimable");

        // Listing reads both partitions, newest first.
        let listed = store
            .job_list(&spooler_core::JobList {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let listed: Vec<i64> = listed.iter().map(|j| j.id).collect();
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(listed, expected);

        // Pruning deletes from the finished partition only.
        clock.advance(Duration::from_secs(60));
        let pruned = store
            .job_prune(&JobPrune {
                completed_before: Some(clock.now()),
                failed_before: Some(clock.now()),
                cancelled_before: Some(clock.now()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(pruned, 2);
        assert_eq!(partition_counts(&store).await, (4, 0));
        drop_schema(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_upgrade_from_version_1_keeps_every_job() {
        let Some(url) = url() else { return };
        let schema = fresh_schema("spup");
        let store = connect(&url, options(&schema, Arc::new(SystemClock))).await;
        // A schema as version 1 left it, with jobs in several states.
        let quoted = format!("\"{schema}\"");
        let (version, name, v1) = spooler_postgres::MIGRATIONS[0];
        assert_eq!(version, 1);
        let setup = format!(
            "CREATE SCHEMA {quoted};
             CREATE TABLE {quoted}.spooler_migrations (
                 version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL);
             {v1}
             INSERT INTO {quoted}.spooler_migrations VALUES (1, '{name}', now());
             INSERT INTO {quoted}.jobs (queue, kind, args, state, max_attempts, run_at, created_at,
                                        finished_at, unique_key)
             SELECT 'default', 'k', jsonb_build_object('g', g),
                    (ARRAY['available', 'completed', 'failed', 'scheduled'])[g % 4 + 1], 3,
                    now(), now(),
                    CASE WHEN g % 4 IN (1, 2) THEN now() END,
                    CASE WHEN g = 8 THEN 'held-key' END
               FROM generate_series(1, 400) g;",
            v1 = v1.replace("{schema}", &quoted)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
            .execute(store.pool())
            .await
            .unwrap();
        let before: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(sqlx::AssertSqlSafe(
            format!("SELECT id, state, args FROM {quoted}.jobs ORDER BY id"),
        ))
        .fetch_all(store.pool())
        .await
        .unwrap();

        store
            .migrate()
            .await
            .expect("version 2 applies over version 1");

        let after: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(sqlx::AssertSqlSafe(
            format!("SELECT id, state, args FROM {quoted}.jobs ORDER BY id"),
        ))
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(after, before, "every job kept with its id, state and args");
        assert_eq!(partition_counts(&store).await, (200, 200));
        let max_id = before.last().unwrap().0;
        let fresh = store
            .job_insert(&NewJob::new("k", json!({})))
            .await
            .unwrap();
        assert!(fresh.job.id > max_id, "new ids continue after the old ones");
        // The unique key of the migrated available job still holds.
        let dup = NewJob::new("k", json!({})).unique_key("held-key");
        let dup = store.job_insert(&dup).await.unwrap();
        assert!(dup.duplicate, "the migrated job still holds its unique key");
        assert_eq!(dup.job.id, 8);
        drop_schema(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_claims_racing_cancels_never_fail() {
        // Cancelling an available job moves its row to the finished partition; a claim that had
        // seen the row must skip it, not fail with "tuple to be locked was already moved".
        let Some(url) = url() else { return };
        const JOBS: i64 = 3_000;
        let store = fresh_store(&url, Arc::new(SystemClock)).await;
        let batch: Vec<NewJob> = (0..JOBS)
            .map(|i| NewJob::new("k", json!({ "i": i })))
            .collect();
        let first = store.job_insert_many(batch).await.unwrap()[0].job.id;
        let mut claimers = Vec::new();
        for t in 0..4 {
            let store = store.clone();
            claimers.push(tokio::spawn(async move {
                let mut done = 0;
                loop {
                    let got = store
                        .job_claim(&claim("default", "k", 10, &format!("w{t}")))
                        .await
                        .expect("a claim never fails because a row moved")
                        .jobs;
                    if got.is_empty() {
                        return done;
                    }
                    let finishes: Vec<JobFinish> = got
                        .iter()
                        .map(|j| JobFinish {
                            lease: j.lease(),
                            outcome: Outcome::Completed { result: None },
                        })
                        .collect();
                    let acks = store
                        .job_finish_many(&finishes)
                        .await
                        .expect("a finish never fails because a row moved");
                    done += acks.iter().filter(|a| **a).count() as i64;
                }
            }));
        }
        let mut cancellers = Vec::new();
        for c in 0..2 {
            let store = store.clone();
            cancellers.push(tokio::spawn(async move {
                let mut cancelled = 0;
                // Walk the ids from both ends so cancels meet the claimers mid-queue.
                for n in 0..JOBS / 2 {
                    let id = if c == 0 {
                        first + JOBS - 1 - n
                    } else {
                        first + n
                    };
                    match store.job_cancel(id).await {
                        Ok(job) if job.state == JobState::Cancelled => cancelled += 1,
                        Ok(_) => {}
                        Err(StoreError::InvalidState { .. }) => {}
                        Err(e) => panic!("cancel of job {id} failed: {e}"),
                    }
                }
                cancelled
            }));
        }
        let mut completed = 0;
        for t in claimers {
            completed += t.await.unwrap();
        }
        let mut cancelled = 0;
        for t in cancellers {
            cancelled += t.await.unwrap();
        }
        let (active, done) = partition_counts(&store).await;
        assert_eq!(active, 0, "nothing left unfinished");
        assert_eq!(done, JOBS);
        // A cancel of a running job only requests it; the job then completes.
        assert!(completed + cancelled >= JOBS, "{completed} + {cancelled}");
        drop_schema(&store).await;
    }
}

mod grouped_inserts {
    use super::*;

    /// Small enqueues arriving together are written as one statement; a job PostgreSQL refuses
    /// (a NUL character, which `jsonb` cannot hold) fails its own caller only, and every other
    /// caller's jobs are written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_refused_job_fails_only_its_own_caller() {
        let Some(url) = url() else { return };
        let store = fresh_store(&url, Arc::new(SystemClock)).await;
        let mut calls = tokio::task::JoinSet::new();
        for caller in 0..30 {
            let store = store.clone();
            calls.spawn(async move {
                let args = if caller == 7 {
                    json!({"text": "nul \u{0} here"})
                } else {
                    json!({"caller": caller})
                };
                let jobs = vec![NewJob::new("grouped", args.clone())];
                (caller, args, store.job_insert_many(jobs).await)
            });
        }
        let mut written = 0;
        while let Some(done) = calls.join_next().await {
            let (caller, args, answer) = done.unwrap();
            if caller == 7 {
                let err = answer.expect_err("PostgreSQL refuses a NUL in jsonb");
                assert!(
                    !matches!(err, spooler_core::StoreError::Unavailable { .. }),
                    "{err:?}"
                );
                continue;
            }
            let inserted = answer.unwrap_or_else(|e| panic!("caller {caller}: {e}"));
            let job = store.job_get(inserted[0].job.id).await.unwrap().unwrap();
            assert_eq!(job.args, args);
            written += 1;
        }
        assert_eq!(written, 29);
        assert_eq!(count_jobs(&store, "true").await, 29);
        drop_schema(&store).await;
    }
}

mod copied_batches {
    use super::*;

    /// A large batch is streamed with `COPY`: one job PostgreSQL refuses (a NUL character, which
    /// `jsonb` cannot hold) in the middle of it stores none of the batch, the caller is told (not
    /// as the store being unavailable), and the store's connections go on working: the same batch
    /// without that job is stored whole, on a pool of one connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_refused_job_stores_none_of_its_batch() {
        let Some(url) = url() else { return };
        let store = one_connection_store(&url).await;
        let mut jobs: Vec<NewJob> = (0..500)
            .map(|i| NewJob::new("copied", json!({ "i": i })))
            .collect();
        jobs[250].args = json!({"text": "nul \u{0} here"});
        let err = store
            .job_insert_many(jobs.clone())
            .await
            .expect_err("jsonb refuses a NUL");
        assert!(
            !matches!(err, spooler_core::StoreError::Unavailable { .. }),
            "{err:?}"
        );
        assert_eq!(count_jobs(&store, "true").await, 0);
        jobs[250].args = json!({ "i": 250 });
        let inserted = store.job_insert_many(jobs).await.unwrap();
        assert_eq!(inserted.len(), 500);
        assert_eq!(count_jobs(&store, "true").await, 500);
        for (i, ins) in inserted.iter().enumerate() {
            assert_eq!(ins.job.args, json!({ "i": i }));
        }
        drop_schema(&store).await;
    }
    /// A caller that gives up while its batch streams (its deadline passed) leaves all of the
    /// batch stored or none of it, and the connection it used goes on working.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_batch_given_up_midway_is_whole_or_absent() {
        let Some(url) = url() else { return };
        let store = one_connection_store(&url).await;
        let big: Vec<NewJob> = (0..50_000)
            .map(|i| NewJob::new("copied", json!({ "i": i, "pad": "x".repeat(64) })))
            .collect();
        for wait_ms in [5, 50, 200] {
            let _ = tokio::time::timeout(
                Duration::from_millis(wait_ms),
                store.job_insert_many(big.clone()),
            )
            .await;
        }
        let small: Vec<NewJob> = (0..200)
            .map(|i| NewJob::new("after", json!({ "i": i })))
            .collect();
        assert_eq!(store.job_insert_many(small).await.unwrap().len(), 200);
        assert_eq!(
            count_jobs(&store, "kind = 'copied'").await % 50_000,
            0,
            "whole batches only"
        );
        assert_eq!(count_jobs(&store, "kind = 'after'").await, 200);
        drop_schema(&store).await;
    }
}
