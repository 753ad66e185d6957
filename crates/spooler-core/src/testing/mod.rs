//! The store conformance suite: every behaviour of [`Store`] written once, run by every backend.
//!
//! A backend's `tests/conformance.rs` calls [`conformance_suite!`](crate::conformance_suite) with an
//! async function that builds a fresh, migrated store (its own file or schema) on a [`ManualClock`].

mod claim;
mod coordination;
mod finish;
mod helpers;
mod insert;
mod limits;
mod maintenance;
mod manual;
mod operations;
mod read;
mod rescue;
mod routes;
mod schedules;
mod stats;
mod unique;

pub use claim::*;
pub use coordination::*;
pub use finish::*;
pub use insert::*;
pub use limits::*;
pub use maintenance::*;
pub use manual::*;
pub use operations::*;
pub use read::*;
pub use rescue::*;
pub use routes::*;
pub use schedules::*;
pub use stats::*;
pub use unique::*;

/// Each area file's source, so the suite can check that its list names every case it defines.
const SOURCES: &[(&str, &str)] = &[
    ("claim", include_str!("claim.rs")),
    ("coordination", include_str!("coordination.rs")),
    ("finish", include_str!("finish.rs")),
    ("insert", include_str!("insert.rs")),
    ("limits", include_str!("limits.rs")),
    ("maintenance", include_str!("maintenance.rs")),
    ("manual", include_str!("manual.rs")),
    ("operations", include_str!("operations.rs")),
    ("read", include_str!("read.rs")),
    ("rescue", include_str!("rescue.rs")),
    ("routes", include_str!("routes.rs")),
    ("schedules", include_str!("schedules.rs")),
    ("stats", include_str!("stats.rs")),
    ("unique", include_str!("unique.rs")),
];

/// Panics unless every area's list (`(area, names)`) names exactly the cases its file defines
/// (`pub async fn NAME(h: Harness)`), and every area is listed: a case cannot be left out.
pub fn check_case_lists(lists: &[(&str, &[&str])]) {
    let mut listed: Vec<&str> = lists.iter().map(|l| l.0).collect();
    listed.sort_unstable();
    let mut areas: Vec<&str> = SOURCES.iter().map(|s| s.0).collect();
    areas.sort_unstable();
    assert_eq!(listed, areas, "the suite runs every area file's cases");
    for (area, names) in lists {
        let source = SOURCES
            .iter()
            .find(|s| s.0 == *area)
            .map(|s| s.1)
            .unwrap_or("");
        let mut defined: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter(|l| l.contains("(h: Harness)"))
            .filter_map(|l| l.split('(').next())
            .collect();
        let mut names = names.to_vec();
        defined.sort_unstable();
        names.sort_unstable();
        assert_eq!(
            names, defined,
            "testing/{area}.rs: its macro must list exactly the cases the file defines"
        );
    }
}

use crate::{Clock, ManualClock, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A fresh store for one test, and what to do when the test ends.
pub struct TestStore {
    /// The store under test, migrated, driven by the clock it was made with.
    pub store: Arc<dyn Store>,
    /// Run after the test (drop a schema, remove a file); `None` when dropping is enough.
    pub teardown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Anything that must live as long as the store (a temporary directory).
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

/// What each case receives: the store and the clock that drives it.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Its clock; advance it to expire leases, reach run_at or pass retention.
    pub clock: Arc<ManualClock>,
}

impl Harness {
    /// Shorthand for the store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The current time on the store's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// Runs one case against a store made by `make`, then tears it down.
pub async fn run_case<M, F, C, CF>(make: M, case: C)
where
    M: FnOnce(Arc<ManualClock>) -> F,
    F: Future<Output = TestStore>,
    C: FnOnce(Harness) -> CF,
    CF: Future<Output = ()>,
{
    let clock = Arc::new(ManualClock::new());
    let TestStore {
        store,
        teardown,
        guard,
    } = make(clock.clone()).await;
    case(Harness {
        store: store.clone(),
        clock,
    })
    .await;
    drop(store);
    if let Some(teardown) = teardown {
        teardown.await;
    }
    drop(guard);
}

/// Generates one `#[tokio::test]` per conformance case for the store made by `$make`
/// (an `async fn(Arc<ManualClock>) -> TestStore`). Each area file lists its own cases in its
/// `__conformance_AREA!` macro, beside the cases, and a generated test checks every list against
/// the file (`check_case_lists`), so no backend can leave a case out. With `if COND`, each case first evaluates `COND` (a `bool`) and
/// returns at once when it is false: the backend is not configured, and `COND` says so.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!($make, if true);
    };
    ($make:path, if $cond:expr) => {
        $crate::__conformance_claim!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_coordination!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_finish!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_insert!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_limits!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_maintenance!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_manual!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_operations!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_read!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_rescue!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_routes!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_schedules!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_stats!(conformance_suite!(@cases $make, $cond));
        $crate::__conformance_unique!(conformance_suite!(@cases $make, $cond));

        #[test]
        fn conformance_lists_name_every_case() {
            $crate::testing::check_case_lists(&[
                $crate::__conformance_claim!(conformance_suite!(@names)),
                $crate::__conformance_coordination!(conformance_suite!(@names)),
                $crate::__conformance_finish!(conformance_suite!(@names)),
                $crate::__conformance_insert!(conformance_suite!(@names)),
                $crate::__conformance_limits!(conformance_suite!(@names)),
                $crate::__conformance_maintenance!(conformance_suite!(@names)),
                $crate::__conformance_manual!(conformance_suite!(@names)),
                $crate::__conformance_operations!(conformance_suite!(@names)),
                $crate::__conformance_read!(conformance_suite!(@names)),
                $crate::__conformance_rescue!(conformance_suite!(@names)),
                $crate::__conformance_routes!(conformance_suite!(@names)),
                $crate::__conformance_schedules!(conformance_suite!(@names)),
                $crate::__conformance_stats!(conformance_suite!(@names)),
                $crate::__conformance_unique!(conformance_suite!(@names)),
            ]);
        }
    };
    (@names; $area:literal; $($case:ident),* $(,)?) => {
        ($area, &[$(stringify!($case)),*] as &[&str])
    };
    (@cases $make:path, $cond:expr; $area:literal; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$cond {
                    return;
                }
                $crate::testing::run_case($make, $crate::testing::$case).await;
            }
        )*
    };
}
