//! The config file (`spooler.toml`): store, listen, token, logs, queues, schedules, allowed
//! commands and file directories, retention.
//!
//! Unknown keys are errors, and every error names the file, the line and the key:
//! `spooler.toml, line 7, key queues.deliver.concurency: unknown field ...`.

use serde::Deserialize;
use spooler::{Retention, RetryPolicy, parse_duration};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Concurrency of a queue whose config does not say.
pub const DEFAULT_CONCURRENCY: u32 = 10;

/// A config file, read and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The file it came from (none for the built-in defaults).
    pub path: Option<PathBuf>,
    /// Store URL (`store`).
    pub store: Option<String>,
    /// Listen address (`listen`).
    pub listen: Option<String>,
    /// API token (`token`).
    pub token: Option<String>,
    /// A token that may read everything and change nothing (`read_token`).
    pub read_token: Option<String>,
    /// `pretty`, `json` or `auto` (`log_format`).
    pub log_format: Option<String>,
    /// A `RUST_LOG`-style filter (`log_level`).
    pub log_level: Option<String>,
    /// Largest request body in bytes (`body_limit`).
    pub body_limit: Option<usize>,
    /// Most jobs per batch enqueue (`batch_limit`).
    pub batch_limit: Option<usize>,
    /// The `[queues.NAME]` tables.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Programs the `command` kind may run (`[commands] allow`).
    pub commands_allow: Vec<String>,
    /// Directories the `file` kind may write under (`[file] allow`; the working directory when
    /// empty).
    pub file_allow: Vec<PathBuf>,
    /// How long finished jobs are kept (`[retention]`).
    pub retention: Retention,
    /// Worker timings (`[worker]`).
    pub worker: WorkerConfig,
    /// The `[[schedules]]`, in file order.
    pub schedules: Vec<spooler::ScheduleDef>,
    /// The key `http` deliveries are signed with (`[http] signing_secret = "whsec_…"`), as the
    /// Standard Webhooks headers say; unsigned without one.
    pub http_signing: Option<crate::kinds::SigningSecret>,
    /// Where `http` and `tcp` jobs may go (`[net] allow`, `[net] deny`).
    pub net: crate::kinds::NetPolicy,
}

/// One `[queues.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Jobs run at once from this queue (10 by default).
    pub concurrency: u32,
    /// Attempts allowed for jobs enqueued through the API without `max_attempts`.
    pub max_attempts: Option<i32>,
    /// The retry policy (`backoff = "1s"` fixed, or `"exponential"`, the default).
    pub backoff: Option<RetryPolicy>,
    /// Per-attempt timeout for jobs enqueued without one.
    pub timeout: Option<Duration>,
    /// How long its finished jobs are kept, per state, where it differs from `[retention]`.
    pub retention: spooler::core::QueueRetention,
    /// Where its jobs go when they fail (`on_failure`) or complete (`on_success`).
    pub routes: spooler::core::Routes,
    /// Its `rate_limit` and `global_concurrency`, across every process sharing the store.
    pub limits: spooler::core::QueueLimits,
    /// `unique = { by = [...], period = "1h" }`: jobs like one enqueued within the period are
    /// answered with it.
    pub unique: Option<spooler::core::UniquePeriod>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: None,
            backoff: None,
            timeout: None,
            retention: Default::default(),
            routes: Default::default(),
            limits: Default::default(),
            unique: None,
        }
    }
}

/// The `[worker]` table: timings of the worker that `serve` and `worker` run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerConfig {
    /// Lease length (`lease`, 30 s by default).
    pub lease: Option<Duration>,
    /// Poll interval of idle queues (`poll`, 1 s by default).
    pub poll: Option<Duration>,
    /// Grace period at shutdown (`grace`, 10 s by default).
    pub grace: Option<Duration>,
}

/// A config that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key is unknown, has the wrong type or an invalid value.
    #[error("{path}, line {line}, key {key}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending key or value.
        line: usize,
        /// The key, dotted from the root: `queues.deliver.backoff`.
        key: String,
        /// What is wrong and, when known, the fix.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<String>,
    listen: Option<String>,
    token: Option<String>,
    read_token: Option<String>,
    log_format: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    body_limit: Option<Spanned<i64>>,
    batch_limit: Option<Spanned<i64>>,
    #[serde(default)]
    queues: BTreeMap<String, Spanned<RawQueue>>,
    #[serde(default)]
    commands: RawCommands,
    #[serde(default)]
    file: RawCommands,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    net: RawNet,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    schedules: Vec<Spanned<RawSchedule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: Spanned<String>,
    cron: Spanned<String>,
    tz: Option<Spanned<String>>,
    job: Spanned<toml::Value>,
    catch_up: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    concurrency: Option<Spanned<i64>>,
    max_attempts: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retention: Option<RawRetention>,
    on_failure: Option<Spanned<RawRoute>>,
    on_success: Option<Spanned<RawRoute>>,
    rate_limit: Option<Spanned<String>>,
    global_concurrency: Option<Spanned<i64>>,
    unique: Option<Spanned<RawUnique>>,
    #[serde(default)]
    kinds: BTreeMap<String, Spanned<RawKindRoutes>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKindRoutes {
    on_failure: Option<Spanned<RawRoute>>,
    on_success: Option<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnique {
    by: Spanned<Vec<String>>,
    period: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    queue: Spanned<String>,
    kind: Option<Spanned<String>>,
    args: Option<Spanned<toml::Value>>,
    delay: Option<Spanned<String>>,
    max_hops: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    allow: Option<Spanned<Vec<String>>>,
    deny: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    signing_secret: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    completed: Option<Spanned<String>>,
    failed: Option<Spanned<String>>,
    cancelled: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    lease: Option<Spanned<String>>,
    poll: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses config text; `name` is the file name used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let src = Source { text, name };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let mut config = Config {
            store: raw.store,
            listen: raw.listen,
            token: raw.token.filter(|t| !t.is_empty()),
            read_token: raw.read_token.filter(|t| !t.is_empty()),
            log_level: raw
                .log_level
                .map(|l| check_log_level(&src, l))
                .transpose()?,
            commands_allow: raw.commands.allow,
            file_allow: raw.file.allow.into_iter().map(PathBuf::from).collect(),
            ..Config::default()
        };
        if let Some(v) = raw.net.allow {
            config.net = std::mem::take(&mut config.net)
                .allow(v.get_ref())
                .map_err(|e| src.invalid(v.span(), "net.allow", e))?;
        }
        if let Some(v) = raw.net.deny {
            config.net = std::mem::take(&mut config.net)
                .deny(v.get_ref())
                .map_err(|e| src.invalid(v.span(), "net.deny", e))?;
        }
        if let Some(secret) = raw.http.signing_secret {
            config.http_signing = Some(
                crate::kinds::SigningSecret::parse(secret.get_ref())
                    .map_err(|e| src.invalid(secret.span(), "http.signing_secret", e))?,
            );
        }
        if let Some(f) = raw.log_format {
            if !matches!(f.get_ref().as_str(), "pretty" | "json" | "auto") {
                return Err(src.invalid(
                    f.span(),
                    "log_format",
                    format!(
                        "\"{}\" is not a log format (expected \"pretty\", \"json\" or \"auto\")",
                        f.get_ref()
                    ),
                ));
            }
            config.log_format = Some(f.into_inner());
        }
        config.body_limit =
            positive(&src, raw.body_limit, "body_limit", usize::MAX as i64)?.map(|n| n as usize);
        config.batch_limit =
            positive(&src, raw.batch_limit, "batch_limit", usize::MAX as i64)?.map(|n| n as usize);
        let keep = |v: Option<Spanned<String>>, k: &str, default: Option<Duration>| match v {
            None => Ok(default),
            Some(s) if matches!(s.get_ref().as_str(), "forever" | "never") => Ok(None),
            Some(s) => parse_duration(s.get_ref())
                .map(Some)
                .map_err(|e| src.invalid(s.span(), k, format!("{e} (or \"forever\")"))),
        };
        let mut route_spans: BTreeMap<(String, String), Range<usize>> = BTreeMap::new();
        for (name, q) in raw.queues {
            let span = q.span();
            let q = q.into_inner();
            let key = |k: &str| format!("queues.{name}.{k}");
            if name.trim().is_empty() {
                return Err(src.invalid(span, "queues", "a queue name must not be empty"));
            }
            let mut queue = QueueConfig::default();
            if let Some(n) = positive(&src, q.concurrency, &key("concurrency"), 100_000)? {
                queue.concurrency = n as u32;
            }
            queue.max_attempts =
                positive(&src, q.max_attempts, &key("max_attempts"), i32::MAX as i64)?
                    .map(|n| n as i32);
            if let Some(b) = q.backoff {
                queue.backoff = Some(match b.get_ref().trim() {
                    "exponential" => RetryPolicy::default(),
                    text => RetryPolicy::fixed(parse_duration(text).map_err(|e| {
                        src.invalid(
                            b.span(),
                            &key("backoff"),
                            format!("{e} (or \"exponential\")"),
                        )
                    })?),
                });
            }
            queue.timeout = duration(&src, q.timeout, &key("timeout"))?;
            if let Some(r) = q.rate_limit {
                queue.limits.rate = Some(
                    spooler::core::RateLimit::parse(r.get_ref())
                        .map_err(|e| src.invalid(r.span(), &key("rate_limit"), e))?,
                );
            }
            if let Some(u) = q.unique {
                let u = u.into_inner();
                let by = spooler::core::UniqueBy::parse(u.by.get_ref())
                    .map_err(|e| src.invalid(u.by.span(), &key("unique.by"), e))?;
                let period = parse_duration(u.period.get_ref())
                    .map_err(|e| src.invalid(u.period.span(), &key("unique.period"), e))?;
                if period.is_zero() {
                    return Err(src.invalid(
                        u.period.span(),
                        &key("unique.period"),
                        "must be longer than zero",
                    ));
                }
                queue.unique = Some(spooler::core::UniquePeriod { by, period });
            }
            queue.limits.concurrency = positive(
                &src,
                q.global_concurrency,
                &key("global_concurrency"),
                1_000_000,
            )?
            .map(|n| n as u32);
            if let Some(r) = q.retention {
                // Only what the table names: the rest takes [retention].
                let own = |v: Option<Spanned<String>>, state: &str| {
                    let given = v.is_some();
                    keep(v, &key(&format!("retention.{state}")), None)
                        .map(|k| given.then(|| spooler::core::Keep::from_option(k)))
                };
                queue.retention = spooler::core::QueueRetention {
                    completed: own(r.completed, "completed")?,
                    failed: own(r.failed, "failed")?,
                    cancelled: own(r.cancelled, "cancelled")?,
                };
            }
            for (k, raw, slot) in [
                ("on_failure", q.on_failure, &mut queue.routes.on_failure),
                ("on_success", q.on_success, &mut queue.routes.on_success),
            ] {
                if let Some(raw) = raw {
                    route_spans.insert((name.clone(), k.to_string()), raw.span());
                    *slot = Some(route(&src, &key(k), raw.into_inner())?);
                }
            }
            for (kind, table) in q.kinds {
                let span = table.span();
                if let Err(message) = crate::wire::validate_name(&kind) {
                    return Err(src.invalid(span, &key(&format!("kinds.{kind}")), message));
                }
                let table = table.into_inner();
                let mut routes = spooler::core::KindRoutes::default();
                for (k, raw, slot) in [
                    ("on_failure", table.on_failure, &mut routes.on_failure),
                    ("on_success", table.on_success, &mut routes.on_success),
                ] {
                    if let Some(raw) = raw {
                        let k = format!("kinds.{kind}.{k}");
                        route_spans.insert((name.clone(), k.clone()), raw.span());
                        *slot = Some(route(&src, &key(&k), raw.into_inner())?);
                    }
                }
                queue.routes.kinds.insert(kind, routes);
            }
            config.queues.insert(name, queue);
        }
        if let Some(cycle) = spooler::core::route::undelayed_cycle(&config.queue_settings()) {
            let (first, second) = (&cycle[0], &cycle[1]);
            let r = &config.queues[first].routes;
            let mut candidates = vec![
                ("on_failure".to_string(), &r.on_failure),
                ("on_success".to_string(), &r.on_success),
            ];
            for (kind, k) in &r.kinds {
                candidates.push((format!("kinds.{kind}.on_failure"), &k.on_failure));
                candidates.push((format!("kinds.{kind}.on_success"), &k.on_success));
            }
            let k = candidates
                .into_iter()
                .find(|(_, route)| {
                    route
                        .as_ref()
                        .is_some_and(|r| &r.queue == second && r.delay.is_none())
                })
                .map_or_else(|| "on_failure".to_string(), |(k, _)| k);
            let span = route_spans
                .get(&(first.clone(), k.clone()))
                .cloned()
                .unwrap_or(0..0);
            return Err(src.invalid(
                span,
                &format!("queues.{first}.{k}"),
                format!(
                    "routes form a cycle without a delay: {}; give one of them a delay \
                     (e.g. delay = \"20s\")",
                    cycle.join(" → ")
                ),
            ));
        }
        let defaults = Retention::default();
        config.retention = Retention {
            completed: keep(
                raw.retention.completed,
                "retention.completed",
                defaults.completed,
            )?,
            failed: keep(raw.retention.failed, "retention.failed", defaults.failed)?,
            cancelled: keep(
                raw.retention.cancelled,
                "retention.cancelled",
                defaults.cancelled,
            )?,
        };
        for (i, s) in raw.schedules.into_iter().enumerate() {
            let name_span = s.get_ref().name.span();
            let schedule = schedule(&src, i, s.into_inner())?;
            if config.schedules.iter().any(|d| d.name == schedule.name) {
                return Err(src.invalid(
                    name_span,
                    &format!("schedules[{i}].name"),
                    format!("a schedule named \"{}\" is declared twice", schedule.name),
                ));
            }
            config.schedules.push(schedule);
        }
        config.worker = WorkerConfig {
            lease: duration(&src, raw.worker.lease, "worker.lease")?,
            poll: duration(&src, raw.worker.poll, "worker.poll")?,
            grace: duration(&src, raw.worker.grace, "worker.grace")?,
        };
        Ok(config)
    }

    /// The file name for messages, or `"(no config file)"`.
    pub fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(no config file)".into(), |p| p.display().to_string())
    }

    /// Each configured queue's defaults for the jobs enqueued into it without their own, as the
    /// store keeps them ([`crate::run::configure_store`]).
    pub fn queue_settings(&self) -> Vec<spooler::core::QueueSettings> {
        self.queues
            .iter()
            .map(|(name, q)| spooler::core::QueueSettings {
                queue: name.clone(),
                max_attempts: q.max_attempts,
                timeout: q.timeout,
                retention: q.retention,
                routes: q.routes.clone(),
                limits: q.limits,
                unique: q.unique,
            })
            .collect()
    }
}

/// One `[[schedules]]` entry (the `i`th): its name, cadence and time zone checked here, its job
/// template by the same rules as an enqueue request.
fn schedule(
    src: &Source<'_>,
    i: usize,
    raw: RawSchedule,
) -> Result<spooler::ScheduleDef, ConfigError> {
    let key = |k: &str| format!("schedules[{i}].{k}");
    let name = raw.name.get_ref().clone();
    if let Err(message) = crate::wire::validate_name(&name) {
        return Err(src.invalid(raw.name.span(), &key("name"), message));
    }
    let tz = raw.tz.as_ref().map(|t| t.get_ref().clone());
    if let Err(message) = spooler::core::Cadence::parse(raw.cron.get_ref(), tz.as_deref()) {
        let span = match &raw.tz {
            Some(t) if message.contains("time zone") => t.span(),
            _ => raw.cron.span(),
        };
        let k = if message.contains("time zone") {
            "tz"
        } else {
            "cron"
        };
        return Err(src.invalid(span, &key(k), message));
    }
    let catch_up = match &raw.catch_up {
        None => spooler::CatchUp::One,
        Some(c) => c
            .get_ref()
            .parse()
            .map_err(|message: String| src.invalid(c.span(), &key("catch_up"), message))?,
    };
    let job_span = raw.job.span();
    let job_json = serde_json::to_value(raw.job.into_inner())
        .map_err(|e| src.invalid(job_span.clone(), &key("job"), e.to_string()))?;
    for refused in ["delay", "run_at"] {
        if job_json.get(refused).is_some() {
            return Err(src.invalid(
                job_span,
                &key(&format!("job.{refused}")),
                "a schedule's job runs at its tick; remove it",
            ));
        }
    }
    let job = crate::wire::parse_enqueue(&job_json, "", chrono::Utc::now()).map_err(|e| {
        let field = e
            .field_name()
            .map(|f| format!("job.{f}"))
            .unwrap_or_else(|| "job".into());
        src.invalid(job_span, &key(&field), e.message())
    })?;
    Ok(spooler::ScheduleDef {
        name,
        cron: raw.cron.into_inner(),
        tz,
        job,
        catch_up,
    })
}

/// One `on_failure` / `on_success` table, at `key`.
fn route(src: &Source<'_>, key: &str, raw: RawRoute) -> Result<spooler::core::Route, ConfigError> {
    let sub = |k: &str| format!("{key}.{k}");
    let queue = raw.queue.get_ref().clone();
    if let Err(message) = crate::wire::validate_name(&queue) {
        return Err(src.invalid(raw.queue.span(), &sub("queue"), message));
    }
    let mut route = spooler::core::Route::to(queue);
    if let Some(kind) = raw.kind {
        if let Err(message) = crate::wire::validate_name(kind.get_ref()) {
            return Err(src.invalid(kind.span(), &sub("kind"), message));
        }
        route.kind = Some(kind.into_inner());
    }
    if let Some(args) = raw.args {
        let span = args.span();
        match serde_json::to_value(args.into_inner()) {
            Ok(serde_json::Value::Object(map)) => route.args = Some(map),
            Ok(other) => {
                return Err(src.invalid(
                    span,
                    &sub("args"),
                    format!(
                        "must be a table of arguments, not {}",
                        crate::wire::type_name(&other)
                    ),
                ));
            }
            Err(e) => return Err(src.invalid(span, &sub("args"), e.to_string())),
        }
    }
    route.delay = duration(src, raw.delay, &sub("delay"))?;
    if let Some(n) = positive(src, raw.max_hops, &sub("max_hops"), 1_000)? {
        route.max_hops = n as u32;
    }
    Ok(route)
}

/// Levels a `log_level` directive may end in.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `log_level` filter: comma-separated directives, each a level or `target=level`. (A bare
/// target, which `RUST_LOG` would read as "everything from that target", is refused here: in a key
/// named `log_level` it is almost always a misspelt level that would silence the other logs.)
fn check_log_level(src: &Source<'_>, value: Spanned<String>) -> Result<String, ConfigError> {
    for directive in value.get_ref().split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(src.invalid(
                value.span(),
                "log_level",
                format!(
                    "\"{directive}\" is not a level (expected {} or target=level, e.g. \"info,spooler=debug\")",
                    LEVELS.join(", ")
                ),
            ));
        }
    }
    Ok(value.into_inner())
}

fn positive(
    src: &Source<'_>,
    v: Option<Spanned<i64>>,
    key: &str,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    match v {
        None => Ok(None),
        Some(n) if (1..=max).contains(n.get_ref()) => Ok(Some(*n.get_ref())),
        Some(n) => Err(src.invalid(
            n.span(),
            key,
            format!("must be from 1 to {max}, not {}", n.get_ref()),
        )),
    }
}

fn duration(
    src: &Source<'_>,
    v: Option<Spanned<String>>,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) => match parse_duration(s.get_ref()) {
            Ok(d) if d.is_zero() => Err(src.invalid(s.span(), key, "must be greater than zero")),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(src.invalid(s.span(), key, e)),
        },
    }
}

/// The dotted path of a `[table]` or `[[array]]` header line: `[queues."x".extra]` → `queues.x.extra`.
fn header_path(line: &str) -> Option<String> {
    let line = line.trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.split("]]").next())
        .or_else(|| line.strip_prefix('[').and_then(|l| l.split(']').next()))?;
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join("."),
    )
}

struct Source<'a> {
    text: &'a str,
    name: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.name.to_string(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The innermost `[table]` header above `offset`, as a dotted prefix.
    fn table_at(&self, offset: usize) -> Option<String> {
        let before = &self.text[..offset.min(self.text.len())];
        before.lines().rev().find_map(header_path)
    }

    /// Maps a toml error to file, line and key. The key is the field the message names (unknown
    /// or missing fields) or the key written on the offending line, under its table header.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        let Some(span) = e.span() else {
            return ConfigError::Invalid {
                path: self.name.to_string(),
                line: 1,
                key: "(file)".into(),
                message,
            };
        };
        let line_no = self.line_of(span.start);
        let line_text = self.text.lines().nth(line_no - 1).unwrap_or("").trim();
        let named = message
            .split('`')
            .nth(1)
            .filter(|_| {
                message.starts_with("unknown field") || message.starts_with("missing field")
            })
            .map(str::to_string);
        let on_line = (!line_text.starts_with('['))
            .then(|| {
                line_text
                    .split('=')
                    .next()
                    .map(|k| k.trim().trim_matches('"').to_string())
            })
            .flatten()
            .filter(|k| !k.is_empty());
        // A field of an inline table (`on_failure = { dealy = … }`) is named under its key.
        let leaf = match (named, on_line) {
            (Some(n), Some(l)) if l != n && line_text.contains('{') => Some(format!("{l}.{n}")),
            (n, l) => n.or(l),
        };
        let line_start = self.text[..span.start.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        if line_text.starts_with('[') {
            // The error is about a header (an unknown section): the key is the header's path, up
            // to the part the message names.
            let header = header_path(line_text).map(|path| match &leaf {
                Some(name) => {
                    let parts: Vec<&str> = path.split('.').collect();
                    match parts.iter().position(|p| p == name) {
                        Some(i) => parts[..=i].join("."),
                        None => path,
                    }
                }
                None => path,
            });
            let header = header.or(leaf).unwrap_or_else(|| line_text.to_string());
            return ConfigError::Invalid {
                path: self.name.to_string(),
                line: line_no,
                key: header,
                message,
            };
        }
        let table = self.table_at(line_start);
        let key = match (table, leaf) {
            (Some(t), Some(l)) if l.starts_with(&format!("{t}.")) => l,
            (Some(t), Some(l)) => format!("{t}.{l}"),
            (None, Some(l)) => l,
            (Some(t), None) => t,
            (None, None) => line_text.trim_matches(|c| c == '[' || c == ']').to_string(),
        };
        ConfigError::Invalid {
            path: self.name.to_string(),
            line: line_no,
            key,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String, String) {
        match Config::parse(text, "spooler.toml").unwrap_err() {
            ConfigError::Invalid {
                line, key, message, ..
            } => (line, key, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_documented_shape_parses() {
        let c = Config::parse(
            r#"
store = "sqlite://spooler.db"
listen = "127.0.0.1:7700"
log_format = "json"

[queues.deliver]
concurrency = 4
max_attempts = 2
backoff = "1s"

[queues.other]
backoff = "exponential"

[commands]
allow = ["/usr/bin/convert"]

[retention]
completed = "24h"
failed = "7d"
"#,
            "spooler.toml",
        )
        .unwrap();
        assert_eq!(c.store.as_deref(), Some("sqlite://spooler.db"));
        let q = &c.queues["deliver"];
        assert_eq!(q.concurrency, 4);
        assert_eq!(q.max_attempts, Some(2));
        assert_eq!(q.backoff, Some(RetryPolicy::fixed(Duration::from_secs(1))));
        assert_eq!(c.queues["other"].backoff, Some(RetryPolicy::default()));
        assert_eq!(c.commands_allow, vec!["/usr/bin/convert".to_string()]);
        assert_eq!(c.retention.failed, Some(Duration::from_secs(7 * 86400)));
    }

    #[test]
    fn a_typo_names_line_and_key() {
        let (line, key, message) = err("store = \"x\"\n\n[queues.deliver]\nconcurency = 4\n");
        assert_eq!(line, 4);
        assert_eq!(key, "queues.deliver.concurency");
        assert!(message.contains("unknown field"), "{message}");
        let (line, key, _) = err("lissen = \"x\"\n");
        assert_eq!((line, key.as_str()), (1, "lissen"));
    }

    #[test]
    fn unknown_sections_are_named_by_their_path() {
        let (line, key, _) = err("[queues.x]\n  [queues.x.extra]\n  a = 1\n");
        assert_eq!((line, key.as_str()), (2, "queues.x.extra"));
        let (line, key, _) = err("store = \"x\"\n[queue.x]\nconcurrency = 1\n");
        assert_eq!((line, key.as_str()), (2, "queue"));
    }

    #[test]
    fn log_level_must_be_levels() {
        for good in [
            "info",
            "DEBUG",
            "info,spooler=debug",
            "warn, spooler_server::request=off",
        ] {
            let text = format!("log_level = \"{good}\"\n");
            let c = Config::parse(&text, "spooler.toml").unwrap();
            assert_eq!(c.log_level.as_deref(), Some(good));
        }
        for bad in ["verbose", "info,spooler=loud", ""] {
            let (line, key, message) = err(&format!("\nlog_level = \"{bad}\"\n"));
            assert_eq!((line, key.as_str()), (2, "log_level"), "{bad}");
            assert!(message.contains("not a level"), "{message}");
        }
    }

    #[test]
    fn wrong_types_and_values_name_line_and_key() {
        let (line, key, _) = err("[queues.a]\nconcurrency = \"four\"\n");
        assert_eq!((line, key.as_str()), (2, "queues.a.concurrency"));
        let (line, key, message) = err("[queues.a]\nbackoff = \"fast\"\n");
        assert_eq!((line, key.as_str()), (2, "queues.a.backoff"));
        assert!(message.contains("fast"), "{message}");
        let (line, key, _) = err("[retention]\ncompleted = \"1 day\"\n");
        assert_eq!((line, key.as_str()), (2, "retention.completed"));
    }

    #[test]
    fn rate_limits_and_global_concurrency_are_read_and_checked() {
        let c = Config::parse(
            "[queues.mail]\nrate_limit = \"100/s\"\nglobal_concurrency = 5\n[queues.b]\nrate_limit = \"500/h\"\n",
            "t.toml",
        )
        .unwrap();
        let mail = c
            .queue_settings()
            .into_iter()
            .find(|s| s.queue == "mail")
            .unwrap();
        assert_eq!(mail.limits.rate.unwrap().to_string(), "100/s");
        assert_eq!(mail.limits.concurrency, Some(5));
        assert_eq!(c.queues["b"].limits.rate.unwrap().count, 500);
        let (line, key, message) = err("[queues.a]\n\nrate_limit = \"fast\"\n");
        assert_eq!((line, key.as_str()), (3, "queues.a.rate_limit"));
        assert!(message.contains("100/s"), "{message}");
        let (line, key, _) = err("[queues.a]\nglobal_concurrency = 0\n");
        assert_eq!((line, key.as_str()), (2, "queues.a.global_concurrency"));
    }

    #[test]
    fn net_rules_are_read_and_a_bad_entry_names_its_list() {
        let c = Config::parse(
            "[net]\nallow = [\"10.0.0.0/8\", \".example.com\"]\ndeny = [\"10.9.0.0/16\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_ne!(c.net, crate::kinds::NetPolicy::default());
        let (line, key, message) = err("[net]\n\ndeny = [\"10.0.0.0/33\"]\n");
        assert_eq!((line, key.as_str()), (3, "net.deny"));
        assert!(message.contains("10.0.0.0/33"), "{message}");
        let (_, key, _) = err("[net]\nallow = [\"a b\"]\n");
        assert_eq!(key, "net.allow");
    }

    #[test]
    fn an_http_signing_secret_is_read_and_checked() {
        let c = Config::parse(
            "[http]\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.http_signing.is_some());
        assert!(
            !format!("{c:?}").contains("MfKQ9r8"),
            "the key stays out of Debug"
        );
        let (line, key, message) = err("[http]\n\nsigning_secret = \"hunter2\"\n");
        assert_eq!((line, key.as_str()), (3, "http.signing_secret"));
        assert!(message.contains("whsec_"), "{message}");
    }

    #[test]
    fn unique_within_a_period_is_read_and_checked() {
        let c = Config::parse(
            "[queues.mail]\nunique = { by = [\"kind\", \"args\"], period = \"1h\" }\n",
            "t.toml",
        )
        .unwrap();
        let u = c.queues["mail"].unique.unwrap();
        assert_eq!(u.period, Duration::from_secs(3600));
        assert!(u.by.kind && u.by.args && !u.by.queue);
        let (line, key, message) =
            err("[queues.a]\n\nunique = { by = [\"kind\", \"tags\"], period = \"1h\" }\n");
        assert_eq!((line, key.as_str()), (3, "queues.a.unique.by"));
        assert!(message.contains("tags"), "{message}");
        let (_, key, _) = err("[queues.a]\nunique = { by = [\"kind\"], period = \"soon\" }\n");
        assert_eq!(key, "queues.a.unique.period");
        let (_, key, _) =
            err("[queues.a]\nunique = { by = [\"kind\"], period = \"1h\", scope = 1 }\n");
        assert_eq!(key, "queues.a.unique.scope");
    }

    #[test]
    fn the_documented_failover_chain_parses_and_its_targets_are_worked() {
        let c = Config::parse(
            r#"
[queues.deliver]
max_attempts = 2
backoff = "1s"
on_failure = { queue = "deliver-b", args = { address = "127.0.0.1:10002" } }

[queues.deliver-b]
on_failure = { queue = "spill", kind = "file", args = { path = "spill.jsonl" }, max_hops = 3 }

[queues.spill]
on_success = { queue = "deliver", delay = "20s" }
"#,
            "spooler.toml",
        )
        .unwrap();
        let first = c.queues["deliver"].routes.on_failure.clone().unwrap();
        assert_eq!(first.queue, "deliver-b");
        assert_eq!(first.kind, None);
        assert_eq!(
            first.args.unwrap()["address"],
            serde_json::json!("127.0.0.1:10002")
        );
        assert_eq!(first.max_hops, spooler::core::route::DEFAULT_MAX_HOPS);
        let spill = c.queues["deliver-b"].routes.on_failure.clone().unwrap();
        assert_eq!((spill.kind.as_deref(), spill.max_hops), (Some("file"), 3));
        let back = c.queues["spill"].routes.on_success.clone().unwrap();
        assert_eq!(back.delay, Some(Duration::from_secs(20)));
        let settings = c.queue_settings();
        assert_eq!(settings.len(), 3);
        let only_routes = Config::parse(
            "[queues.a]\non_failure = { queue = \"dead\" }\n",
            "spooler.toml",
        )
        .unwrap();
        let worked: Vec<String> = crate::run::worker_queues(&only_routes, &Default::default())
            .into_iter()
            .map(|q| q.0)
            .collect();
        assert!(worked.contains(&"dead".to_string()), "{worked:?}");
    }

    #[test]
    fn a_cycle_without_a_delay_is_refused_naming_the_queues() {
        let (line, key, message) = err("[queues.a]\non_failure = { queue = \"b\" }\n\
             [queues.b]\non_success = { queue = \"a\" }\n");
        assert_eq!((line, key.as_str()), (2, "queues.a.on_failure"));
        assert!(message.contains("a → b → a"), "{message}");
        assert!(message.contains("delay"), "{message}");
        let (_, key, message) = err("[queues.self]\non_failure = { queue = \"self\" }\n");
        assert_eq!(key, "queues.self.on_failure");
        assert!(message.contains("self → self"), "{message}");
        // A delay anywhere on the cycle breaks it.
        Config::parse(
            "[queues.a]\non_failure = { queue = \"b\" }\n\
             [queues.b]\non_failure = { queue = \"a\", delay = \"5s\" }\n",
            "spooler.toml",
        )
        .unwrap();
    }

    #[test]
    fn a_kind_in_a_queue_may_have_routes_of_its_own() {
        let c = Config::parse(
            "[queues.out]\non_failure = { queue = \"dead\" }\n\
             [queues.out.kinds.mail]\non_failure = { queue = \"mail-dead\" }\n\
             on_success = { queue = \"sent\", kind = \"audit\" }\n",
            "spooler.toml",
        )
        .unwrap();
        let routes = &c.queues["out"].routes;
        assert_eq!(
            routes
                .after(spooler::JobState::Failed, "mail")
                .map(|r| r.queue.as_str()),
            Some("mail-dead")
        );
        assert_eq!(
            routes
                .after(spooler::JobState::Failed, "sms")
                .map(|r| r.queue.as_str()),
            Some("dead")
        );
        let worked: Vec<String> = crate::run::worker_queues(&c, &Default::default())
            .into_iter()
            .map(|q| q.0)
            .collect();
        for q in ["out", "dead", "mail-dead", "sent"] {
            assert!(worked.contains(&q.to_string()), "{q}: {worked:?}");
        }
        let (line, key, message) =
            err("[queues.out]\n[queues.out.kinds.mail]\non_success = { queue = \"out\" }\n");
        assert_eq!(
            (line, key.as_str()),
            (3, "queues.out.kinds.mail.on_success")
        );
        assert!(message.contains("out → out"), "{message}");
        let (_, key, _) = err("[queues.out.kinds.mail]\non_falure = { queue = \"x\" }\n");
        assert_eq!(key, "queues.out.kinds.mail.on_falure");
    }

    #[test]
    fn a_route_mistake_names_line_and_key() {
        let (line, key, _) = err("[queues.a]\non_failure = { queue = \"b\", dealy = \"1s\" }\n");
        assert_eq!((line, key.as_str()), (2, "queues.a.on_failure.dealy"));
        let (_, key, _) = err("[queues.a]\non_failure = { queue = \"b c\" }\n");
        assert_eq!(key, "queues.a.on_failure.queue");
        let (_, key, _) = err("[queues.a]\non_failure = { queue = \"b\", delay = \"soon\" }\n");
        assert_eq!(key, "queues.a.on_failure.delay");
        let (_, key, _) = err("[queues.a]\non_failure = { queue = \"b\", args = 3 }\n");
        assert_eq!(key, "queues.a.on_failure.args");
        let (_, key, _) = err("[queues.a]\non_success = { queue = \"b\", max_hops = 0 }\n");
        assert_eq!(key, "queues.a.on_success.max_hops");
        let (_, key, message) = err("[queues.a]\non_success = { kind = \"x\" }\n");
        assert_eq!(key, "queues.a.on_success.queue", "{message}");
    }

    #[test]
    fn schedules_parse_and_their_mistakes_name_line_and_key() {
        let config = Config::parse(
            "[[schedules]]\nname = \"generator\"\ncron = \"@every 1s\"\n\
             job = { kind = \"tcp\", queue = \"deliver\", args = { address = \"127.0.0.1:10001\" } }\n\
             [[schedules]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\ntz = \"Europe/Berlin\"\n\
             catch_up = \"none\"\njob = { kind = \"noop\" }\n",
            "spooler.toml",
        )
        .unwrap();
        assert_eq!(config.schedules.len(), 2);
        let g = &config.schedules[0];
        assert_eq!(
            (g.name.as_str(), g.cron.as_str()),
            ("generator", "@every 1s")
        );
        assert_eq!(
            (g.job.kind.as_str(), g.job.queue.as_str()),
            ("tcp", "deliver")
        );
        assert_eq!(config.schedules[1].tz.as_deref(), Some("Europe/Berlin"));
        assert_eq!(config.schedules[1].catch_up, spooler::CatchUp::None);

        let (line, key, message) =
            err("[[schedules]]\nname = \"x\"\ncron = \"61 * * * *\"\njob = { kind = \"noop\" }\n");
        assert_eq!((line, key.as_str()), (3, "schedules[0].cron"));
        assert!(message.contains("invalid cron"), "{message}");
        let (line, key, _) = err(
            "[[schedules]]\nname = \"x\"\ncron = \"@daily\"\ntz = \"Mars/Base\"\njob = { kind = \"noop\" }\n",
        );
        assert_eq!((line, key.as_str()), (4, "schedules[0].tz"));
        let (line, key, _) =
            err("[[schedules]]\nname = \"x\"\ncron = \"@daily\"\njob = { kind = 5 }\n");
        assert_eq!((line, key.as_str()), (4, "schedules[0].job.kind"));
        let (_, key, message) = err(
            "[[schedules]]\nname = \"x\"\ncron = \"@daily\"\njob = { kind = \"noop\" }\n\
             [[schedules]]\nname = \"x\"\ncron = \"@daily\"\njob = { kind = \"noop\" }\n",
        );
        assert_eq!(key, "schedules[1].name");
        assert!(message.contains("twice"));
    }

    #[test]
    fn a_queue_may_keep_its_finished_jobs_longer_or_shorter() {
        use spooler::core::Keep;
        let config = Config::parse(
            "[queues.audit]\nretention = { completed = \"1h\", failed = \"forever\" }\n[queues.plain]\n",
            "spooler.toml",
        )
        .unwrap();
        let audit = config.queues["audit"].retention;
        assert_eq!(audit.completed, Some(Keep::For(Duration::from_secs(3600))));
        assert_eq!(audit.failed, Some(Keep::Forever));
        assert_eq!(audit.cancelled, None, "not named: [retention] applies");
        assert!(config.queues["plain"].retention.is_default());
        let (line, key, _) = err("[queues.audit]\nretention = { completed = \"soon\" }\n");
        assert_eq!(
            (line, key.as_str()),
            (2, "queues.audit.retention.completed")
        );
    }

    #[test]
    fn messages_name_the_file() {
        let e = Config::parse("x = 1\n", "conf/spooler.toml").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("conf/spooler.toml, line 1, key x:"),
            "{text}"
        );
    }
}
