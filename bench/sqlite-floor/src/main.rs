//! The floor of spooler's SQLite drain: the claim and completion statements the store runs, on the
//! table `spooler migrate` makes, in a bare loop with no runtime around them (one writer
//! connection, WAL, `synchronous=NORMAL`, temporary tables in memory and the query planner
//! stability guarantee as the store sets them, one transaction per claimed batch, each statement
//! in a savepoint as the writer thread runs it). Variants take one thing away at a time, to show
//! where the time goes.
//!
//! Usage: spooler migrate --store sqlite://floor.db
//!        cargo run --release --manifest-path bench/sqlite-floor/Cargo.toml -- \
//!            floor.db [N] [BATCH...] [--variant NAME]...
//!
//! Variants (all when none is given):
//! - `store`: the store's statements on the store's table;
//! - `list-completion`: the store's claim, and the completion it ran until stop 33: one
//!   statement over a JSON list of the batch's (id, fence, result), `RETURNING` id and queue;
//! - `returning-completion`: the store's, its completion `RETURNING` the job's queue (what it
//!   runs when a queue routes completed jobs);
//! - `lean-claim`: the claim index on `id` alone, the claim ordered by id with no queue or kind
//!   filter, returning only the id (what a claim costs without claim order and the full row);
//! - `lean-claim-per-id`: that claim, and the completion as one plain `UPDATE … WHERE id = ?`
//!   per job, as the plain loop does;
//! - `lean-claim-per-id-no-indexes`: that, with every other index of the table dropped;
//! - `plain`: the plain loop's own five-column table and statements (`../shared/bench/sqlite-raw`),
//!   run by this loop;
//! - `plain-wide`: the plain table with 19 more integer columns (24 in all, as the store's);
//! - `narrow`: the claim takes ids from a narrow table keyed by claim order (`DELETE … RETURNING`),
//!   reads each wide row by id and writes its lease in a narrow table; the completion deletes the
//!   lease (fenced) and writes the wide row once (the claim's steps count the take only);
//! - `narrow-outcome`: that, with the outcome inserted in a narrow table of its own, so the wide
//!   row is written only by the insert;
//! - `sql:FILE`: the store's statements, with FILE's SQL run on the filled copy first, for an
//!   experiment of one's own (`PRAGMA ignore_check_constraints = ON`, an index dropped, a table
//!   rebuilt), as `bench/postgres-floor` takes one.
//!
//! For each variant and batch size it copies the migrated file, fills it with N available jobs,
//! drains them and prints the time per job spent in claims, completions and commits, the
//! statements' virtual-machine steps per job, and
//! `RESULT sqlite-floor variant=V batch=B jobs_per_s=… us_per_job=…`.
use rusqlite::{Connection, StatementStatus, params};
use std::time::{Duration, Instant};

/// The 24 columns the store reads of a job, in its order (`fence` is the 22nd, index 21).
macro_rules! job_columns {
    () => {
        "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, \
         started_at, finished_at, timeout_ms, unique_key, tags, errors, result, lease_expires_at, \
         worker_id, routed_from, cancel_requested, fence, origin, meta"
    };
}

/// Where `fence` is among [`job_columns`].
const FENCE_COLUMN: usize = 21;

/// The claim statement of `spooler-sqlite` (`job/claim.rs`) for one queue and one kind.
const CLAIM: &str = concat!(
    "UPDATE spooler_jobs SET state = 'running', attempt = attempt + 1, \
     fence = fence + 1, started_at = ?1, lease_expires_at = ?2, worker_id = ?3 \
     WHERE id IN (SELECT id FROM (SELECT id, priority, run_at FROM spooler_jobs \
     WHERE state = 'available' AND queue = 'default' AND kind IN ('noop') \
     ORDER BY priority DESC, run_at, id LIMIT ?4)) RETURNING ",
    job_columns!()
);

/// The store's completion of one job (`END_SQL` in `job/finish.rs`): state, finish time and
/// result, fenced, acknowledged by the count of rows changed.
const STORE_COMPLETE: &str = "UPDATE spooler_jobs SET state = ?1, finished_at = ?2, result = ?3, \
    worker_id = NULL, lease_expires_at = NULL WHERE id = ?4 AND fence = ?5 AND state = 'running'";

/// The store's completion of one job, its queue read back.
const RETURNING_COMPLETE: &str = "UPDATE spooler_jobs SET state = ?1, finished_at = ?2, \
    result = ?3, worker_id = NULL, lease_expires_at = NULL \
    WHERE id = ?4 AND fence = ?5 AND state = 'running' RETURNING queue";

/// The completion of many jobs in one statement, as the store ran it until stop 33.
const COMPLETE_LIST: &str = "UPDATE spooler_jobs SET state = 'completed', finished_at = ?1, \
    result = f.value ->> 2, worker_id = NULL, lease_expires_at = NULL \
    FROM json_each(?2) AS f \
    WHERE spooler_jobs.id = f.value ->> 0 AND spooler_jobs.fence = f.value ->> 1 \
    AND spooler_jobs.state = 'running' RETURNING spooler_jobs.id, spooler_jobs.queue";

/// The claim without claim order or the full row.
const LEAN_CLAIM: &str = "UPDATE spooler_jobs SET state = 'running', attempt = attempt + 1, \
    fence = fence + 1, started_at = ?1, lease_expires_at = ?2, worker_id = ?3 \
    WHERE id IN (SELECT id FROM spooler_jobs WHERE state = 'available' ORDER BY id LIMIT ?4) \
    RETURNING id";

/// A completion per job, fenced as the store's.
const COMPLETE_ONE: &str = "UPDATE spooler_jobs SET state = 'completed', finished_at = ?1, \
    result = NULL, worker_id = NULL, lease_expires_at = NULL \
    WHERE id = ?2 AND fence = 1 AND state = 'running'";

/// The plain loop's claim and completion (`../shared/bench/sqlite-raw`); `?1`–`?3` are bound
/// and ignored, so every variant binds the same parameters.
const PLAIN_CLAIM: &str = "UPDATE jobs SET state = 'running' WHERE id IN (SELECT id FROM jobs \
    WHERE state = 'ready' ORDER BY id LIMIT ?4) AND ?1 IS NOT NULL AND ?2 IS NOT NULL \
    AND ?3 IS NOT NULL RETURNING id";
const PLAIN_COMPLETE: &str = "UPDATE jobs SET state = 'done', done_at = ?1 WHERE id = ?2";

/// The narrow design: the claim takes ids from a narrow table of claimable jobs (its key is the
/// claim order), reads the wide rows, and writes each lease in a narrow table; the wide row is
/// written once more, at the finish.
const NARROW_SCHEMA: &str = "DROP INDEX spooler_jobs_claim; \
    DROP INDEX spooler_jobs_lease; \
    CREATE TABLE spooler_claimable (queue TEXT NOT NULL, priority INTEGER NOT NULL, \
    run_at INTEGER NOT NULL, id INTEGER NOT NULL, kind TEXT NOT NULL, \
    PRIMARY KEY (queue, priority DESC, run_at, id)) WITHOUT ROWID; \
    CREATE TABLE spooler_leases (id INTEGER PRIMARY KEY, fence INTEGER NOT NULL, \
    started_at INTEGER NOT NULL, lease_expires_at INTEGER NOT NULL, worker_id TEXT NOT NULL); \
    CREATE INDEX spooler_leases_expiry ON spooler_leases (lease_expires_at);";
const NARROW_TAKE: &str = "DELETE FROM spooler_claimable WHERE (queue, priority, run_at, id) IN \
    (SELECT queue, priority, run_at, id FROM spooler_claimable WHERE queue = 'default' \
    AND kind IN ('noop') ORDER BY priority DESC, run_at, id LIMIT ?4) \
    AND ?1 IS NOT NULL AND ?2 IS NOT NULL AND ?3 IS NOT NULL RETURNING id";
const NARROW_READ: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM spooler_jobs WHERE id = ?1"
);
const NARROW_LEASE: &str = "INSERT INTO spooler_leases (id, fence, started_at, lease_expires_at, \
    worker_id) VALUES (?1, ?2, ?3, ?4, ?5)";
const NARROW_RELEASE: &str = "DELETE FROM spooler_leases WHERE id = ?1 AND fence = ?2";
const NARROW_FINISH: &str = "UPDATE spooler_jobs SET state = 'completed', finished_at = ?1, \
    result = NULL, attempt = attempt + 1, fence = ?3, worker_id = NULL WHERE id = ?2";

/// The narrow design with the outcome in a table of its own: after the insert the wide row is
/// never written again.
const OUTCOME_SCHEMA: &str = "CREATE TABLE spooler_outcomes (id INTEGER PRIMARY KEY, \
    state TEXT NOT NULL, attempt INTEGER NOT NULL, fence INTEGER NOT NULL, \
    started_at INTEGER, finished_at INTEGER NOT NULL, result TEXT); \
    CREATE INDEX spooler_outcomes_finished ON spooler_outcomes (state, finished_at);";
const OUTCOME_FINISH: &str = "INSERT INTO spooler_outcomes (id, state, attempt, fence, \
    started_at, finished_at, result) VALUES (?2, 'completed', ?3, ?3, ?1, ?1, NULL)";

const STORE_INDEXES: [&str; 5] = [
    "spooler_jobs_scheduled",
    "spooler_jobs_lease",
    "spooler_jobs_finished",
    "spooler_jobs_unique",
    "spooler_jobs_routed_from",
];

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Store,
    ListCompletion,
    ReturningCompletion,
    LeanClaim,
    LeanClaimPerId,
    LeanClaimPerIdNoIndexes,
    Plain,
    PlainWide,
    Narrow,
    NarrowOutcome,
}

impl Variant {
    const ALL: [(&'static str, Variant); 10] = [
        ("store", Variant::Store),
        ("list-completion", Variant::ListCompletion),
        ("returning-completion", Variant::ReturningCompletion),
        ("lean-claim", Variant::LeanClaim),
        ("lean-claim-per-id", Variant::LeanClaimPerId),
        (
            "lean-claim-per-id-no-indexes",
            Variant::LeanClaimPerIdNoIndexes,
        ),
        ("plain", Variant::Plain),
        ("plain-wide", Variant::PlainWide),
        ("narrow", Variant::Narrow),
        ("narrow-outcome", Variant::NarrowOutcome),
    ];

    fn claim(self) -> &'static str {
        match self {
            Variant::Store | Variant::ListCompletion | Variant::ReturningCompletion => CLAIM,
            Variant::LeanClaim | Variant::LeanClaimPerId | Variant::LeanClaimPerIdNoIndexes => {
                LEAN_CLAIM
            }
            Variant::Plain | Variant::PlainWide => PLAIN_CLAIM,
            Variant::Narrow | Variant::NarrowOutcome => NARROW_TAKE,
        }
    }

    /// The per-job completion, or `None` for one statement per batch over a JSON list.
    fn complete_one(self) -> Option<&'static str> {
        match self {
            Variant::ListCompletion => None,
            Variant::Store | Variant::LeanClaim => Some(STORE_COMPLETE),
            Variant::ReturningCompletion => Some(RETURNING_COMPLETE),
            Variant::Narrow => Some(NARROW_FINISH),
            Variant::NarrowOutcome => Some(OUTCOME_FINISH),
            Variant::LeanClaimPerId | Variant::LeanClaimPerIdNoIndexes => Some(COMPLETE_ONE),
            Variant::Plain | Variant::PlainWide => Some(PLAIN_COMPLETE),
        }
    }

    /// Whether the claim is the store's, on the store's claim index.
    fn store_claim(self) -> bool {
        matches!(
            self,
            Variant::Store | Variant::ListCompletion | Variant::ReturningCompletion
        )
    }

    fn narrow(self) -> bool {
        matches!(self, Variant::Narrow | Variant::NarrowOutcome)
    }

    /// Columns the claim returns (each read as the store reads a row).
    fn returned(self) -> usize {
        if self.store_claim() { 24 } else { 1 }
    }

    /// Shapes the copied file and fills it with `n` available jobs.
    fn fill(self, c: &Connection, n: i64) {
        let sql = match self {
            Variant::Plain | Variant::PlainWide => {
                let wide = if self == Variant::PlainWide { 19 } else { 0 };
                let extra: String = (0..wide)
                    .map(|i| format!(", x{i} INTEGER NOT NULL DEFAULT {i}"))
                    .collect();
                format!(
                    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL DEFAULT 'ready', \
                     payload TEXT NOT NULL, created_at INTEGER NOT NULL DEFAULT (unixepoch()), \
                     done_at INTEGER{extra}); \
                     CREATE INDEX jobs_ready ON jobs(id) WHERE state = 'ready'; \
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
                     INSERT INTO jobs (payload) SELECT json_object('n', i) FROM n;"
                )
            }
            _ => {
                let mut sql = String::new();
                if !self.store_claim() {
                    sql.push_str(
                        "DROP INDEX spooler_jobs_claim; CREATE INDEX spooler_jobs_claim \
                         ON spooler_jobs (id) WHERE state = 'available';",
                    );
                }
                if self.narrow() {
                    sql.push_str(NARROW_SCHEMA);
                }
                if self == Variant::NarrowOutcome {
                    sql.push_str(OUTCOME_SCHEMA);
                }
                if self == Variant::LeanClaimPerIdNoIndexes {
                    for index in STORE_INDEXES {
                        sql.push_str(&format!("DROP INDEX {index};"));
                    }
                }
                sql.push_str(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
                     INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, \
                     created_at) SELECT 'default', 'noop', json_object('n', i), 'available', 25, \
                     i, i FROM n;"
                ));
                if self.narrow() {
                    sql.push_str(
                        "INSERT INTO spooler_claimable SELECT queue, priority, run_at, id, kind \
                         FROM spooler_jobs;",
                    );
                }
                sql
            }
        };
        c.execute_batch(&sql).expect("fill");
    }
}

/// Time spent in each phase, summed over the run.
#[derive(Default)]
struct Phases {
    claim: Duration,
    complete: Duration,
    commit: Duration,
}

/// A variant to run: its name as printed, and the SQL a `sql:FILE` variant runs after the fill.
struct Run {
    label: String,
    variant: Variant,
    setup: Option<String>,
}

fn drain(migrated: &str, run: &Run, n: i64, batch: i64) {
    let variant = run.variant;
    let path = format!("{migrated}.floor");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    std::fs::copy(migrated, &path).expect("copy the migrated database");
    let c = Connection::open(&path).expect("open");
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    // As the store's writer (`configure` in `spooler-sqlite`): a claim's `RETURNING` rows and its
    // `IN` list go to temporary tables, which cost 0.5–0.6 µs a job more in a file.
    c.pragma_update(None, "temp_store", "MEMORY").unwrap();
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .unwrap();
    variant.fill(&c, n);
    if let Some(setup) = &run.setup {
        c.execute_batch(setup)
            .unwrap_or_else(|e| panic!("{}: {e}", run.label));
    }
    let exec = |sql: &str| c.prepare_cached(sql).unwrap().execute([]).unwrap();
    let mut phases = Phases::default();
    let t0 = Instant::now();
    let (mut done, mut now) = (0i64, 1_000_000_000i64);
    loop {
        let started = Instant::now();
        exec("BEGIN IMMEDIATE");
        exec("SAVEPOINT op");
        now += 1;
        let ids: Vec<i64> = c
            .prepare_cached(variant.claim())
            .unwrap()
            .query_map(params![now, now + 30_000_000, "worker", batch], |r| {
                for i in 1..variant.returned() {
                    let _ = r.get_ref(i)?;
                }
                r.get(0)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if variant.narrow() {
            let mut read = c.prepare_cached(NARROW_READ).unwrap();
            let mut lease = c.prepare_cached(NARROW_LEASE).unwrap();
            for id in &ids {
                let fence: i64 = read
                    .query_row([id], |r| {
                        for i in 1..24 {
                            let _ = r.get_ref(i)?;
                        }
                        r.get(FENCE_COLUMN)
                    })
                    .unwrap();
                lease
                    .execute(params![id, fence + 1, now, now + 30_000_000, "worker"])
                    .unwrap();
            }
        }
        exec("RELEASE op");
        let claimed = Instant::now();
        phases.claim += claimed - started;
        if ids.is_empty() {
            exec("COMMIT");
            break;
        }
        exec("SAVEPOINT op");
        let completed = match variant.complete_one() {
            Some(sql) if variant.narrow() => {
                let mut release = c.prepare_cached(NARROW_RELEASE).unwrap();
                let mut one = c.prepare_cached(sql).unwrap();
                ids.iter()
                    .map(|id| {
                        assert_eq!(release.execute(params![id, 1]).unwrap(), 1);
                        one.execute(params![now, id, 1]).unwrap()
                    })
                    .sum::<usize>()
            }
            Some(sql @ (STORE_COMPLETE | RETURNING_COMPLETE)) => {
                let mut one = c.prepare_cached(sql).unwrap();
                let result: Option<&str> = None;
                ids.iter()
                    .map(|id| {
                        let bound = params!["completed", now, result, id, 1];
                        if sql == RETURNING_COMPLETE {
                            // The queue read back; a row per job completed.
                            one.query_row(bound, |r| r.get::<_, String>(0))
                                .map(|_| 1)
                                .unwrap()
                        } else {
                            one.execute(bound).unwrap()
                        }
                    })
                    .sum::<usize>()
            }
            Some(sql) => {
                let mut one = c.prepare_cached(sql).unwrap();
                ids.iter()
                    .map(|id| one.execute(params![now, id]).unwrap())
                    .sum::<usize>()
            }
            None => {
                let list: Vec<String> = ids.iter().map(|id| format!("[{id},1,null]")).collect();
                c.prepare_cached(COMPLETE_LIST)
                    .unwrap()
                    .query_map(params![now, format!("[{}]", list.join(","))], |r| {
                        r.get::<_, i64>(0)
                    })
                    .unwrap()
                    .count()
            }
        };
        assert_eq!(completed, ids.len());
        exec("RELEASE op");
        let finished = Instant::now();
        phases.complete += finished - claimed;
        exec("COMMIT");
        phases.commit += finished.elapsed();
        done += completed as i64;
    }
    let s = t0.elapsed().as_secs_f64();
    let per_job = |d: Duration| d.as_secs_f64() * 1e6 / done as f64;
    let steps = |sql: &str| {
        c.prepare_cached(sql)
            .unwrap()
            .get_status(StatementStatus::VmStep) as f64
            / done as f64
    };
    let complete_steps = steps(variant.complete_one().unwrap_or(COMPLETE_LIST));
    println!(
        "{:<30} batch={batch:<4} claim {:5.2} µs/job ({:.0} steps), complete {:5.2} ({:.0} steps), \
         commit {:5.2}",
        run.label,
        per_job(phases.claim),
        steps(variant.claim()),
        per_job(phases.complete),
        complete_steps,
        per_job(phases.commit),
    );
    println!(
        "RESULT sqlite-floor variant={} batch={batch} n={done} jobs_per_s={:.0} us_per_job={:.2}",
        run.label,
        done as f64 / s,
        s * 1e6 / done as f64
    );
}

fn main() {
    let mut positional = Vec::new();
    let mut variants = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--variant" {
            let name = args.next().unwrap_or_default();
            if let Some(file) = name.strip_prefix("sql:") {
                let setup = std::fs::read_to_string(file).unwrap_or_else(|e| {
                    eprintln!("cannot read {file}: {e}");
                    std::process::exit(2);
                });
                variants.push(Run {
                    label: name.clone(),
                    variant: Variant::Store,
                    setup: Some(setup),
                });
                continue;
            }
            let Some((_, v)) = Variant::ALL.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = Variant::ALL.iter().map(|(n, _)| *n).collect();
                eprintln!(
                    "unknown variant {name:?}: one of {}, or sql:FILE",
                    names.join(", ")
                );
                std::process::exit(2);
            };
            variants.push(Run {
                label: name,
                variant: *v,
                setup: None,
            });
        } else {
            positional.push(arg);
        }
    }
    let Some(migrated) = positional.first() else {
        eprintln!("usage: sqlite-floor MIGRATED_DB [N] [BATCH...] [--variant NAME]...");
        std::process::exit(2);
    };
    let n: i64 = positional.get(1).map_or(100_000, |s| s.parse().expect("N"));
    let batches: Vec<i64> = if positional.len() > 2 {
        positional[2..]
            .iter()
            .map(|s| s.parse().expect("BATCH"))
            .collect()
    } else {
        vec![100]
    };
    if variants.is_empty() {
        variants = Variant::ALL
            .iter()
            .map(|(name, v)| Run {
                label: name.to_string(),
                variant: *v,
                setup: None,
            })
            .collect();
    }
    println!("sqlite version {}", rusqlite::version());
    for batch in batches {
        for run in &variants {
            drain(migrated, run, n, batch);
        }
    }
}
