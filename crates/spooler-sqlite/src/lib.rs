//! spooler-sqlite: the embedded default store for spooler — one SQLite file in WAL mode, written
//! by one batching writer thread; `sqlite::memory:` for tests and demos.
//!
//! ```no_run
//! # async fn demo() -> Result<(), spooler_core::StoreError> {
//! use spooler_core::Store;
//! let store = spooler_sqlite::SqliteStore::open("sqlite://jobs.db")?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```
//!
//! How it is fast and safe:
//! - every write goes to one writer thread, which runs whatever operations are queued (up to 256)
//!   in one `BEGIN IMMEDIATE` transaction, each in its own savepoint, and replies after the
//!   commit: concurrent claims, completions and inserts share one commit (group commit);
//! - `BEGIN IMMEDIATE` serializes writers across processes too, so several processes can share
//!   one file; the busy timeout bounds how long one waits for another;
//! - reads of a file database run on a small pool of read-only connections (WAL lets them run
//!   beside the writer); a `:memory:` database is private to its connection, so its reads go
//!   through the writer too;
//! - a partial index holds the available jobs of each queue in claim order, so a claim never
//!   sorts the backlog.
//!
//! Wake-ups reach this process's subscribers only (`cross_process_wakeups` is false): workers in
//! other processes poll.

mod checkpoint;
mod error;
mod job;
mod leader;
mod migrate;
mod operation;
mod queue;
mod schedule;
mod stats;
mod url;
mod worker;
mod writer;

pub use url::{SqliteTarget, parse_url};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use spooler_core::store::*;
use spooler_core::{Clock, StoreError, StoreResult, SystemClock};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use writer::{Ctx, Readers, Writer};

/// How a [`SqliteStore`] is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The clock the store reads "now" from; tests pass a `ManualClock`.
    pub clock: Arc<dyn Clock>,
    /// How long a write waits for another process's write transaction before failing with
    /// [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
    /// Read-only connections for reads of a file database (0: reads go through the writer).
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            busy_timeout: Duration::from_secs(30),
            read_connections: 4,
        }
    }
}

/// The SQLite [`Store`]. Cheap to clone: clones share the writer thread and the read pool; the
/// writer thread stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
}

/// The shared state behind every clone of a [`SqliteStore`].
#[derive(Debug)]
pub(crate) struct Db {
    // Fields drop in order: the read connections close before the writer's, so the writer's is
    // the last connection and checkpoints and removes the WAL when it closes.
    readers: Option<Arc<Readers>>,
    writer: Writer,
    wakeups: broadcast::Sender<Wakeup>,
    clock: Arc<dyn Clock>,
    url: String,
    /// The queues' stored defaults, read at most once a `QueueSettingsCache::MAX_AGE` by inserts
    /// and claims.
    pub(crate) settings: spooler_core::store::QueueSettingsCache,
}

impl Db {
    /// Runs `f` on the writer thread in a (shared) write transaction; see [`writer`].
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T, error::OpError> + Send + 'static,
    {
        self.writer.run(f).await
    }

    /// Runs `f`, a read of one row by its key, on a read connection: on the caller's thread when
    /// one is idle (see [`Readers::run_point`]).
    pub(crate) async fn read_point<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, error::OpError> + Send + 'static,
    {
        match &self.readers {
            Some(readers) => readers.run_point(f).await,
            None => self.writer.run(move |ctx| f(ctx.conn)).await,
        }
    }

    /// Runs `f` on a read connection (the writer's, for `:memory:`).
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, error::OpError> + Send + 'static,
    {
        match &self.readers {
            Some(readers) => readers.run(f).await,
            None => self.writer.run(move |ctx| f(ctx.conn)).await,
        }
    }
}

impl SqliteStore {
    /// The SQL that applies the migrations after version `after` (0: all) and records them as
    /// opening the store does, for users who run migrations with their own tool. Opens nothing.
    pub fn migration_script(after: i64) -> String {
        migrate::script(after)
    }

    /// Opens the store at `url` with default options. Does not migrate: call [`Store::migrate`].
    ///
    /// Accepts `sqlite://PATH` (`sqlite:///abs/path.db` for an absolute path), `sqlite:PATH`,
    /// `sqlite::memory:` and `sqlite://:memory:`. A missing directory or a file that is not a
    /// SQLite database is reported here, as [`StoreError::Open`].
    pub fn open(url: &str) -> StoreResult<Self> {
        Self::open_with(url, SqliteOptions::default())
    }

    /// Opens the store at `url` with `options`; see [`SqliteStore::open`].
    pub fn open_with(url: &str, options: SqliteOptions) -> StoreResult<Self> {
        let target = parse_url(url)?;
        let (mut conn, label, readers) = match &target {
            SqliteTarget::Memory => {
                let conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
                (conn, ":memory:".to_string(), None)
            }
            SqliteTarget::File(path) => {
                let label = path.display().to_string();
                let conn = open_file(url, path)?;
                let readers = (options.read_connections > 0).then(|| {
                    Arc::new(Readers::new(
                        path.clone(),
                        label.clone(),
                        options.busy_timeout,
                        options.read_connections,
                    ))
                });
                (conn, label, readers)
            }
        };
        configure(&conn, &target, options.busy_timeout).map_err(|e| {
            match error::map_sql(e, &label) {
                e @ StoreError::Open { .. } => e,
                other => StoreError::Open {
                    url: url.to_string(),
                    message: other.to_string(),
                },
            }
        })?;
        let checkpointer = match &target {
            SqliteTarget::File(path) => Some(checkpoint::Checkpointer::start(
                &mut conn,
                path,
                &label,
                options.busy_timeout,
            )?),
            SqliteTarget::Memory => None,
        };
        let (wakeups, _) = broadcast::channel(1024);
        let writer = Writer::start(
            conn,
            checkpointer,
            label,
            options.clock.clone(),
            wakeups.clone(),
        )?;
        Ok(Self {
            db: Arc::new(Db {
                writer,
                readers,
                wakeups,
                clock: options.clock,
                settings: Default::default(),
                url: url.to_string(),
            }),
        })
    }
}

/// Opens (creating if needed) the database file, explaining the usual failures.
fn open_file(url: &str, path: &Path) -> StoreResult<Connection> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(StoreError::Open {
            url: url.to_string(),
            message: format!(
                "unable to open database file (does the directory {} exist?)",
                dir.display()
            ),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        url: url.to_string(),
        message: format!("{e} ({})", path.display()),
    })
}

/// Sets the writer connection up: busy timeout, WAL, `synchronous=NORMAL`, caches. The first
/// statement that reads the file also tells a database from a file that is not one.
fn configure(conn: &Connection, target: &SqliteTarget, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(256);
    plan_once(conn)?;
    // Reads the header: fails with "file is not a database" on anything else.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    if let SqliteTarget::File(_) = target {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "sqlite did not switch to WAL mode");
        }
        // Truncate the WAL after checkpoints so it cannot grow for ever.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // The default page cache (2 MiB): a larger one makes every commit slower (the page cache is
    // scanned when a transaction ends) and the OS caches the file anyway.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Makes `conn` plan each cached statement once. Without the query planner stability guarantee
/// SQLite treats a bound `LIMIT` as a constant and prepares the statement again whenever it is
/// bound a different value: the claim, whose limit is the producer's free slots, was compiled
/// again on almost every call, an eighth of the writer's time in a drain.
pub(crate) fn plan_once(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cross_process_wakeups: false,
            transactional_enqueue: false,
        }
    }

    fn describe(&self) -> String {
        self.db.url.clone()
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.db
            .write(|ctx| migrate::migrate(ctx.conn, job::micros(ctx.now)))
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Wakeup> {
        self.db.wakeups.subscribe()
    }

    fn clock(&self) -> &dyn Clock {
        self.db.clock.as_ref()
    }
}
