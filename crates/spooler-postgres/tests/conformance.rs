//! The spooler-core conformance suite on PostgreSQL, each case on its own schema.
//!
//! Needs `SPOOLER_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it each
//! case prints that it was skipped. The cases come from the core suite's macro, its one list.

mod common;

use spooler_core::ManualClock;
use spooler_core::testing::TestStore;
use std::sync::Arc;

async fn make(clock: Arc<ManualClock>) -> TestStore {
    let url = common::url().expect("checked by the suite's condition");
    common::test_store(url, clock).await
}

spooler_core::conformance_suite!(make, if common::url().is_some());
