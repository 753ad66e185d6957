//! Checkpoints off the writer's path: the writer commits and goes on, and a thread of its own
//! copies the WAL back into the database file once it has grown past [`NUDGE_PAGES`].
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
//! writer thread: every operation queued behind that commit waited for the copy and its fsyncs
//! (enqueue→start p99 at 2,000 jobs/s: 4.3–4.7 ms with it, 0.9 ms without). The writer's WAL hook
//! replaces it: past [`NUDGE_PAGES`] it nudges the checkpoint thread, and only past
//! [`WRITER_PAGES`] (the thread could not reach the WAL's end, or is stalled) does it checkpoint
//! itself, so the WAL stays bounded whatever happens to the thread. Checkpoints are `PASSIVE`:
//! they never wait for, or block, the writer or a reader (a `RESTART` would hold the writer out
//! while a slow reader finishes).

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};
use spooler_core::{StoreError, StoreResult};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

/// WAL pages after which the checkpoint thread is nudged: SQLite's own automatic threshold.
pub(crate) const NUDGE_PAGES: i32 = 1000;

/// WAL pages after which the writer checkpoints itself, as SQLite would. Under a steady load the
/// thread's checkpoints keep the WAL near [`NUDGE_PAGES`]; while the writer never pauses (a drain)
/// they cannot reach the WAL's end, and the writer's own then copies only what they left, in its
/// commit, so the next transaction starts the WAL again.
pub(crate) const WRITER_PAGES: i32 = 4 * NUDGE_PAGES;

enum Message {
    Nudge,
    Stop,
}

/// The checkpoint thread and the way to reach it. Dropping it stops the thread and waits for it,
/// so its connection is closed before the writer's (the last one, which removes the WAL).
pub(crate) struct Checkpointer {
    tx: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection to `path` for checkpoints, starts the thread, and installs on `writer`
    /// the WAL hook that nudges it (replacing SQLite's automatic checkpoint).
    pub(crate) fn start(
        writer: &mut Connection,
        path: &Path,
        label: &str,
        busy: Duration,
    ) -> StoreResult<Self> {
        let open_error = |message: String| StoreError::Open {
            url: label.to_string(),
            message,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(busy)?;
            // A connection learns that the file is in WAL mode when it first reads it; until
            // then a checkpoint does nothing.
            c.query_row("PRAGMA journal_mode", [], |_| Ok(()))?;
            Ok(c)
        })
        .map_err(|e| open_error(format!("cannot open the checkpoint connection: {e}")))?;
        // One nudge waits at most: a nudge sent while one is waiting adds nothing.
        let (tx, rx) = mpsc::sync_channel(1);
        let thread_label = label.to_string();
        let thread = std::thread::Builder::new()
            .name("spooler-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(conn, rx, &thread_label))
            .map_err(|e| open_error(format!("cannot start the checkpoint thread: {e}")))?;
        let nudge = tx.clone();
        writer
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= WRITER_PAGES {
                    // As SQLite's own hook: an error here would fail the commit's callers
                    // although the commit holds, so a checkpoint that cannot run is left to
                    // the next commit.
                    let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                } else if pages >= NUDGE_PAGES {
                    // Full: a nudge is waiting already. Disconnected: the store is closing.
                    let _ = nudge.try_send(Message::Nudge);
                }
                Ok(())
            }))
            .map_err(|e| open_error(format!("cannot install the WAL hook: {e}")))?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Waits for a nudge in the channel to be taken; the thread then reads the stop.
        let _ = self.tx.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint_loop(conn: Connection, rx: Receiver<Message>, label: &str) {
    while let Ok(Message::Nudge) = rx.recv() {
        match conn.wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE) {
            Ok(_) => {}
            // Another checkpoint holds the lock: the writer's own, past its limit, which copies
            // what this one would have.
            Err(e) if crate::error::is_busy(&e) => {
                tracing::debug!(
                    store = label,
                    "sqlite checkpoint skipped: the writer is checkpointing"
                );
            }
            Err(e) => {
                tracing::warn!(store = label, error = %e, "sqlite checkpoint failed; the writer checkpoints past the limit");
            }
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(store = label, error = %e, "closing the sqlite checkpoint connection failed");
    }
}
