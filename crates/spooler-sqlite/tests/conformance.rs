//! The store conformance suite from `spooler-core`, run on a database file and on `:memory:`.

use spooler_core::ManualClock;
use spooler_core::Store;
use spooler_core::testing::TestStore;
use spooler_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

fn options(clock: Arc<ManualClock>) -> SqliteOptions {
    SqliteOptions {
        clock,
        ..SqliteOptions::default()
    }
}

/// Each case gets its own database file in its own temporary directory.
mod file {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> TestStore {
        let dir = tempfile::TempDir::new().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteStore::open_with(&url, options(clock)).expect("open");
        store.migrate().await.expect("migrate");
        TestStore {
            store: Arc::new(store),
            teardown: None,
            guard: Some(Box::new(dir)),
        }
    }

    spooler_core::conformance_suite!(make);
}

/// Each case gets its own private in-memory database.
mod memory {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> TestStore {
        let store = SqliteStore::open_with("sqlite::memory:", options(clock)).expect("open");
        store.migrate().await.expect("migrate");
        TestStore {
            store: Arc::new(store),
            teardown: None,
            guard: None,
        }
    }

    spooler_core::conformance_suite!(make);
}
