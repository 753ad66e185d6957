//! Operations by filter: retry, cancel or delete every job matching a filter, run durably in
//! chunks, each chunk one transaction that also records how far the operation got.
//!
//! An operation covers the jobs that exist when it is created (ids up to `max_id`) and walks them
//! in id order; the cursor (`done_through`) is written in the same transaction as the chunk it
//! covers, so a process killed mid-way resumes exactly where the last commit left it, and no job
//! is acted on twice.

use crate::job::JobId;
use crate::state::JobState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The most rows one chunk of an operation touches (one transaction).
pub const MAX_CHUNK: u32 = 1000;

/// What an operation does to each matching job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Run again now, as a retry by hand does.
    Retry,
    /// Cancel; a running job is asked to stop.
    Cancel,
    /// Delete a job that is not running.
    Delete,
}

impl BulkAction {
    /// Every action.
    pub const ALL: [BulkAction; 3] = [BulkAction::Retry, BulkAction::Cancel, BulkAction::Delete];

    /// The lowercase name used in SQL, JSON and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
            BulkAction::Delete => "delete",
        }
    }

    /// Whether the action changes a job in `state`; a matching job in another state is skipped.
    /// The same rule as the one-job operations: retry moves scheduled and finished jobs (an
    /// available one needs nothing, a running one is not retried), cancel applies to unfinished
    /// jobs, delete to any job not running.
    pub const fn applies_to(self, state: JobState) -> bool {
        use JobState::*;
        match self {
            BulkAction::Retry => matches!(state, Scheduled | Completed | Failed | Cancelled),
            BulkAction::Cancel => matches!(state, Scheduled | Available | Running),
            BulkAction::Delete => !matches!(state, Running),
        }
    }

    /// The states [`BulkAction::applies_to`] accepts.
    pub fn states(self) -> Vec<JobState> {
        JobState::ALL
            .into_iter()
            .filter(|s| self.applies_to(*s))
            .collect()
    }
}

impl fmt::Display for BulkAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BulkAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BulkAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action \"{s}\" (expected retry, cancel or delete)"))
    }
}

/// Which jobs an operation (or a count) covers; every field left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Only this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// Only this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only jobs carrying this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Only jobs created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<DateTime<Utc>>,
    /// Only jobs created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<DateTime<Utc>>,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationState {
    /// Chunks remain.
    Running,
    /// Every covered job was visited.
    Completed,
    /// Stopped by request; the chunks already done stay done.
    Cancelled,
}

impl OperationState {
    /// The lowercase name used in SQL and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperationState::Running => "running",
            OperationState::Completed => "completed",
            OperationState::Cancelled => "cancelled",
        }
    }
}

impl FromStr for OperationState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            OperationState::Running,
            OperationState::Completed,
            OperationState::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown operation state \"{s}\""))
    }
}

/// An operation to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationNew {
    /// What to do.
    pub action: BulkAction,
    /// To which jobs.
    pub filter: JobFilter,
    /// Rows per chunk (at most [`MAX_CHUNK`]).
    pub chunk: u32,
}

/// An operation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Increasing id assigned at creation.
    pub id: i64,
    /// What it does.
    pub action: BulkAction,
    /// To which jobs.
    pub filter: JobFilter,
    /// Jobs matching the filter when it was created.
    pub matched: i64,
    /// Jobs it changed so far.
    pub affected: i64,
    /// Matching jobs it left alone so far (in a state the action does not apply to).
    pub skipped: i64,
    /// Where it is.
    pub state: OperationState,
    /// Rows per chunk.
    pub chunk: u32,
    /// The newest job it covers: the highest id when it was created.
    pub max_id: JobId,
    /// Every covered job with an id up to this one has been visited.
    pub done_through: JobId,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last advanced.
    pub updated_at: DateTime<Utc>,
    /// When it completed or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Operation {
    /// Whether chunks remain.
    pub fn is_running(&self) -> bool {
        self.state == OperationState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_apply_as_the_state_machine_allows() {
        for state in JobState::ALL {
            if BulkAction::Retry.applies_to(state) {
                assert!(state.can_transition(JobState::Available), "{state}");
            }
            if BulkAction::Cancel.applies_to(state) && state != JobState::Running {
                assert!(state.can_transition(JobState::Cancelled), "{state}");
            }
        }
        assert_eq!(
            BulkAction::Delete.states().len(),
            5,
            "everything but running"
        );
    }

    #[test]
    fn names_round_trip() {
        for a in BulkAction::ALL {
            assert_eq!(a.as_str().parse::<BulkAction>().unwrap(), a);
        }
        assert!("purge".parse::<BulkAction>().unwrap_err().contains("purge"));
        let f: JobFilter = serde_json::from_str(r#"{"queue": "q", "state": "failed"}"#).unwrap();
        assert_eq!(f.state, Some(JobState::Failed));
        assert!(serde_json::from_str::<JobFilter>(r#"{"queeu": "q"}"#).is_err());
    }
}
