//! The store conformance suite: every behaviour of [`Store`] written once, run by every backend.
//!
//! A backend's `tests/conformance.rs` calls [`conformance_suite!`](crate::conformance_suite) with an
//! async function that builds a fresh, migrated store (its own file or schema) on a [`ManualClock`].

mod cases;
mod operations;

pub use cases::*;
pub use operations::*;

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
/// (an `async fn(Arc<ManualClock>) -> TestStore`). This macro holds the one list of cases, so a
/// backend cannot leave one out. With `if COND`, each case first evaluates `COND` (a `bool`) and
/// returns at once when it is false: the backend is not configured, and `COND` says so.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!($make, if true);
    };
    ($make:path, if $cond:expr) => {
        $crate::conformance_suite!(@cases $make, $cond;
            insert_and_get_round_trip,
            insert_in_the_future_is_scheduled,
            insert_many_assigns_increasing_ids,
            insert_rejects_invalid_fields,
            unique_key_returns_the_unfinished_job,
            get_unknown_is_none,
            claim_orders_by_priority_then_run_at_then_id,
            claim_respects_limit_queues_and_kinds,
            claim_sets_lease_and_counts_the_attempt,
            claim_skips_paused_queues,
            concurrent_claims_never_share_a_job,
            complete_is_fenced_by_the_attempt,
            finish_many_mixed_outcomes_in_one_call,
            retry_schedules_and_keeps_the_error,
            retry_due_now_is_available_at_once,
            failed_keeps_every_error,
            snooze_does_not_spend_an_attempt,
            release_makes_available_without_spending_an_attempt,
            rescue_expired_lease_and_reject_the_late_result,
            rescue_out_of_attempts_fails_the_job,
            rescue_applies_the_backoff,
            rescue_of_a_cancel_requested_job_cancels_it,
            retry_of_a_cancel_requested_job_cancels_it,
            snooze_or_release_of_a_cancel_requested_job_cancels_it,
            a_cancel_requested_job_that_succeeds_is_completed,
            retry_of_the_last_attempt_fails_the_job,
            extended_lease_is_not_rescued,
            cancel_by_state,
            retry_by_hand,
            delete_by_state,
            list_filters_and_pages_newest_first,
            queue_list_counts_and_oldest_wait,
            promote_only_due_jobs,
            prune_only_old_finished_jobs,
            leader_election_and_takeover,
            worker_registry,
            migrate_is_idempotent,
            subscribe_hears_own_inserts,
            // operations.rs
            operation_retries_matching_jobs_chunk_by_chunk,
            operation_skips_jobs_its_action_does_not_apply_to,
            job_count_filters_by_every_field,
            operation_cancel_stops_it_and_keeps_what_was_done,
            operation_retry_never_gives_two_unfinished_jobs_one_unique_key,
        );
    };
    (@cases $make:path, $cond:expr; $($case:ident),* $(,)?) => {
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
