//! Retry backoff: `attempt^4 + 15s` with jitter, capped, by default; or a fixed delay.

use chrono::{DateTime, Utc};
use rand::Rng;
use std::collections::HashMap;
use std::time::Duration;

/// How long a failed job waits before its next attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// `attempt^4 + base` seconds, ± `jitter` (a fraction), never more than `max`.
    Exponential {
        /// Added to every delay; 15 s by default.
        base: Duration,
        /// Upper bound of the delay; 24 h by default.
        max: Duration,
        /// Fraction of the delay added or taken at random; 0.1 by default.
        jitter: f64,
    },
    /// The same delay after every attempt, ± `jitter`.
    Fixed {
        /// The delay.
        delay: Duration,
        /// Fraction of the delay added or taken at random.
        jitter: f64,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::Exponential {
            base: Duration::from_secs(15),
            max: Duration::from_secs(24 * 3600),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// A fixed delay without jitter.
    pub fn fixed(delay: Duration) -> Self {
        RetryPolicy::Fixed { delay, jitter: 0.0 }
    }

    /// The delay without jitter after failed attempt `attempt` (1-based).
    pub fn nominal_delay(&self, attempt: i32) -> Duration {
        match self {
            RetryPolicy::Exponential { base, max, .. } => {
                let a = attempt.max(1) as f64;
                let secs = a.powi(4) + base.as_secs_f64();
                Duration::from_secs_f64(secs.min(max.as_secs_f64()))
            }
            RetryPolicy::Fixed { delay, .. } => *delay,
        }
    }

    /// The delay after failed attempt `attempt`, jitter applied.
    pub fn delay(&self, attempt: i32) -> Duration {
        let nominal = self.nominal_delay(attempt);
        let jitter = match self {
            RetryPolicy::Exponential { jitter, .. } | RetryPolicy::Fixed { jitter, .. } => *jitter,
        };
        if jitter <= 0.0 || nominal.is_zero() {
            return nominal;
        }
        let factor = 1.0 + rand::rng().random_range(-jitter..=jitter);
        let delayed = Duration::from_secs_f64(nominal.as_secs_f64() * factor);
        match self {
            RetryPolicy::Exponential { max, .. } => delayed.min(*max),
            RetryPolicy::Fixed { .. } => delayed,
        }
    }
}

/// The retry policies of one worker or server: a default, overridden per queue and per kind (a
/// kind's policy wins over its queue's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPolicies {
    /// Used when neither the kind nor the queue has a policy.
    pub default: RetryPolicy,
    /// Per queue.
    pub by_queue: HashMap<String, RetryPolicy>,
    /// Per kind.
    pub by_kind: HashMap<String, RetryPolicy>,
}

impl RetryPolicies {
    /// The policy for a job of `kind` in `queue`.
    pub fn for_job(&self, queue: &str, kind: &str) -> &RetryPolicy {
        self.by_kind
            .get(kind)
            .or_else(|| self.by_queue.get(queue))
            .unwrap_or(&self.default)
    }

    /// When a job of `kind` in `queue` whose attempt `attempt` failed at `now` runs again.
    pub fn retry_at(
        &self,
        queue: &str,
        kind: &str,
        attempt: i32,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        crate::clock::add(now, self.for_job(queue, kind).delay(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_attempt_to_the_fourth_plus_fifteen_seconds() {
        let p = RetryPolicy::default();
        assert_eq!(p.nominal_delay(1), Duration::from_secs(16));
        assert_eq!(p.nominal_delay(2), Duration::from_secs(31));
        assert_eq!(p.nominal_delay(5), Duration::from_secs(640));
    }

    #[test]
    fn default_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.nominal_delay(1000), Duration::from_secs(24 * 3600));
        for _ in 0..100 {
            assert!(p.delay(1000) <= Duration::from_secs(24 * 3600));
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = RetryPolicy::default();
        for _ in 0..1000 {
            let d = p.delay(3).as_secs_f64();
            assert!((96.0 * 0.9 - 1e-9..=96.0 * 1.1 + 1e-9).contains(&d), "{d}");
        }
    }

    #[test]
    fn a_kind_policy_wins_over_its_queue_policy() {
        let mut p = RetryPolicies::default();
        p.by_queue
            .insert("q".into(), RetryPolicy::fixed(Duration::from_secs(2)));
        p.by_kind
            .insert("k".into(), RetryPolicy::fixed(Duration::from_secs(3)));
        assert_eq!(
            p.for_job("q", "k"),
            &RetryPolicy::fixed(Duration::from_secs(3))
        );
        assert_eq!(
            p.for_job("q", "other"),
            &RetryPolicy::fixed(Duration::from_secs(2))
        );
        assert_eq!(p.for_job("other", "other"), &RetryPolicy::default());
    }

    #[test]
    fn fixed_is_fixed() {
        let p = RetryPolicy::fixed(Duration::from_secs(1));
        assert_eq!(p.delay(1), Duration::from_secs(1));
        assert_eq!(p.delay(20), Duration::from_secs(1));
    }
}
