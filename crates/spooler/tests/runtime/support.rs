//! Test support: a fresh store per test (a SQLite file in a temp dir, or a Postgres schema),
//! and waiting on conditions with a deadline instead of sleeping.

use spooler::{Client, JobRow, JobState, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub struct Backend {
    pub store: Arc<dyn Store>,
    pub client: Client,
    cleanup: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = spooler::connect(&url).await.expect("open sqlite store");
        Self {
            client: Client::new(store.clone()),
            store,
            cleanup: None,
            _dir: Some(dir),
        }
    }

    /// A fresh schema on the server `SPOOLER_TEST_POSTGRES` names, or `None` (printed as skipped)
    /// when it is unset.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var("SPOOLER_TEST_POSTGRES") else {
            eprintln!(
                "skipped: SPOOLER_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            return None;
        };
        let options = spooler::postgres::PgOptions {
            schema: format!("spooler_rt_{:016x}", rand::random::<u64>()),
            ..Default::default()
        };
        let store = spooler::postgres::PgStore::connect_with(&url, options)
            .await
            .unwrap_or_else(|e| {
                panic!("SPOOLER_TEST_POSTGRES={url} is set but unusable: {e} (start Postgres or unset the variable)")
            });
        store.migrate().await.expect("migrate");
        let pg = store.clone();
        let store: Arc<dyn Store> = Arc::new(store);
        Some(Self {
            client: Client::new(store.clone()),
            store,
            cleanup: Some(Box::pin(async move {
                pg.drop_schema().await.expect("drop test schema");
            })),
            _dir: None,
        })
    }

    pub async fn cleanup(mut self) {
        if let Some(c) = self.cleanup.take() {
            c.await;
        }
    }
}

/// Waits up to `timeout` for `check` to return `Some`, polling every few milliseconds.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the job is in `state`.
pub async fn wait_state(client: &Client, id: i64, state: JobState, timeout: Duration) -> JobRow {
    eventually(&format!("job {id} to be {state}"), timeout, || async {
        let job = client.status(id).await.expect("status");
        (job.state == state).then_some(job)
    })
    .await
}

/// Fast maintenance so retries and rescues happen within test time.
pub fn fast_maintenance() -> spooler::maintenance::MaintenanceConfig {
    spooler::maintenance::MaintenanceConfig {
        interval: Duration::from_millis(50),
        leader_ttl: Duration::from_millis(500),
        ..Default::default()
    }
}
