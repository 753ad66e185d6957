//! The producer's claim planning, apart from its I/O: how many jobs to claim and when, the
//! adaptive prefetch, stale release and the claim failure backoff, decided over the instants and
//! counts it is given.
//!
//! The producer reads the clock and its slots, asks the planner, and does what it answers: it
//! sends the claims the planner asks for, tells it what each brought back, and releases the
//! buffer when told to. Nothing here reads a clock, a store or an atomic, so every rule is tested
//! over synthetic instants (below).

use std::time::Duration;
use tokio::time::Instant;

/// Buffered jobs that all started within this of their claim grow the prefetch.
pub(crate) const QUICK_START: Duration = Duration::from_millis(50);
/// A buffered job that waited this long shrinks the prefetch.
pub(crate) const SLOW_START: Duration = Duration::from_millis(500);

/// What planning depends on, fixed for the producer's life.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlannerSettings {
    /// The queue's slots.
    pub(crate) concurrency: u32,
    /// Most jobs one claim takes.
    pub(crate) max_claim: u32,
    /// Claims that may be under way at once while a backlog waits.
    pub(crate) claims_in_flight: u32,
    /// The lease a claim takes; a buffered job is released after a third of it.
    pub(crate) lease: Duration,
    /// How often an idle queue is polled.
    pub(crate) poll_interval: Duration,
}

/// A claim the planner asked for: hand it back, with what the claim returned, to
/// [`ClaimPlanner::claim_returned`] or [`ClaimPlanner::claim_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// How many jobs to claim.
    pub(crate) limit: u32,
    /// The wake-up count when it was sent.
    woken_at: u64,
}

/// What to do with the buffer after its oldest job waited.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffered {
    /// Keep it: its jobs start as slots free.
    Keep,
    /// Hand every buffered job back unspent: slots stayed busy for a third of the lease.
    Release,
}

/// The producer's decisions over one queue.
#[derive(Debug)]
pub(crate) struct ClaimPlanner {
    concurrency: u32,
    max_claim: u32,
    most_in_flight: u32,
    stale_after: Duration,
    poll: Duration,
    /// When the queue is polled next, unless a claim returns before.
    next_poll: Instant,
    /// Whether the queue may hold more jobs than we took: true at start, after a full claim, on a
    /// wake-up and on each poll.
    work_waiting: bool,
    /// Wake-ups and polls seen so far: a short claim sent before the latest one does not prove
    /// the queue empty.
    woken: u64,
    /// Whether the last claim came back full: only then may several be under way.
    backlog: bool,
    /// Claims failed in a row.
    failures: u32,
    /// Claims under way.
    in_flight: u32,
    /// Jobs asked for by the claims under way.
    asked: u32,
    /// When the last claim that brought jobs returned; `None` until one did, so a worker that
    /// just started does not take its first claim for a quick one and claim ahead.
    claimed_at: Option<Instant>,
    /// Jobs claimed beyond the free slots.
    prefetch: u32,
    /// Until when the queue's limits hold claims back, as the last claim said.
    held_until: Option<Instant>,
}

impl ClaimPlanner {
    pub(crate) fn new(settings: PlannerSettings, now: Instant) -> Self {
        Self {
            concurrency: settings.concurrency,
            max_claim: settings.max_claim,
            most_in_flight: settings.claims_in_flight,
            stale_after: settings.lease / 3,
            poll: settings.poll_interval,
            next_poll: now + settings.poll_interval,
            work_waiting: true,
            woken: 0,
            backlog: false,
            failures: 0,
            in_flight: 0,
            asked: 0,
            claimed_at: None,
            prefetch: 0,
            held_until: None,
        }
    }

    /// Everything claimed has started and `free` slots are free: if that is soon after the last
    /// claim returned, the jobs are short, so claim further ahead (doubling, up to what
    /// `claims_in_flight` full claims hold). Long jobs keep their slots: no growth.
    pub(crate) fn buffer_empty(&mut self, now: Instant, free: u32) {
        let quick = self
            .claimed_at
            .is_some_and(|at| now.saturating_duration_since(at) <= QUICK_START);
        if self.work_waiting && free > 0 && quick {
            self.prefetch = (self.prefetch.max(self.concurrency) * 2)
                .min(self.max_claim.saturating_mul(self.most_in_flight));
        }
    }

    /// The oldest buffered job has waited `oldest_wait` (buffered jobs start oldest first): half
    /// a second halves the prefetch, a third of the lease releases the buffer.
    pub(crate) fn buffer_waited(&mut self, oldest_wait: Duration) -> Buffered {
        if oldest_wait >= SLOW_START {
            self.prefetch /= 2;
        }
        if oldest_wait >= self.stale_after {
            // Slots stayed busy: hand these back unspent rather than let their leases lapse.
            self.prefetch = 0;
            return Buffered::Release;
        }
        Buffered::Keep
    }

    /// The claim to send now, if any, with `free` slots and `buffered` jobs held for them; an
    /// answer counts as under way until it is handed back.
    ///
    /// The first claim goes when slots are free and nothing is held for them, or (pipelining)
    /// when what is held runs below half the prefetch; more go, while a backlog waits, as long
    /// as together they would not take more than the free slots and the prefetch hold, and each
    /// is a full one (`max_claim`, or half the prefetch when that is less).
    pub(crate) fn next_claim(&mut self, free: u32, buffered: u32) -> Option<Ask> {
        // Jobs held or coming: buffered, and asked for by claims under way.
        let ahead = buffered + self.asked;
        let want = free
            .saturating_add(self.prefetch)
            .saturating_sub(ahead)
            .min(self.max_claim);
        let send = if self.in_flight == 0 {
            ahead == 0 || ahead < self.prefetch / 2
        } else {
            // Beside a claim under way, only a full one: topping up a slot or two at a time
            // costs the store a statement and a commit for a few jobs, and the claim under way
            // brings enough to start them.
            self.backlog
                && self.in_flight < self.most_in_flight
                && want >= self.max_claim.min(self.prefetch / 2)
        };
        let held = self.held_until.is_some();
        if held || !(self.work_waiting && send && want > 0 && (free > 0 || self.prefetch > 0)) {
            return None;
        }
        self.asked += want;
        self.in_flight += 1;
        Some(Ask {
            limit: want,
            woken_at: self.woken,
        })
    }

    /// `ask` brought `got` jobs back at `now`. A full claim means a backlog; a short one means the
    /// queue is empty, unless a wake-up came since it was sent, or the queue's limits held it back
    /// (`held_back`): then no claim goes until that wait is over, and one goes then.
    pub(crate) fn claim_returned(
        &mut self,
        ask: Ask,
        got: u32,
        held_back: Option<Duration>,
        now: Instant,
    ) {
        self.settle(ask);
        self.failures = 0;
        self.backlog = got == ask.limit;
        self.work_waiting = self.backlog || ask.woken_at != self.woken || held_back.is_some();
        if let Some(wait) = held_back {
            self.held_until = Some(now + wait);
        }
        if got > 0 {
            self.claimed_at = Some(now);
        }
        self.next_poll = now + self.poll;
    }

    /// `ask` failed at `now`: returns how long to wait before claiming again (doubling from
    /// 200 ms with each failure in a row, at most five poll intervals).
    pub(crate) fn claim_failed(&mut self, ask: Ask, now: Instant) -> Duration {
        self.settle(ask);
        self.failures += 1;
        self.work_waiting = false;
        self.backlog = false;
        let backoff =
            Duration::from_millis(100 * 2u64.pow(self.failures.min(6))).min(self.poll * 5);
        self.next_poll = now + backoff;
        backoff
    }

    fn settle(&mut self, ask: Ask) {
        self.asked -= ask.limit;
        self.in_flight -= 1;
    }

    /// An insert woke the queue (or wake-ups were lost): it may hold jobs again.
    pub(crate) fn woken(&mut self) {
        self.work_waiting = true;
        self.woken += 1;
    }

    /// The timer of [`ClaimPlanner::wake_at`] fired at `now`: when the poll is due, it counts as
    /// a wake-up and the next poll is one interval on.
    pub(crate) fn timer_fired(&mut self, now: Instant) {
        if self.held_until.is_some_and(|until| now >= until) {
            self.held_until = None;
        }
        if now >= self.next_poll {
            self.woken();
            self.next_poll = now + self.poll;
        }
    }

    /// When to look again without any event: the next poll, or sooner when the oldest buffered
    /// job (claimed at `oldest_buffered`) turns stale or the queue's limits let claims go again.
    pub(crate) fn wake_at(&self, oldest_buffered: Option<Instant>) -> Instant {
        let at = match oldest_buffered {
            None => self.next_poll,
            Some(at) => (at + self.stale_after).min(self.next_poll),
        };
        self.held_until.map_or(at, |until| until.min(at))
    }

    /// When the queue is polled next.
    pub(crate) fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// Whether a slot freeing is news: work may be waiting, or `buffered` jobs wait for it.
    pub(crate) fn wants_free_slots(&self, buffered: usize) -> bool {
        self.work_waiting || buffered > 0
    }

    /// Claims under way.
    pub(crate) fn claims_under_way(&self) -> u32 {
        self.in_flight
    }

    #[cfg(test)]
    fn prefetch(&self) -> u32 {
        self.prefetch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings() -> PlannerSettings {
        PlannerSettings {
            concurrency: 10,
            max_claim: 100,
            claims_in_flight: 2,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }

    /// A planner whose first claim (all of `concurrency`) came back full at `t0 + 1 ms`.
    fn after_full_claim(settings: PlannerSettings, t0: Instant) -> ClaimPlanner {
        let mut p = ClaimPlanner::new(settings, t0);
        let ask = p.next_claim(settings.concurrency, 0).expect("first claim");
        assert_eq!(ask.limit, settings.concurrency);
        p.claim_returned(ask, ask.limit, None, t0 + MS);
        p
    }

    #[test]
    fn the_first_claim_takes_the_free_slots_and_no_more() {
        let t0 = Instant::now();
        let mut p = ClaimPlanner::new(settings(), t0);
        // A worker that just started has no claim to call quick: no prefetch yet.
        p.buffer_empty(t0, 10);
        assert_eq!(p.prefetch(), 0);
        let ask = p.next_claim(10, 0).unwrap();
        assert_eq!(ask.limit, 10);
        assert_eq!(p.claims_under_way(), 1);
        // No backlog is known yet: one claim at a time.
        assert_eq!(p.next_claim(10, 0), None);
        // An empty claim does not count as a quick start either.
        p.claim_returned(ask, 0, None, t0 + MS);
        p.woken();
        p.buffer_empty(t0 + 2 * MS, 10);
        assert_eq!(p.prefetch(), 0);
    }

    #[test]
    fn prefetch_doubles_while_claims_start_quickly_up_to_max_claim_times_claims_in_flight() {
        let t0 = Instant::now();
        let mut p = after_full_claim(settings(), t0);
        let mut seen = Vec::new();
        for i in 0..6 {
            p.buffer_empty(t0 + MS + i * MS, 4);
            seen.push(p.prefetch());
        }
        // From the slots (10), doubling, capped at 100 × 2.
        assert_eq!(seen, vec![20, 40, 80, 160, 200, 200]);
    }

    #[test]
    fn prefetch_does_not_grow_on_slow_starts_busy_slots_or_an_empty_queue() {
        let t0 = Instant::now();
        let mut p = after_full_claim(settings(), t0);
        // 50 ms after the claim returned is still quick; 51 ms is not.
        p.buffer_empty(t0 + MS + QUICK_START + MS, 10);
        assert_eq!(p.prefetch(), 0);
        p.buffer_empty(t0 + MS + QUICK_START, 10);
        assert_eq!(p.prefetch(), 20);
        // Every slot busy: the jobs are long, no growth.
        p.buffer_empty(t0 + 2 * MS, 0);
        assert_eq!(p.prefetch(), 20);
        // A short claim: nothing is waiting, no growth.
        let ask = p.next_claim(10, 0).unwrap();
        assert_eq!(ask.limit, 30);
        p.claim_returned(ask, 5, None, t0 + 3 * MS);
        p.buffer_empty(t0 + 4 * MS, 10);
        assert_eq!(p.prefetch(), 20);
    }

    #[test]
    fn prefetch_halves_when_buffered_jobs_wait_half_a_second() {
        let t0 = Instant::now();
        let mut p = after_full_claim(settings(), t0);
        for _ in 0..3 {
            p.buffer_empty(t0 + 2 * MS, 10);
        }
        assert_eq!(p.prefetch(), 80);
        assert_eq!(p.buffer_waited(SLOW_START - MS), Buffered::Keep);
        assert_eq!(p.prefetch(), 80);
        assert_eq!(p.buffer_waited(SLOW_START), Buffered::Keep);
        assert_eq!(p.prefetch(), 40);
        assert_eq!(p.buffer_waited(Duration::from_secs(2)), Buffered::Keep);
        assert_eq!(p.prefetch(), 20);
    }

    #[test]
    fn buffered_jobs_are_released_after_a_third_of_the_lease() {
        let t0 = Instant::now();
        let mut p = after_full_claim(
            PlannerSettings {
                lease: Duration::from_millis(1200),
                poll_interval: Duration::from_secs(60),
                ..settings()
            },
            t0,
        );
        p.buffer_empty(t0 + 2 * MS, 10);
        p.buffer_empty(t0 + 2 * MS, 10);
        assert_eq!(p.prefetch(), 40);
        // The producer wakes when the oldest buffered job turns stale, before the poll is due.
        let claimed = t0 + MS;
        assert_eq!(
            p.wake_at(Some(claimed)),
            claimed + Duration::from_millis(400)
        );
        assert_eq!(p.wake_at(None), t0 + MS + Duration::from_secs(60));
        assert_eq!(p.buffer_waited(Duration::from_millis(399)), Buffered::Keep);
        assert_eq!(
            p.buffer_waited(Duration::from_millis(400)),
            Buffered::Release
        );
        assert_eq!(p.prefetch(), 0, "released with its prefetch");
    }

    #[test]
    fn the_poll_bounds_the_wait_for_a_stale_buffer() {
        let t0 = Instant::now();
        // Lease 30 s: stale after 10 s, later than the 1 s poll.
        let p = after_full_claim(settings(), t0);
        assert_eq!(p.wake_at(Some(t0 + MS)), t0 + MS + Duration::from_secs(1));
    }

    /// Settings where several full claims fit in the prefetch: 10 slots, claims of at most 20,
    /// three under way, so the prefetch caps at 60.
    fn pipelined() -> (ClaimPlanner, Instant) {
        let t0 = Instant::now();
        let mut p = after_full_claim(
            PlannerSettings {
                max_claim: 20,
                claims_in_flight: 3,
                ..settings()
            },
            t0,
        );
        for _ in 0..4 {
            p.buffer_empty(t0 + 2 * MS, 10);
        }
        assert_eq!(p.prefetch(), 60);
        (p, t0)
    }

    #[test]
    fn claims_in_flight_never_take_more_than_free_slots_plus_prefetch() {
        let (mut p, t0) = pipelined();
        // Nothing held: three full claims go at once (the backlog waits), and no fourth.
        let asks: Vec<_> = std::iter::from_fn(|| p.next_claim(10, 0)).collect();
        assert_eq!(
            asks.iter().map(|a| a.limit).collect::<Vec<_>>(),
            vec![20, 20, 20]
        );
        assert_eq!(p.claims_under_way(), 3);
        for a in asks {
            p.claim_returned(a, a.limit, None, t0 + 3 * MS);
        }
        // 25 held (below half the prefetch): 10 + 60 − 25 = 45 are wanted, in full claims only;
        // the 5 left over wait for the claims under way.
        let asks: Vec<_> = std::iter::from_fn(|| p.next_claim(10, 25)).collect();
        assert_eq!(
            asks.iter().map(|a| a.limit).collect::<Vec<_>>(),
            vec![20, 20]
        );
        // No slot or buffered job changes that while they are out.
        assert_eq!(p.next_claim(10, 25), None);
        for a in &asks {
            p.claim_returned(*a, a.limit, None, t0 + 4 * MS);
        }
        // Held at least half the prefetch: no claim, whatever is free.
        assert_eq!(p.next_claim(10, 30), None);
        // Every slot busy and the prefetch full: no claim either.
        assert_eq!(p.next_claim(0, 60), None);
    }

    #[test]
    fn beside_a_claim_under_way_slots_freed_one_by_one_send_no_claim_until_a_full_one_is_wanted() {
        let (mut p, _) = pipelined();
        let first = p.next_claim(10, 0).unwrap();
        assert_eq!(first.limit, 20);
        // 20 asked and 35 held: as slots free, 5, 10, then 15 more are wanted; none is a full
        // claim, so none goes.
        for free in [0, 5, 10] {
            assert_eq!(p.next_claim(free, 35), None, "{free} free");
        }
        // 20 wanted: a full claim goes beside the first.
        assert_eq!(p.next_claim(10, 30).map(|a| a.limit), Some(20));
        assert_eq!(p.claims_under_way(), 2);
    }

    #[test]
    fn claims_in_flight_respect_what_is_buffered_and_asked_at_every_step() {
        let (mut p, t0) = pipelined();
        for free in 0..=10u32 {
            for buffered in 0..=80u32 {
                let mut asks = Vec::new();
                while let Some(a) = p.next_claim(free, buffered) {
                    asks.push(a);
                }
                let asked: u32 = asks.iter().map(|a| a.limit).sum();
                assert!(
                    buffered + asked <= (free + 60).max(buffered),
                    "free {free}, buffered {buffered}: asked {asked}"
                );
                assert!(asks.len() <= 3, "{} claims under way", asks.len());
                assert!(asks.iter().all(|a| a.limit <= 20));
                for a in asks {
                    p.claim_returned(a, a.limit, None, t0 + 2 * MS);
                }
            }
        }
    }

    #[test]
    fn without_a_backlog_one_claim_is_under_way_at_a_time() {
        let (mut p, t0) = pipelined();
        let ask = p.next_claim(10, 0).unwrap();
        // Short: the backlog is over (a wake-up keeps work waiting).
        p.woken();
        p.claim_returned(ask, 3, None, t0 + 3 * MS);
        let first = p.next_claim(10, 0).unwrap();
        assert_eq!(first.limit, 20);
        assert_eq!(p.next_claim(10, 0), None);
    }

    #[test]
    fn a_short_claim_means_the_queue_is_empty_unless_woken_since_it_was_sent() {
        let t0 = Instant::now();
        let mut p = ClaimPlanner::new(settings(), t0);
        let ask = p.next_claim(10, 0).unwrap();
        p.claim_returned(ask, 3, None, t0 + MS);
        // Empty: free slots do not matter and do not even wake the producer.
        assert_eq!(p.next_claim(10, 0), None);
        assert!(!p.wants_free_slots(0));
        assert!(p.wants_free_slots(1), "buffered jobs wait for slots");

        // A wake-up before the claim was sent proves nothing about what it found...
        p.woken();
        let ask = p.next_claim(10, 0).unwrap();
        p.claim_returned(ask, 3, None, t0 + 2 * MS);
        assert_eq!(p.next_claim(10, 0), None);

        // ...one while it was under way may have inserted after it looked: claim again.
        p.woken();
        let ask = p.next_claim(10, 0).unwrap();
        p.woken();
        p.claim_returned(ask, 3, None, t0 + 3 * MS);
        let ask = p
            .next_claim(10, 0)
            .expect("woken while the claim was under way");
        assert_eq!(ask.limit, 10);

        // A full claim means more may wait.
        p.claim_returned(ask, 10, None, t0 + 4 * MS);
        assert!(p.next_claim(10, 0).is_some());
    }

    #[test]
    fn the_poll_counts_as_a_wake_up_once_due() {
        let t0 = Instant::now();
        let mut p = ClaimPlanner::new(settings(), t0);
        let ask = p.next_claim(10, 0).unwrap();
        p.claim_returned(ask, 0, None, t0 + MS);
        assert_eq!(p.next_poll(), t0 + MS + Duration::from_secs(1));
        // A stale-buffer timer that fires before the poll is due wakes nothing.
        p.timer_fired(t0 + Duration::from_millis(500));
        assert_eq!(p.next_claim(10, 0), None);
        p.timer_fired(t0 + MS + Duration::from_secs(1));
        assert_eq!(p.next_poll(), t0 + MS + Duration::from_secs(2));
        assert_eq!(p.next_claim(10, 0).map(|a| a.limit), Some(10));
    }

    #[test]
    fn claim_failure_backoff_doubles_from_200ms_and_is_capped() {
        let t0 = Instant::now();
        let backoffs = |poll: Duration| {
            let mut p = ClaimPlanner::new(
                PlannerSettings {
                    poll_interval: poll,
                    ..settings()
                },
                t0,
            );
            let mut now = t0;
            let mut seen = Vec::new();
            for _ in 0..8 {
                let ask = p.next_claim(10, 0).expect("claims again after the backoff");
                let backoff = p.claim_failed(ask, now);
                assert_eq!(p.next_poll(), now + backoff);
                // Not before the backoff is over.
                assert_eq!(p.next_claim(10, 0), None);
                assert_eq!(p.claims_under_way(), 0);
                seen.push(backoff.as_millis());
                now += backoff;
                p.timer_fired(now);
            }
            // A claim that works resets the count.
            let ask = p.next_claim(10, 0).unwrap();
            p.claim_returned(ask, 0, None, now);
            p.woken();
            let ask = p.next_claim(10, 0).unwrap();
            assert_eq!(
                ask.limit, 10,
                "a failed claim's ask is not counted as coming"
            );
            seen.push(p.claim_failed(ask, now).as_millis());
            seen
        };
        // Capped at five polls...
        assert_eq!(
            backoffs(Duration::from_secs(1)),
            vec![200, 400, 800, 1600, 3200, 5000, 5000, 5000, 200]
        );
        // ...and at 6.4 s however long the poll.
        assert_eq!(
            backoffs(Duration::from_secs(10)),
            vec![200, 400, 800, 1600, 3200, 6400, 6400, 6400, 200]
        );
    }

    #[test]
    fn a_claim_held_back_by_limits_waits_out_the_hold_then_claims_again() {
        let t0 = Instant::now();
        let mut p = ClaimPlanner::new(settings(), t0);
        let ask = p.next_claim(10, 0).unwrap();
        // The queue's rate admitted 2 of the 10 and lets more go in 100 ms.
        p.claim_returned(ask, 2, Some(100 * MS), t0 + MS);
        assert_eq!(p.wake_at(None), t0 + 101 * MS);
        // Neither free slots nor wake-ups send a claim during the hold.
        p.woken();
        assert_eq!(p.next_claim(8, 0), None);
        p.timer_fired(t0 + 100 * MS);
        assert_eq!(p.next_claim(8, 0), None);
        // Once it is over, a claim goes though nothing woke the queue.
        p.timer_fired(t0 + 101 * MS);
        let ask = p.next_claim(8, 0).expect("a claim after the hold");
        assert_eq!(ask.limit, 8);
        // A claim that was not held back (the queue ran dry) waits for the next wake-up.
        p.claim_returned(ask, 1, None, t0 + 102 * MS);
        assert_eq!(p.next_claim(7, 0), None);
        assert_eq!(p.wake_at(None), t0 + 102 * MS + Duration::from_secs(1));
    }
}
