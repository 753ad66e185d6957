//! The spooler-core conformance suite on PostgreSQL, each case on its own schema.
//!
//! Needs `SPOOLER_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it each
//! case prints that it was skipped. The case list is checked against the core suite's macro so a new
//! case cannot be forgotten here.

mod common;

/// Runs one conformance case, or says it was skipped.
macro_rules! pg_conformance {
    ($($case:ident),* $(,)?) => {
        /// The cases this file runs, in the core macro's order.
        const CASES: &[&str] = &[$(stringify!($case)),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(url) = common::url() else { return };
                spooler_core::testing::run_case(
                    move |clock| common::test_store(url, clock),
                    spooler_core::testing::$case,
                )
                .await;
            }
        )*
    };
}

pg_conformance!(
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
);

/// The core suite's macro lists its cases; this file must list the same ones (it cannot use the
/// macro itself because each case here first checks whether PostgreSQL is configured).
#[test]
fn case_list_matches_the_core_suite() {
    let core = include_str!("../../spooler-core/src/testing/mod.rs");
    let start = core
        .find("(@cases $make;")
        .expect("core macro lists its cases after `(@cases $make;`");
    let list = &core[start + "(@cases $make;".len()..];
    let list = &list[..list.find(");").expect("end of the case list")];
    let core_cases: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        CASES, core_cases,
        "tests/conformance.rs must run exactly the core suite's cases"
    );
}
