//! The next state of a running job, decided once: [`decide`] maps how an attempt ended (or that its
//! lease lapsed) and the facts of the job to the [`Transition`] a store writes.
//!
//! The executor and the rescuer both end attempts through this function, and stores call it inside
//! the transaction that writes the result, with the facts read under the (id, fence) of the claim: a
//! cancel asked for a moment before the write is seen, and no SQL statement derives a state itself.

use crate::job::AttemptError;
use crate::state::JobState;
use crate::store::Outcome;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// What the decision depends on besides the outcome, as stored at the moment of the write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The job's attempt (times its handler started, this run included).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Whether cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// The worker holding the lease, named in a "lease expired" error.
    pub worker_id: Option<String>,
}

impl From<&crate::job::JobRow> for Facts {
    /// The facts as the row holds them (for a claimed job: as the claim returned them).
    fn from(job: &crate::job::JobRow) -> Self {
        Self {
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            cancel_requested: job.cancel_requested,
            worker_id: job.worker_id.clone(),
        }
    }
}

/// What a store writes on a running job that ends an attempt: the lease is always cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new state; never `running`.
    pub state: JobState,
    /// A new `run_at` (when the job will run again); `None` keeps it.
    pub run_at: Option<DateTime<Utc>>,
    /// `finished_at`: set for the finished states, `None` otherwise.
    pub finished_at: Option<DateTime<Utc>>,
    /// An error entry to append to `errors`.
    pub error: Option<AttemptError>,
    /// The handler's result (written for `completed`; `None` clears it otherwise).
    pub result: Option<Value>,
    /// A new `max_attempts` (one more after a snooze or an interrupted run, which spend no
    /// attempt); `None` keeps it.
    pub max_attempts: Option<i32>,
    /// A new `attempt` (one less after a release: the handler never started); `None` keeps it.
    pub attempt: Option<i32>,
}

impl Outcome {
    /// Whether [`decide`] reads [`Facts`] for this outcome. A store decides the others (a
    /// completion above all) from the lease alone, without reading the job first, with
    /// `Facts::default()`.
    pub fn reads_facts(&self) -> bool {
        !matches!(self, Outcome::Completed { .. } | Outcome::Cancelled { .. })
    }
}

/// The message kept when a lease lapsed.
pub fn lease_expired_message(worker_id: Option<&str>) -> String {
    format!(
        "lease expired (worker {} stopped renewing it)",
        worker_id.unwrap_or("unknown")
    )
}

/// The next state of a running job whose attempt ended with `outcome`, given its `facts`, at `now`.
///
/// - A success completes it, keeping the result; a non-retryable error fails it; a cancel cancels it.
/// - An error that may be retried (a handler's `Retry`, a panic, a timeout, a lapsed lease) keeps
///   the error and runs again at the backoff's `at` (`scheduled`, or `available` when due), unless
///   the attempts are spent (`failed`) or cancellation was asked for (`cancelled`).
/// - A snooze or an interrupted run spends no attempt (`max_attempts` + 1) and runs again at its
///   time; a release (the handler never started) gives the attempt back (`attempt` − 1) and runs
///   again now; each unless cancellation was asked for (`cancelled`).
pub fn decide(outcome: &Outcome, facts: &Facts, now: DateTime<Utc>) -> Transition {
    let error = |message: &str| {
        Some(AttemptError {
            attempt: facts.attempt,
            at: now,
            message: message.to_string(),
        })
    };
    let end = |state: JobState, error: Option<AttemptError>| Transition {
        state,
        run_at: None,
        finished_at: Some(now),
        error,
        result: None,
        max_attempts: None,
        attempt: None,
    };
    let again =
        |at: DateTime<Utc>, error: Option<AttemptError>, max_attempts: Option<i32>| Transition {
            state: if at > now {
                JobState::Scheduled
            } else {
                JobState::Available
            },
            run_at: Some(at),
            finished_at: None,
            error,
            result: None,
            max_attempts,
            attempt: None,
        };
    let retry = |message: &str, at: DateTime<Utc>| {
        if facts.cancel_requested {
            end(JobState::Cancelled, error(message))
        } else if facts.attempt >= facts.max_attempts {
            end(JobState::Failed, error(message))
        } else {
            again(at, error(message), None)
        }
    };
    // A snooze or an interrupted run started the handler: the attempt counts, one more is allowed.
    let spend_none = |at: DateTime<Utc>| {
        if facts.cancel_requested {
            end(JobState::Cancelled, None)
        } else {
            again(at, None, Some(facts.max_attempts.saturating_add(1)))
        }
    };
    match outcome {
        Outcome::Completed { result } => Transition {
            result: result.clone(),
            ..end(JobState::Completed, None)
        },
        Outcome::Failed { error: message } => end(JobState::Failed, error(message)),
        Outcome::Cancelled { .. } => end(JobState::Cancelled, None),
        Outcome::Retry { error: message, at } => retry(message, *at),
        Outcome::LeaseExpired { at } => {
            retry(&lease_expired_message(facts.worker_id.as_deref()), *at)
        }
        Outcome::Snoozed { until } => spend_none(*until),
        Outcome::Interrupted => spend_none(now),
        // The handler never started: the attempt the claim counted is given back.
        Outcome::Released if facts.cancel_requested => end(JobState::Cancelled, None),
        Outcome::Released => Transition {
            attempt: Some((facts.attempt - 1).max(0)),
            ..again(now, None, None)
        },
    }
}

impl crate::store::JobRescue {
    /// The rescue of a job of `kind` in `queue` whose lease lapsed, with `facts` read under the
    /// fence at `now`: [`Outcome::LeaseExpired`] after the job's backoff, as [`decide`] finds.
    pub fn decide(&self, queue: &str, kind: &str, facts: &Facts, now: DateTime<Utc>) -> Transition {
        let at = self.retry.retry_at(queue, kind, facts.attempt, now);
        decide(&Outcome::LeaseExpired { at }, facts, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn facts(attempt: i32, max_attempts: i32, cancel_requested: bool) -> Facts {
        Facts {
            attempt,
            max_attempts,
            cancel_requested,
            worker_id: Some("w1".into()),
        }
    }

    fn later() -> DateTime<Utc> {
        now() + TimeDelta::seconds(16)
    }

    fn every_outcome() -> Vec<Outcome> {
        vec![
            Outcome::Completed {
                result: Some(serde_json::json!(1)),
            },
            Outcome::Failed { error: "e".into() },
            Outcome::Cancelled { reason: "r".into() },
            Outcome::Retry {
                error: "e".into(),
                at: later(),
            },
            Outcome::Retry {
                error: "e".into(),
                at: now(),
            },
            Outcome::LeaseExpired { at: later() },
            Outcome::Snoozed { until: later() },
            Outcome::Released,
            Outcome::Interrupted,
        ]
    }

    #[test]
    fn every_decision_is_a_transition_the_state_machine_allows() {
        for outcome in every_outcome() {
            for (attempt, max) in [(1, 1), (1, 3), (3, 3)] {
                for cancel in [false, true] {
                    let t = decide(&outcome, &facts(attempt, max, cancel), now());
                    assert!(
                        JobState::Running.can_transition(t.state),
                        "{outcome:?} -> {t:?}"
                    );
                    assert_eq!(t.finished_at.is_some(), t.state.is_finished(), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn retry_with_attempts_left_waits_for_the_backoff_and_keeps_the_error() {
        let t = decide(
            &Outcome::Retry {
                error: "boom".into(),
                at: later(),
            },
            &facts(1, 3, false),
            now(),
        );
        assert_eq!(t.state, JobState::Scheduled);
        assert_eq!(t.run_at, Some(later()));
        assert_eq!(t.error.as_ref().unwrap().message, "boom");
        assert_eq!(t.error.unwrap().attempt, 1);
        let due = decide(
            &Outcome::Retry {
                error: "boom".into(),
                at: now(),
            },
            &facts(1, 3, false),
            now(),
        );
        assert_eq!(due.state, JobState::Available);
    }

    #[test]
    fn retry_of_the_last_attempt_fails_with_the_error() {
        let t = decide(
            &Outcome::Retry {
                error: "boom".into(),
                at: later(),
            },
            &facts(3, 3, false),
            now(),
        );
        assert_eq!(t.state, JobState::Failed);
        assert_eq!(t.finished_at, Some(now()));
        assert_eq!(t.error.unwrap().message, "boom");
    }

    #[test]
    fn a_cancel_asked_during_the_run_wins_over_running_again() {
        for outcome in [
            Outcome::Retry {
                error: "boom".into(),
                at: later(),
            },
            Outcome::LeaseExpired { at: later() },
            Outcome::Snoozed { until: later() },
            Outcome::Released,
            Outcome::Interrupted,
        ] {
            let t = decide(&outcome, &facts(1, 3, true), now());
            assert_eq!(t.state, JobState::Cancelled, "{outcome:?}");
            assert_eq!((t.max_attempts, t.attempt), (None, None), "{outcome:?}");
        }
        // An error is still kept: the attempt failed before it was cancelled.
        let t = decide(
            &Outcome::LeaseExpired { at: later() },
            &facts(1, 3, true),
            now(),
        );
        assert!(t.error.unwrap().message.contains("lease expired"));
    }

    #[test]
    fn a_success_or_a_final_error_ignores_the_cancel_request() {
        let done = decide(
            &Outcome::Completed { result: None },
            &facts(1, 3, true),
            now(),
        );
        assert_eq!(done.state, JobState::Completed);
        let failed = decide(
            &Outcome::Failed { error: "x".into() },
            &facts(1, 3, true),
            now(),
        );
        assert_eq!(failed.state, JobState::Failed);
    }

    #[test]
    fn a_lapsed_lease_names_the_worker_and_applies_the_backoff() {
        let t = decide(
            &Outcome::LeaseExpired { at: later() },
            &facts(1, 3, false),
            now(),
        );
        assert_eq!(t.state, JobState::Scheduled);
        assert_eq!(t.run_at, Some(later()));
        assert_eq!(
            t.error.unwrap().message,
            "lease expired (worker w1 stopped renewing it)"
        );
        let last = decide(
            &Outcome::LeaseExpired { at: later() },
            &facts(3, 3, false),
            now(),
        );
        assert_eq!(last.state, JobState::Failed);
        assert!(last.error.unwrap().message.contains("lease expired"));
    }

    #[test]
    fn a_snooze_or_an_interrupted_run_spends_no_attempt_and_a_release_gives_it_back() {
        let s = decide(
            &Outcome::Snoozed { until: later() },
            &facts(2, 3, false),
            now(),
        );
        assert_eq!(
            (s.state, s.max_attempts, s.run_at),
            (JobState::Scheduled, Some(4), Some(later()))
        );
        assert!(s.error.is_none());
        let i = decide(&Outcome::Interrupted, &facts(2, 3, false), now());
        assert_eq!(
            (i.state, i.max_attempts, i.attempt, i.run_at),
            (JobState::Available, Some(4), None, Some(now()))
        );
        // The handler of a released job never started: its attempt is given back, the limit kept,
        // so releases never push the backoff or the failure closer.
        let r = decide(&Outcome::Released, &facts(2, 3, false), now());
        assert_eq!(
            (r.state, r.max_attempts, r.attempt, r.run_at),
            (JobState::Available, None, Some(1), Some(now()))
        );
    }

    #[test]
    fn completion_keeps_the_result_and_outcomes_that_read_no_facts_need_none() {
        let t = decide(
            &Outcome::Completed {
                result: Some(serde_json::json!({"ok": true})),
            },
            &Facts::default(),
            now(),
        );
        assert_eq!(t.result, Some(serde_json::json!({"ok": true})));
        for outcome in every_outcome() {
            if !outcome.reads_facts() {
                assert_eq!(
                    decide(&outcome, &facts(2, 2, true), now()),
                    decide(&outcome, &Facts::default(), now()),
                    "{outcome:?}"
                );
            }
        }
    }
}
