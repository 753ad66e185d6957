//! An injectable clock: stores and the runtime read time only through it, so tests move time by hand.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use std::sync::Mutex;
use std::time::Duration;

/// A source of the current time. Times are truncated to microseconds, the precision both stores keep.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time, truncated to microseconds.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that moves only when told to: for tests of leases, backoff and retention.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock set to the current system time.
    pub fn new() -> Self {
        Self::at(SystemClock.now())
    }

    /// A clock set to `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(at.trunc_subsecs(6)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        *now += TimeDelta::from_std(by).expect("duration in range");
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().expect("clock lock") = at.trunc_subsecs(6);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }
}

/// `at + d`, saturating instead of overflowing.
pub fn add(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, TimeDelta::seconds(90));
    }

    #[test]
    fn system_clock_keeps_microseconds_only() {
        let now = SystemClock.now();
        assert_eq!(now.timestamp_subsec_nanos() % 1000, 0);
    }
}
