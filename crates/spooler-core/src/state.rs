//! The six job states and the transitions between them (drawn in `docs/state-machine.md`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waits for its `run_at` (a delay, or a retry's backoff).
    Scheduled,
    /// Runnable now; waits for a worker that handles its kind.
    Available,
    /// Claimed by a worker under a lease.
    Running,
    /// Finished successfully.
    Completed,
    /// Attempts exhausted or failed without retry: the dead-letter state.
    Failed,
    /// Cancelled before or while it ran.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lowercase name used in SQL, JSON and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for `completed`, `failed` and `cancelled`: nothing runs it again unless retried by hand.
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether a job may move from `self` to `to`. Stores enforce this in their statements;
    /// this function is the specification, and `docs/state-machine.md` draws it.
    pub const fn can_transition(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            // promotion when run_at arrives; manual retry runs it now; cancel
            (Scheduled, Available) | (Scheduled, Cancelled)
            // a worker claims it; cancel; a manual retry or a delay moves it back
            | (Available, Running) | (Available, Cancelled) | (Available, Scheduled)
            // the outcomes of an attempt, a snooze, a release or a rescue
            | (Running, Completed)
            | (Running, Scheduled)
            | (Running, Available)
            | (Running, Failed)
            | (Running, Cancelled)
            // manual retry of a finished job
            | (Completed, Available)
            | (Failed, Available)
            | (Cancelled, Available)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job state \"{s}\" (expected one of scheduled, available, running, completed, failed, cancelled)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        assert!("done".parse::<JobState>().unwrap_err().contains("done"));
    }

    #[test]
    fn finished_states_move_only_by_manual_retry() {
        for from in [Completed, Failed, Cancelled] {
            for to in JobState::ALL {
                assert_eq!(from.can_transition(to), to == Available, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn only_available_jobs_are_claimed() {
        for from in JobState::ALL {
            assert_eq!(from.can_transition(Running), from == Available, "{from}");
        }
    }

    #[test]
    fn a_running_job_can_reach_every_outcome() {
        for to in [Completed, Scheduled, Available, Failed, Cancelled] {
            assert!(Running.can_transition(to));
        }
        assert!(!Running.can_transition(Running));
    }
}
