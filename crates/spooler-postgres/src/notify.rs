//! Wake-ups for other processes, sent after the commit that made jobs available.
//!
//! A `NOTIFY` inside the inserting transaction holds PostgreSQL's notification-queue lock through
//! that transaction's commit and WAL flush, so concurrent single-job enqueues would commit one at a
//! time (measured here with pgbench, 10 clients: 4,100 inserts/s with a NOTIFY in each against
//! 12,600 without). The store's own inserts therefore commit without one, and one task per store
//! sends the wake-ups afterwards: every queue named while a `NOTIFY` is in flight goes out in the
//! next one, in a transaction that does not wait for its WAL flush (it writes no data). Inserts in a
//! caller's transaction keep their `NOTIFY` inside it, delivered only if that transaction commits.
//!
//! A wake-up lost to a crash between the commit and the `NOTIFY` costs a poll interval, never a job.

use sqlx::PgPool;
use tokio::sync::mpsc;

/// One statement: notify each queue on the channel, committed without waiting for a WAL flush.
const NOTIFY_SQL: &str = "SELECT set_config('synchronous_commit', 'off', true),
        (SELECT count(pg_notify($1, q)) FROM unnest($2::text[]) AS q)";

/// The handle to the notifying task; the task ends when the handle is dropped.
pub(crate) struct Notifier {
    tx: mpsc::UnboundedSender<String>,
}

impl Notifier {
    /// Starts the task that notifies `channel` through connections of `pool`.
    pub(crate) fn spawn(pool: PgPool, channel: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // In the order they were named: wake-ups arrive in commit order.
                let mut queues = vec![first];
                while let Ok(queue) = rx.try_recv() {
                    if !queues.contains(&queue) {
                        queues.push(queue);
                    }
                }
                let sent = sqlx::query(NOTIFY_SQL)
                    .bind(&channel)
                    .bind(&queues)
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    // Workers of other processes fall back to polling for these queues.
                    tracing::warn!(channel = %channel, ?queues, error = %e, "cannot send wake-ups");
                }
            }
        });
        Self { tx }
    }

    /// Wakes other processes' workers of `queues` (this process's are woken directly).
    pub(crate) fn send(&self, queues: impl IntoIterator<Item = String>) {
        for queue in queues {
            // The task only stops with the store.
            let _ = self.tx.send(queue);
        }
    }
}
