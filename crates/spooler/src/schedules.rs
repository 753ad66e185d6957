//! Periodic jobs from the library's side: declaring schedules, listing them, running, pausing and
//! resuming one by hand ([`Client`] methods), and firing the due ones on the maintenance leader.
//!
//! Which tick fires and what comes next is [`spooler_core::schedule::plan_tick`]; the store
//! writes it under a compare-and-set, so a tick enqueues one job however many leaders (an old
//! one not yet aware it lost, and the new one) fire it at once.

use crate::{Client, Error};
use chrono::{DateTime, Utc};
use spooler_core::schedule::{Cadence, ScheduleDeclare, ScheduleDef, ScheduleFire, ScheduleRow};
use spooler_core::{Inserted, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A schedule and what its cadence says next, as the API and the CLI show it
/// (`spooler_server::wire::schedule_json` is its JSON).
#[derive(Debug, Clone)]
pub struct ScheduleView {
    /// The stored schedule.
    pub row: ScheduleRow,
    /// The cadence in words.
    pub description: String,
    /// The next three ticks from now.
    pub upcoming: Vec<DateTime<Utc>>,
}

impl ScheduleView {
    /// `row` with its cadence in words and its next three ticks after `now`.
    pub fn new(row: ScheduleRow, now: DateTime<Utc>) -> Self {
        let (description, upcoming) = match row.def.cadence() {
            Ok(c) => (c.describe(), c.upcoming(now, 3)),
            Err(e) => (e, Vec::new()),
        };
        Self {
            row,
            description,
            upcoming,
        }
    }
}

impl Client {
    /// Declares schedules as `owner` (`config` for a config file, or an application's name):
    /// new ones start at their next tick after now; existing ones keep their next run, pause and
    /// last run unless their cadence changed. With `remove_others`, this owner's schedules not
    /// named here are deleted.
    pub async fn declare_schedules(
        &self,
        owner: &str,
        schedules: &[ScheduleDef],
        remove_others: bool,
    ) -> Result<(), Error> {
        let now = self.store().clock().now();
        let mut with_next = Vec::with_capacity(schedules.len());
        for def in schedules {
            let next = def.checked()?.next_after(now).ok_or_else(|| {
                Error::Store(StoreError::InvalidInput {
                    field: "cron",
                    message: format!("schedule \"{}\": never matches again", def.name),
                })
            })?;
            with_next.push((def.clone(), next));
        }
        Ok(self
            .store()
            .schedule_declare(&ScheduleDeclare {
                owner: owner.to_string(),
                schedules: with_next,
                remove_others,
            })
            .await?)
    }

    /// Every schedule with its cadence in words and its next three ticks.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, Error> {
        let now = self.store().clock().now();
        let rows = self.store().schedule_list().await?;
        Ok(rows
            .into_iter()
            .map(|row| ScheduleView::new(row, now))
            .collect())
    }

    /// One schedule, or `ScheduleNotFound`.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView, Error> {
        self.schedules()
            .await?
            .into_iter()
            .find(|s| s.row.def.name == name)
            .ok_or_else(|| {
                Error::Store(StoreError::ScheduleNotFound {
                    name: name.to_string(),
                })
            })
    }

    /// Enqueues a schedule's job now, without moving its next run (also when it is paused).
    pub async fn run_schedule(&self, name: &str) -> Result<Inserted, Error> {
        let view = self.schedule(name).await?;
        let fired = self
            .store()
            .schedule_fire(&ScheduleFire {
                name: name.to_string(),
                due: None,
                next_run_at: None,
                job: Some(view.row.def.tick_job(None)),
            })
            .await?;
        fired.ok_or_else(|| {
            Error::Store(StoreError::ScheduleNotFound {
                name: name.to_string(),
            })
        })
    }

    /// Stops a schedule's ticks until it is resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView, Error> {
        let row = self.store().schedule_set_paused(name, true, None).await?;
        Ok(ScheduleView::new(row, self.store().clock().now()))
    }

    /// Lets a schedule tick again from its next tick after now (ticks missed while paused are
    /// not caught up).
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView, Error> {
        let view = self.schedule(name).await?;
        let now = self.store().clock().now();
        let next = view.row.def.checked()?.next_after(now);
        let row = self.store().schedule_set_paused(name, false, next).await?;
        Ok(ScheduleView::new(row, now))
    }
}

/// Fires the due schedules; run by the maintenance leader. Parsed cadences are kept by
/// expression and time zone.
#[derive(Default)]
pub(crate) struct Scheduler {
    cadences: Mutex<HashMap<CadenceKey, Arc<Cadence>>>,
}

/// A cadence's expression and time zone.
type CadenceKey = (String, Option<String>);

/// What one scheduler pass did.
pub(crate) struct SchedulerPass {
    /// Jobs enqueued.
    pub fired: usize,
    /// The earliest next run of any unpaused schedule, after the pass.
    pub next_due: Option<DateTime<Utc>>,
}

impl Scheduler {
    fn cadence(&self, def: &ScheduleDef) -> Result<Arc<Cadence>, String> {
        let key = (def.cron.clone(), def.tz.clone());
        let mut cache = self.cadences.lock().expect("cadence cache lock");
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(def.cadence()?);
        cache.insert(key, c.clone());
        Ok(c)
    }

    /// Fires every schedule whose next run has come, by the store's clock.
    pub(crate) async fn pass(&self, store: &dyn Store) -> Result<SchedulerPass, Error> {
        let rows = store.schedule_list().await?;
        let now = store.clock().now();
        let mut pass = SchedulerPass {
            fired: 0,
            next_due: None,
        };
        for row in rows.into_iter().filter(|r| !r.paused) {
            let cadence = match self.cadence(&row.def) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(schedule = %row.def.name, error = %e, "schedule has a bad cadence; it does not tick");
                    continue;
                }
            };
            let mut next = row.next_run_at;
            if let Some(plan) =
                spooler_core::schedule::plan_tick(&cadence, row.def.catch_up, row.next_run_at, now)
            {
                let fire = ScheduleFire {
                    name: row.def.name.clone(),
                    due: Some(row.next_run_at),
                    next_run_at: Some(plan.next_run_at),
                    job: plan.enqueue.then(|| row.def.tick_job(Some(plan.tick))),
                };
                match store.schedule_fire(&fire).await {
                    Ok(Some(inserted)) => {
                        pass.fired += 1;
                        tracing::info!(schedule = %row.def.name, job = inserted.job.id, tick = %plan.tick, "schedule fired");
                    }
                    Ok(None) if !plan.enqueue => {
                        tracing::info!(schedule = %row.def.name, tick = %plan.tick, "missed tick skipped (catch_up = \"none\")");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(schedule = %row.def.name, tick = %plan.tick, error = %e, "schedule could not fire; will try again");
                        return Err(e.into());
                    }
                }
                next = plan.next_run_at;
            }
            pass.next_due = Some(pass.next_due.map_or(next, |d: DateTime<Utc>| d.min(next)));
        }
        Ok(pass)
    }
}
