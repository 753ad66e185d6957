//! SQLite-specific behaviour beyond the conformance suite: errors at open time, several store
//! handles on one file (as several processes have), the busy timeout, wake-up coalescing, shutdown.

use serde_json::json;
use spooler_core::store::prelude::*;
use spooler_core::store::{JobClaim, JobFinish, Outcome};
use spooler_core::{NewJob, Store, StoreError};
use spooler_sqlite::{SqliteOptions, SqliteStore};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

async fn migrated(path: &Path) -> SqliteStore {
    let store = SqliteStore::open(&url(path)).expect("open");
    store.migrate().await.expect("migrate");
    store
}

fn claim(worker: &str, limit: u32) -> JobClaim {
    JobClaim {
        queues: vec!["default".into()],
        kinds: vec!["k".into()],
        limit,
        worker_id: worker.into(),
        lease: Duration::from_secs(30),
    }
}

mod open_errors {
    use super::*;

    #[test]
    fn missing_directory_names_the_directory() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("no-such-dir");
        let url = url(&missing.join("jobs.db"));
        match SqliteStore::open(&url) {
            Err(e @ StoreError::Open { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&url), "names the URL: {msg}");
                assert!(
                    msg.contains(&format!("does the directory {} exist?", missing.display())),
                    "names the directory: {msg}"
                );
            }
            other => panic!("expected Open, got {other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(
            &path,
            b"this is not a sqlite database, just some bytes\n".repeat(200),
        )
        .unwrap();
        match SqliteStore::open(&url(&path)) {
            Err(e @ StoreError::Open { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("file is not a database"), "{msg}");
                assert!(
                    msg.contains(&format!("is {} a SQLite database file?", path.display())),
                    "{msg}"
                );
            }
            other => panic!("expected Open, got {other:?}"),
        }
    }

    #[test]
    fn unknown_schemes_are_unsupported() {
        for url in ["mysql://root@127.0.0.1/jobs", "jobs.db", "sqlite://"] {
            match SqliteStore::open(url) {
                Err(e @ StoreError::UnsupportedUrl { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(url), "names the URL: {msg}");
                    assert!(
                        msg.contains("sqlite://PATH"),
                        "says what is expected: {msg}"
                    );
                }
                other => panic!("{url}: expected UnsupportedUrl, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_unmigrated_store_says_so() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&url(&path)).unwrap();
        let err = store.job_claim(&claim("w", 1)).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not migrated") && msg.contains("jobs.db"),
            "{msg}"
        );
        let err = store.job_get(1).await.unwrap_err();
        assert!(err.to_string().contains("not migrated"), "{err}");
    }

    #[tokio::test]
    async fn every_url_form_opens() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("a.db");
        for url in [
            format!("sqlite://{}", path.display()),
            format!("sqlite:{}", path.display()),
            "sqlite::memory:".to_string(),
            "sqlite://:memory:".to_string(),
        ] {
            let store = SqliteStore::open(&url).unwrap();
            store.migrate().await.unwrap();
            assert_eq!(store.describe(), url);
            assert_eq!(store.backend(), "sqlite");
        }
    }
}

/// Several handles on one file behave as several processes do: each has its own writer thread
/// and connection, and `BEGIN IMMEDIATE` serializes them.
mod shared_file {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claims_from_several_handles_never_share_a_job() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("jobs.db");
        let first = migrated(&path).await;
        let jobs: Vec<NewJob> = (0..2000)
            .map(|i| NewJob::new("k", json!({ "i": i })))
            .collect();
        first.job_insert_many(jobs).await.unwrap();
        let mut tasks = Vec::new();
        for h in 0..4 {
            let store = migrated(&path).await; // concurrent migrate is a no-op
            for w in 0..3 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = store
                            .job_claim(&claim(&format!("h{h}w{w}"), 25))
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
                        assert!(acks.iter().all(|a| *a));
                        mine.extend(got.iter().map(|j| j.id));
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
        assert_eq!(seen.len(), 2000);
        let queues = first.queue_list().await.unwrap();
        assert_eq!(queues[0].counts.completed, 2000);
    }

    #[tokio::test]
    async fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("jobs.db");
        migrated(&path).await;
        let store = SqliteStore::open_with(
            &url(&path),
            SqliteOptions {
                busy_timeout: Duration::from_millis(100),
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store
            .job_insert(&NewJob::new("k", json!({})))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // Reads go on beside the writer (WAL).
        assert!(store.job_get(1).await.unwrap().is_none());
        other.execute_batch("COMMIT").unwrap();
        store
            .job_insert(&NewJob::new("k", json!({})))
            .await
            .unwrap();
    }
}

mod writer {
    use super::*;

    #[tokio::test]
    async fn one_wakeup_per_queue_per_insert() {
        let store = SqliteStore::open("sqlite::memory:").unwrap();
        store.migrate().await.unwrap();
        let mut rx = store.subscribe();
        let jobs: Vec<NewJob> = (0..100)
            .map(|i| NewJob::new("k", json!({})).queue(if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        store.job_insert_many(jobs).await.unwrap();
        let mut queues = Vec::new();
        while let Ok(w) = rx.try_recv() {
            queues.push(w.queue);
        }
        queues.sort();
        assert_eq!(queues, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn a_failing_operation_does_not_undo_its_batch_neighbours() {
        let store = SqliteStore::open("sqlite::memory:").unwrap();
        store.migrate().await.unwrap();
        // Many concurrent operations share transactions; the failing ones fail alone.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    store.job_cancel(1_000_000 + i).await.map(|_| ())
                } else {
                    store
                        .job_insert(&NewJob::new("k", json!({ "i": i })))
                        .await
                        .map(|_| ())
                }
            }));
        }
        let mut failed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => {}
                Err(StoreError::JobNotFound { .. }) => failed += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(failed, 67);
        let queues = store.queue_list().await.unwrap();
        assert_eq!(queues[0].counts.available, 133);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_database() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("jobs.db");
        let store = migrated(&path).await;
        let clone = store.clone();
        store
            .job_insert(&NewJob::new("k", json!({})))
            .await
            .unwrap();
        assert!(clone.job_get(1).await.unwrap().is_some());
        drop(store);
        clone
            .job_insert(&NewJob::new("k", json!({})))
            .await
            .unwrap();
        drop(clone);
        // The last connection to close checkpoints and removes the WAL.
        let wal = dir.path().join("jobs.db-wal");
        assert!(
            !wal.exists(),
            "the writer and readers closed their connections"
        );
        let store = migrated(&path).await;
        assert_eq!(store.job_get(2).await.unwrap().unwrap().id, 2);
    }
}

mod checkpoints {
    use super::*;

    /// Checkpoints run beside the writer, which checkpoints itself only past four times SQLite's
    /// threshold: however the thread keeps up, the WAL stays bounded, every write lands, and
    /// closing the store (the checkpoint connection first) removes the WAL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_and_is_removed_at_close() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("wal.db");
        let wal = dir.path().join("wal.db-wal");
        let store = migrated(&path).await;
        // About 64 MiB of rows, sixteen times the writer's own threshold (4,000 pages of 4 KiB).
        let filler = "x".repeat(16 * 1024);
        let mut most = 0;
        for batch in 0..64 {
            let jobs: Vec<NewJob> = (0..64)
                .map(|i| NewJob::new("k", json!({ "batch": batch, "i": i, "filler": filler })))
                .collect();
            store.job_insert_many(jobs).await.unwrap();
            most = most.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        let bound = 2 * 4000 * 4096 + 64 * 20 * 1024;
        assert!(
            most > 0 && most < bound,
            "the WAL grew to {most} bytes (bound {bound})"
        );
        assert_eq!(
            store
                .job_count(&spooler_core::JobFilter::default())
                .await
                .unwrap(),
            64 * 64
        );
        drop(store);
        assert!(!wal.exists(), "the WAL outlived the store");
        let reopened = migrated(&path).await;
        assert_eq!(
            reopened
                .job_claim(&claim("w", 100))
                .await
                .unwrap()
                .jobs
                .len(),
            100
        );
    }
}

mod point_reads {
    use super::*;

    /// A job read by id runs on the caller's thread when a read connection is idle and on the
    /// blocking pool when none is: many readers at once, on both paths, each get their own job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_reads_at_once_each_answer_their_job() {
        let dir = TempDir::new().unwrap();
        let store = migrated(&dir.path().join("reads.db")).await;
        let jobs: Vec<NewJob> = (0..200)
            .map(|i| NewJob::new("k", json!({ "i": i })))
            .collect();
        let inserted = store.job_insert_many(jobs).await.unwrap();
        let mut reads = tokio::task::JoinSet::new();
        for (i, job) in inserted.iter().enumerate() {
            let (store, id) = (store.clone(), job.job.id);
            reads.spawn(async move {
                for _ in 0..20 {
                    let got = store.job_get(id).await.unwrap().expect("the job");
                    assert_eq!((got.id, got.args["i"].as_u64()), (id, Some(i as u64)));
                }
            });
        }
        while let Some(done) = reads.join_next().await {
            done.unwrap();
        }
        let missing = store.job_get(i64::MAX).await.unwrap();
        assert!(missing.is_none());
    }
}
