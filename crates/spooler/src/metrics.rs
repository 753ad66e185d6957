//! The runtime's metrics, named and described in one place: counters and histograms recorded
//! through the `metrics` facade (exported by whatever recorder the application installs; the
//! server's `/metrics` is one), each with its HELP text.

/// Jobs enqueued (duplicates of a `unique_key` not counted), by queue and kind.
pub const JOBS_ENQUEUED: &str = "spooler_jobs_enqueued_total";
/// Jobs claimed by this process's workers, by queue.
pub const JOBS_CLAIMED: &str = "spooler_jobs_claimed_total";
/// Runs that ended, by queue, kind and outcome.
pub const JOBS_FINISHED: &str = "spooler_jobs_finished_total";
/// Outcomes the store rejected because the lease had been lost.
pub const JOBS_REJECTED: &str = "spooler_jobs_rejected_total";
/// How long runs took, by queue and kind.
pub const JOB_RUN_SECONDS: &str = "spooler_job_run_seconds";
/// How long jobs waited between becoming runnable and starting, by queue and kind.
pub const JOB_WAIT_SECONDS: &str = "spooler_job_wait_seconds";
/// Jobs this process is running now, by queue.
pub const JOBS_RUNNING: &str = "spooler_jobs_running";
/// Store calls of the worker that failed or timed out, by operation (claim, renew, record).
pub const STORE_ERRORS: &str = "spooler_store_errors_total";

/// Registers every metric's HELP text and unit with the installed recorder. Call once after
/// installing it (the server does); without it the metrics are exported without descriptions.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        JOBS_ENQUEUED,
        "Jobs enqueued, by queue and kind (a duplicate of a unique_key is not counted)."
    );
    describe_counter!(
        JOBS_CLAIMED,
        "Jobs claimed by this process's workers, by queue."
    );
    describe_counter!(
        JOBS_FINISHED,
        "Runs that ended, by queue, kind and outcome (completed, retried, failed, cancelled, snoozed, released, interrupted)."
    );
    describe_counter!(
        JOBS_REJECTED,
        "Outcomes the store rejected because the run had lost its lease (the job was another worker's by then)."
    );
    describe_histogram!(
        JOB_RUN_SECONDS,
        Unit::Seconds,
        "How long runs took, from the handler's start to its end, by queue and kind."
    );
    describe_histogram!(
        JOB_WAIT_SECONDS,
        Unit::Seconds,
        "How long jobs waited from becoming runnable (enqueued, or their run_at) to starting, by queue and kind, on the store's clock."
    );
    describe_gauge!(JOBS_RUNNING, "Jobs this process is running now, by queue.");
    describe_counter!(
        STORE_ERRORS,
        "Store calls of the worker that failed or got no answer in time, by operation (claim, renew, record)."
    );
}

/// Counts a failed or timed-out store call of the worker.
pub(crate) fn store_error(operation: &'static str) {
    metrics::counter!(STORE_ERRORS, "operation" => operation).increment(1);
}
