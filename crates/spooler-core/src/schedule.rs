//! Periodic jobs: a schedule's cadence (a cron expression in a time zone, or `@every 30s`), what
//! one tick enqueues, and the one rule for which tick fires and when the next one is due.
//!
//! Stores keep each schedule's `next_run_at` and move it only in the transaction that enqueues
//! the tick's job, under a compare-and-set on the `next_run_at` it was planned from
//! ([`ScheduleFire::due`]): however many processes fire at once, one wins each tick.

use crate::job::{JobId, NewJob};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often a schedule ticks.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Every so long, on multiples of the period since the Unix epoch, so that every process
    /// computes the same ticks whenever it started.
    Every(Duration),
    /// A cron expression, evaluated in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<croner::Cron>,
        /// Where its wall-clock fields are read.
        tz: chrono_tz::Tz,
    },
}

/// Ticks with `catch_up = "none"` run only if noticed within this long of their time.
pub const CATCH_UP_NONE_GRACE: Duration = Duration::from_secs(60);

impl Cadence {
    /// Parses `expression` (5 cron fields, 6 with seconds first, `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`, or `@every DURATION`) in time zone `tz` (an IANA name such as
    /// `Europe/Berlin`; UTC when `None`). The error says what is wrong.
    pub fn parse(expression: &str, tz: Option<&str>) -> Result<Self, String> {
        let tz = match tz {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!("unknown time zone \"{name}\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")")
            })?,
        };
        let trimmed = expression.trim();
        if let Some(rest) = trimmed.strip_prefix("@every") {
            let period = crate::parse_duration(rest.trim())
                .map_err(|e| format!("@every takes a duration such as \"30s\": {e}"))?;
            if period < Duration::from_secs(1) {
                return Err("@every must be at least 1s".into());
            }
            return Ok(Self::Every(period));
        }
        if trimmed.eq_ignore_ascii_case("@reboot") {
            return Err("@reboot is not a cadence; enqueue the job at start instead".into());
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "expected 5 cron fields (minute hour day month weekday), 6 with seconds first, \
                 or @hourly/@daily/@every 30s; found {fields}"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| format!("invalid cron expression \"{trimmed}\": {e}"))?;
        Ok(Self::Cron {
            cron: Box::new(cron),
            tz,
        })
    }

    /// The first tick strictly after `t`; `None` when the expression never matches again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(period) => {
                let period_us = i64::try_from(period.as_micros()).ok()?.max(1);
                let t_us = t.timestamp_micros();
                let next = (t_us.div_euclid(period_us) + 1).checked_mul(period_us)?;
                DateTime::from_timestamp_micros(next)
            }
            Self::Cron { cron, tz } => cron
                .find_next_occurrence(&t.with_timezone(tz), false)
                .ok()
                .map(|at| at.with_timezone(&Utc)),
        }
    }

    /// The latest tick at or before `t`, if any.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(period) => {
                let period_us = i64::try_from(period.as_micros()).ok()?.max(1);
                let t_us = t.timestamp_micros();
                DateTime::from_timestamp_micros(t_us.div_euclid(period_us) * period_us)
            }
            Self::Cron { cron, tz } => cron
                .find_previous_occurrence(&t.with_timezone(tz), true)
                .ok()
                .map(|at| at.with_timezone(&Utc)),
        }
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// In words, for people: "every 30s", "At 03:00 on Monday".
    pub fn describe(&self) -> String {
        match self {
            Self::Every(period) => format!("every {}", crate::format_duration(*period)),
            Self::Cron { cron, .. } => cron.describe(),
        }
    }
}

/// What a schedule does about ticks missed while no process ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// One job for the ticks missed (the latest of them), then on as usual.
    #[default]
    One,
    /// Missed ticks are skipped: a tick runs only when noticed within
    /// [`CATCH_UP_NONE_GRACE`] of its time.
    None,
}

impl CatchUp {
    /// Its name in config and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::None => "none",
        }
    }
}

impl std::str::FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "one" => Ok(Self::One),
            "none" => Ok(Self::None),
            other => Err(format!("expected \"one\" or \"none\", found \"{other}\"")),
        }
    }
}

/// A schedule as declared (by the config file or the library): its name, cadence and the job
/// each tick enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// Unique among the store's schedules; named like queues.
    pub name: String,
    /// The cadence as written: a cron expression or `@every DURATION`.
    pub cron: String,
    /// The time zone the cron fields are read in (UTC when `None`).
    pub tz: Option<String>,
    /// The job each tick enqueues (its `run_at` is ignored: a tick's job runs now).
    pub job: NewJob,
    /// Missed ticks after downtime.
    pub catch_up: CatchUp,
}

impl ScheduleDef {
    /// A schedule `name` enqueueing `job` on `cron` (UTC, catch up one).
    pub fn new(name: impl Into<String>, cron: impl Into<String>, job: NewJob) -> Self {
        Self {
            name: name.into(),
            cron: cron.into(),
            tz: None,
            job,
            catch_up: CatchUp::One,
        }
    }

    /// Its cadence, or what is wrong with it.
    pub fn cadence(&self) -> Result<Cadence, String> {
        Cadence::parse(&self.cron, self.tz.as_deref())
    }

    /// Checks the name, the cadence and the job template; the error names the schedule.
    pub fn validate(&self) -> Result<(), crate::StoreError> {
        self.checked().map(|_| ())
    }

    /// [`ScheduleDef::validate`], answering the parsed cadence.
    pub fn checked(&self) -> Result<Cadence, crate::StoreError> {
        let invalid = |field: &'static str, message: String| crate::StoreError::InvalidInput {
            field,
            message: format!("schedule \"{}\": {message}", self.name),
        };
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(invalid("name", "must be 1 to 200 bytes".into()));
        }
        let cadence = self.cadence().map_err(|e| invalid("cron", e))?;
        self.job.validate()?;
        Ok(cadence)
    }

    /// The job a tick enqueues (`tick` is its time; `None` for a run by hand): the template,
    /// tagged `schedule:NAME`, to run now, and for a tick a `unique_key` naming the schedule and
    /// the tick (`schedule:NAME@TIME`) unless the template brings its own.
    pub fn tick_job(&self, tick: Option<DateTime<Utc>>) -> NewJob {
        let mut job = self.job.clone();
        job.run_at = None;
        let tag = format!("schedule:{}", self.name);
        if let Some(tick) = tick
            && job.unique_key.is_none()
        {
            job.unique_key = Some(format!(
                "{tag}@{}",
                tick.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ));
        }
        if !job.tags.contains(&tag) {
            job.tags.push(tag);
        }
        job
    }
}

/// A schedule as stored: its definition and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRow {
    /// The definition.
    #[serde(flatten)]
    pub def: ScheduleDef,
    /// A paused schedule does not tick.
    pub paused: bool,
    /// When the next tick is due.
    pub next_run_at: DateTime<Utc>,
    /// When it last enqueued a job (a tick, or run by hand).
    pub last_run_at: Option<DateTime<Utc>>,
    /// The job it last enqueued.
    pub last_job_id: Option<JobId>,
}

/// Declare schedules: insert new ones with `next_run_at` as given; for existing ones, replace the
/// definition and keep `paused`, `last_*` and `next_run_at` unless the cadence (`cron`, `tz`)
/// changed, in which case `next_run_at` becomes the given one.
#[derive(Debug, Clone)]
pub struct ScheduleDeclare {
    /// Who declares them: `config` for a config file, or an application's name.
    pub owner: String,
    /// Each definition with its first tick after now.
    pub schedules: Vec<(ScheduleDef, DateTime<Utc>)>,
    /// Also delete this owner's schedules that are not in `schedules` (a config file is the
    /// whole truth about its own).
    pub remove_others: bool,
}

/// Enqueue one schedule's job and move its next run, in one transaction.
#[derive(Debug, Clone)]
pub struct ScheduleFire {
    /// The schedule.
    pub name: String,
    /// For a tick: the `next_run_at` this was planned from; nothing is written unless the row
    /// still has it and is not paused (another process fired this tick first). `None` for a run
    /// by hand, which moves nothing but `last_*`.
    pub due: Option<DateTime<Utc>>,
    /// For a tick: the new `next_run_at`.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The job to enqueue; `None` advances a tick that is skipped (`catch_up = "none"`).
    pub job: Option<NewJob>,
}

/// What one tick of a due schedule should do, decided from its stored `next_run_at` and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickPlan {
    /// The tick being fired: the latest one due.
    pub tick: DateTime<Utc>,
    /// Whether it enqueues a job (false: a missed tick skipped under `catch_up = "none"`).
    pub enqueue: bool,
    /// The next tick after now.
    pub next_run_at: DateTime<Utc>,
}

/// The rule for a due schedule: `None` while `next_run_at` is in the future or the cadence
/// never matches again. With catch-up `one`, ticks missed while nothing ran become one job; with
/// `none`, a tick runs only when it is less than [`CATCH_UP_NONE_GRACE`] late.
pub fn plan_tick(
    cadence: &Cadence,
    catch_up: CatchUp,
    next_run_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<TickPlan> {
    if next_run_at > now {
        return None;
    }
    // The latest tick due; found directly, since a second-by-second cadence after a long
    // downtime has millions of missed ticks.
    let tick = cadence
        .latest_at_or_before(now)
        .filter(|latest| *latest >= next_run_at)
        .unwrap_or(next_run_at);
    let next = cadence.next_after(now)?;
    let late = (now - tick).to_std().unwrap_or_default();
    let enqueue = match catch_up {
        CatchUp::One => true,
        CatchUp::None => late < CATCH_UP_NONE_GRACE,
    };
    Some(TickPlan {
        tick,
        enqueue,
        next_run_at: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_ticks_on_multiples_of_its_period() {
        let c = Cadence::parse("@every 30s", None).unwrap();
        assert_eq!(
            c.next_after(at("2026-01-01T00:00:10Z")),
            Some(at("2026-01-01T00:00:30Z"))
        );
        assert_eq!(
            c.next_after(at("2026-01-01T00:00:30Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn five_and_six_fields_and_nicknames_parse() {
        let five = Cadence::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            five.next_after(at("2026-01-01T00:03:00Z")),
            Some(at("2026-01-01T00:05:00Z"))
        );
        let six = Cadence::parse("*/10 * * * * *", None).unwrap();
        assert_eq!(
            six.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
        let hourly = Cadence::parse("@hourly", None).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T00:30:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
    }

    #[test]
    fn cron_fields_are_read_in_the_time_zone() {
        let c = Cadence::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(
            c.next_after(at("2026-01-10T12:00:00Z")),
            Some(Utc.with_ymd_and_hms(2026, 1, 11, 2, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        assert!(
            Cadence::parse("* * *", None)
                .unwrap_err()
                .contains("5 cron fields")
        );
        assert!(
            Cadence::parse("61 * * * *", None)
                .unwrap_err()
                .contains("invalid cron")
        );
        assert!(
            Cadence::parse("@every soon", None)
                .unwrap_err()
                .contains("@every")
        );
        assert!(
            Cadence::parse("@daily", Some("Mars/Olympus"))
                .unwrap_err()
                .contains("time zone")
        );
    }

    #[test]
    fn a_due_tick_fires_once_and_moves_past_now() {
        let c = Cadence::parse("@every 10s", None).unwrap();
        let p = plan_tick(
            &c,
            CatchUp::One,
            at("2026-01-01T00:00:10Z"),
            at("2026-01-01T00:00:10.2Z"),
        )
        .unwrap();
        assert_eq!(p.tick, at("2026-01-01T00:00:10Z"));
        assert!(p.enqueue);
        assert_eq!(p.next_run_at, at("2026-01-01T00:00:20Z"));
        assert_eq!(
            plan_tick(
                &c,
                CatchUp::One,
                at("2026-01-01T00:00:20Z"),
                at("2026-01-01T00:00:19Z")
            ),
            None
        );
    }

    #[test]
    fn missed_ticks_become_one_job_or_none() {
        let c = Cadence::parse("@every 10s", None).unwrap();
        let stored = at("2026-01-01T00:00:10Z");
        let now = at("2026-01-01T01:00:05Z");
        let one = plan_tick(&c, CatchUp::One, stored, now).unwrap();
        assert_eq!(one.tick, at("2026-01-01T01:00:00Z"));
        assert!(one.enqueue);
        assert_eq!(one.next_run_at, at("2026-01-01T01:00:10Z"));
        let daily = Cadence::parse("@daily", None).unwrap();
        let none = plan_tick(
            &daily,
            CatchUp::None,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T05:00:00Z"),
        )
        .unwrap();
        assert!(!none.enqueue, "a tick five hours late is skipped");
        assert_eq!(none.next_run_at, at("2026-01-02T00:00:00Z"));
    }
}
