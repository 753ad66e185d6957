//! Rate limits and global concurrency per queue: how many jobs a claim may take now, decided once
//! by [`QueueLimits::admit`].
//!
//! A queue's limits are stored with its settings ([`QueueSettings::limits`]), so they hold across
//! every process sharing the store. A store claiming from a limited queue reads the queue's limit
//! state (the rate's theoretical arrival time and the jobs running) inside the claim, asks
//! [`QueueLimits::admit`] how many it may take, claims at most that many, and writes back
//! [`Admission::tat_after`] for the number it took. Nothing here reads a clock or a store.
//!
//! The rate is a GCRA (generic cell rate algorithm, a leaky bucket kept as one timestamp): one job
//! every `per / count`, with bursts of [`RateLimit::burst`] after an idle spell, so any window of
//! the limit's period admits at most `count` plus one burst.
//!
//! [`QueueSettings::limits`]: crate::store::QueueSettings::limits

use crate::store::QueueSettingsMap;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How long a claim held back by global concurrency waits before it looks again: another
/// process's job may have finished by then.
pub const CONCURRENCY_RECHECK: Duration = Duration::from_millis(50);

/// A queue's limits across every process sharing the store; both `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLimits {
    /// At most this many jobs start per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    /// At most this many jobs run (claimed and not finished) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// `count` jobs per `per`, as `rate_limit = "100/s"` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Jobs admitted per period.
    pub count: u32,
    /// The period.
    #[serde(with = "crate::job::millis", rename = "per_ms")]
    pub per: Duration,
}

impl RateLimit {
    /// Parses `"100/s"`, `"10/m"`, `"500/h"`, or a count over any duration (`"20/10s"`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected a count per period, e.g. \"100/s\", \"10/m\" or \"500/h\"";
        let (count, per) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: {expected}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: the count must be a whole number; {expected}"))?;
        if count == 0 {
            return Err(format!("{text:?}: the count must be at least 1"));
        }
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => crate::parse_duration(other).map_err(|e| format!("{text:?}: {e}"))?,
        };
        if per < Duration::from_millis(1) {
            return Err(format!("{text:?}: the period must be at least 1ms"));
        }
        Ok(Self { count, per })
    }

    /// The time between two jobs at the steady rate (at least a microsecond).
    pub fn interval(&self) -> Duration {
        (self.per / self.count).max(Duration::from_micros(1))
    }

    /// The interval and the burst tolerance (how far ahead of now the arrival time may run), in
    /// microseconds: the two numbers the GCRA works with.
    fn steps(&self) -> (i64, i64) {
        let interval = micros(self.interval());
        (interval, interval * i64::from(self.burst() - 1))
    }

    /// The most jobs admitted at once after an idle spell: a tenth of the count, at least one, so
    /// a claim takes several jobs without letting a window hold much more than the count.
    pub fn burst(&self) -> u32 {
        (self.count / 10).max(1)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => "s".to_string(),
            60 if self.per.subsec_nanos() == 0 => "m".to_string(),
            3600 if self.per.subsec_nanos() == 0 => "h".to_string(),
            86_400 if self.per.subsec_nanos() == 0 => "d".to_string(),
            _ => crate::format_duration(self.per),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// What a claim reads of a limited queue, inside its transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitState {
    /// The rate's theoretical arrival time as last written; `None` before the first claim.
    pub tat: Option<DateTime<Utc>>,
    /// Jobs of the queue running now (claimed and not finished), counted up to the limit.
    pub running: u32,
}

/// How many jobs a claim may take from a limited queue, and what to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    allowed: u32,
    wanted: u32,
    /// What the rate admits now, if it limits.
    rate_allows: Option<u32>,
    /// What the concurrency admits now, if it limits.
    concurrency_allows: Option<u32>,
    /// The later of the old theoretical arrival time and now.
    base: DateTime<Utc>,
    now: DateTime<Utc>,
    rate: Option<RateLimit>,
}

impl QueueLimits {
    /// True when neither limit is set.
    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.concurrency.is_none()
    }

    /// How many of `want` jobs a claim may take at `now` from a queue in `state`.
    pub fn admit(&self, state: LimitState, now: DateTime<Utc>, want: u32) -> Admission {
        let base = state.tat.map_or(now, |tat| tat.max(now));
        let rate_allows = self.rate.map(|rate| {
            let (interval, tolerance) = rate.steps();
            let ahead = (base - now).num_microseconds().unwrap_or(i64::MAX);
            if ahead > tolerance {
                0
            } else {
                u32::try_from((tolerance - ahead) / interval + 1).unwrap_or(u32::MAX)
            }
        });
        let concurrency_allows = self.concurrency.map(|n| n.saturating_sub(state.running));
        let allowed = want
            .min(rate_allows.unwrap_or(u32::MAX))
            .min(concurrency_allows.unwrap_or(u32::MAX));
        Admission {
            allowed,
            wanted: want,
            rate_allows,
            concurrency_allows,
            base,
            now,
            rate: self.rate,
        }
    }
}

impl Admission {
    /// The most jobs the claim may take.
    pub fn allowed(&self) -> u32 {
        self.allowed
    }

    /// The theoretical arrival time to write once the claim took `claimed` jobs; `None` when the
    /// queue has no rate limit.
    pub fn tat_after(&self, claimed: u32) -> Option<DateTime<Utc>> {
        let rate = self.rate?;
        let spent = micros(rate.interval()).saturating_mul(i64::from(claimed));
        Some(self.base + TimeDelta::microseconds(spent))
    }

    /// When the claim took `claimed` jobs: if a limit held it below what it wanted (it took all it
    /// was allowed and the queue may hold more), how long until a claim may take more; `None` when
    /// no limit held it back.
    pub fn held_back(&self, claimed: u32) -> Option<Duration> {
        if claimed < self.allowed || self.allowed >= self.wanted {
            return None;
        }
        let mut wait = Duration::ZERO;
        if let (Some(rate), Some(allows)) = (self.rate, self.rate_allows)
            && allows <= claimed
        {
            // Wait until a claim may take as many as this one wanted, up to a burst: claims stay
            // batched instead of taking one job per interval.
            let (interval, tolerance) = rate.steps();
            let batch = i64::from(self.wanted.min(rate.burst()));
            let tat = self.base + TimeDelta::microseconds(interval * i64::from(claimed));
            let at = tat + TimeDelta::microseconds(interval * (batch - 1) - tolerance);
            let until = (at - self.now).to_std().unwrap_or_default();
            wait = wait.max(until.max(Duration::from_millis(1)));
        }
        if self
            .concurrency_allows
            .is_some_and(|allows| allows <= claimed)
        {
            wait = wait.max(CONCURRENCY_RECHECK);
        }
        Some(wait)
    }
}

/// The queues of a claim, split by whether they have limits: the plain ones are claimed together,
/// then each limited one on its own, in the order given, with what is left of the claim's limit.
pub fn split_by_limits(
    queues: &[String],
    settings: &QueueSettingsMap,
) -> (Vec<String>, Vec<(String, QueueLimits)>) {
    let mut plain = Vec::new();
    let mut limited = Vec::new();
    for queue in queues {
        match settings.get(queue).map(|s| s.limits) {
            Some(limits) if !limits.is_none() => limited.push((queue.clone(), limits)),
            _ => plain.push(queue.clone()),
        }
    }
    (plain, limited)
}

/// The sooner of two waits a claim was held back for.
pub fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn rate(text: &str) -> QueueLimits {
        QueueLimits {
            rate: Some(RateLimit::parse(text).unwrap()),
            concurrency: None,
        }
    }

    #[test]
    fn rate_limits_parse_and_display() {
        let r = RateLimit::parse("100/s").unwrap();
        assert_eq!((r.count, r.per), (100, Duration::from_secs(1)));
        assert_eq!(r.interval(), Duration::from_millis(10));
        assert_eq!(r.burst(), 10);
        assert_eq!(r.to_string(), "100/s");
        assert_eq!(RateLimit::parse(" 10/m ").unwrap().to_string(), "10/m");
        assert_eq!(RateLimit::parse("500/h").unwrap().burst(), 50);
        assert_eq!(RateLimit::parse("3/s").unwrap().burst(), 1);
        assert_eq!(
            RateLimit::parse("20/10s").unwrap().per,
            Duration::from_secs(10)
        );
        for bad in ["100", "x/s", "0/s", "10/", "10/fortnight", "-1/s", "5/0ms"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad} parsed");
        }
        assert!(
            RateLimit::parse("1.5/s")
                .unwrap_err()
                .contains("whole number")
        );
    }

    #[test]
    fn an_idle_rate_admits_one_burst_then_one_job_per_interval() {
        let limits = rate("20/s"); // 50 ms apart, bursts of 2
        let first = limits.admit(LimitState::default(), at(0), 10);
        assert_eq!(first.allowed(), 2);
        assert_eq!(first.tat_after(2), Some(at(100)));
        // Held back: a claim may take a burst again once one has refilled.
        assert_eq!(first.held_back(2), Some(Duration::from_millis(100)));
        let state = |tat| LimitState {
            tat: Some(tat),
            running: 0,
        };
        assert_eq!(limits.admit(state(at(100)), at(10), 10).allowed(), 0);
        assert_eq!(limits.admit(state(at(100)), at(50), 10).allowed(), 1);
        assert_eq!(limits.admit(state(at(100)), at(100), 10).allowed(), 2);
        // An idle spell refills one burst, never more.
        assert_eq!(limits.admit(state(at(100)), at(60_000), 10).allowed(), 2);
    }

    #[test]
    fn a_window_of_the_period_admits_the_count_and_one_burst_at_most() {
        let limits = rate("20/s");
        let mut state = LimitState::default();
        let mut admitted = 0;
        // A greedy claimer asking every millisecond for 5 s.
        for ms in 0..5_000 {
            let a = limits.admit(state, at(ms), 100);
            admitted += a.allowed();
            state.tat = a.tat_after(a.allowed());
        }
        assert_eq!(admitted, 2 + 99);
    }

    #[test]
    fn a_short_claim_was_not_held_back() {
        let limits = rate("20/s");
        let a = limits.admit(LimitState::default(), at(0), 10);
        // The queue held one job: the limit did not hold the claim back.
        assert_eq!(a.held_back(1), None);
        assert_eq!(a.tat_after(1), Some(at(50)));
        // Wanting no more than allowed is not being held back either.
        let a = limits.admit(LimitState::default(), at(0), 2);
        assert_eq!(a.held_back(2), None);
    }

    #[test]
    fn concurrency_admits_what_is_left_of_the_limit() {
        let limits = QueueLimits {
            rate: None,
            concurrency: Some(3),
        };
        let running = |n| LimitState {
            tat: None,
            running: n,
        };
        let a = limits.admit(running(0), at(0), 10);
        assert_eq!((a.allowed(), a.tat_after(3)), (3, None));
        assert_eq!(a.held_back(3), Some(CONCURRENCY_RECHECK));
        assert_eq!(limits.admit(running(2), at(0), 10).allowed(), 1);
        assert_eq!(limits.admit(running(3), at(0), 10).allowed(), 0);
        assert_eq!(limits.admit(running(7), at(0), 10).allowed(), 0);
        assert_eq!(limits.admit(running(0), at(0), 2).held_back(2), None);
    }

    #[test]
    fn both_limits_admit_the_smaller_and_wait_the_longer() {
        let limits = QueueLimits {
            rate: Some(RateLimit::parse("1/s").unwrap()),
            concurrency: Some(5),
        };
        let a = limits.admit(LimitState::default(), at(0), 10);
        assert_eq!(a.allowed(), 1);
        assert_eq!(a.held_back(1), Some(Duration::from_secs(1)));
        assert!(QueueLimits::default().is_none());
        let none = QueueLimits::default().admit(LimitState::default(), at(0), 7);
        assert_eq!((none.allowed(), none.held_back(7)), (7, None));
    }
}
