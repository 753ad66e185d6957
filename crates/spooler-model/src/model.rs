//! The model: its parameters ([`SpoolerModel`]), its state ([`State`]: the jobs table, each
//! worker's runs, the leader lease row), its actions ([`Action`], named like the code's) and the
//! properties the checker verifies.
//!
//! Time is database time, kept relative: every lease holds how many ticks it has left (`0` is the
//! last tick it is valid, `-1` lapsed) and [`Action::Tick`] counts them all down. Only comparisons
//! with "now" decide anything, so the state space stays finite however long time runs.

pub use spooler_core::JobState;
use spooler_core::chrono::{DateTime, Utc};
use spooler_core::{Facts, Transition, decide};
use stateright::{Model, Property};
use std::fmt;

/// Which protocol the model runs: the correct one, or one broken on purpose so that the checker
/// must find a counterexample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The protocol as spooler implements it.
    Correct,
    /// `complete` writes without the (id, fence) fence: `UPDATE … WHERE id = ?`, whatever
    /// the job's state and fence. Breaks "no job finished twice".
    UnfencedCompletion,
    /// Every write on a running job (`complete`, the heartbeat's lease extension, the facts
    /// read) is fenced by (id, attempt), as before the fence column, while a release still
    /// gives its attempt back: two claims can then share an attempt number, and a stale claim's
    /// write (a retried one whose first try landed) lands on the newer claim. Breaks "a stale
    /// claim never writes" and "a started handler's attempt is never given back".
    FencedByAttempt,
    /// Worker 0 judges lease expiry (a job's in `rescue`, the leader lease's in `leader_elect`)
    /// by its own clock, `skew` ticks ahead of the database's, instead of the database's time.
    /// Breaks "at most one leader" and "one live lease per job".
    ProcessClockLease,
}

/// The model's parameters: the bounds of the configuration explored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolerModel {
    /// Jobs in the table, all `available` at the start.
    pub jobs: u8,
    /// Worker processes; each also runs maintenance and may become the leader.
    pub workers: u8,
    /// `max_attempts` of every job.
    pub max_attempts: u8,
    /// Runs a worker holds at once (claimed, running or waiting for the completer).
    pub slots: u8,
    /// Ticks a claim or a heartbeat leases a job for.
    pub lease: i8,
    /// Ticks a leader lease lasts unless renewed.
    pub leader_ttl: i8,
    /// How many releases (each gives an attempt back, and the job is claimed again with a new
    /// fence) may happen in a whole run: the bound that keeps `fence` finite.
    pub releases: u8,
    /// How many times in a whole run a completer's write may land while its answer is lost (a
    /// timeout), so that the completer writes it again.
    pub lost_answers: u8,
    /// Ticks worker 0's clock runs ahead in [`Variant::ProcessClockLease`].
    pub skew: i8,
    /// The protocol.
    pub variant: Variant,
}

impl SpoolerModel {
    /// The default bounds (2 jobs, 2 workers, 2 attempts, one slot per worker, leases of one
    /// tick, no release, no lost answer) for `variant`: checked in seconds in a debug build.
    pub fn new(variant: Variant) -> Self {
        Self {
            jobs: 2,
            workers: 2,
            max_attempts: 2,
            slots: 1,
            lease: 1,
            leader_ttl: 1,
            releases: 0,
            lost_answers: 0,
            skew: 1,
            variant,
        }
    }

    /// How many ticks ahead of the database worker `w` reads the time when judging expiry.
    fn ahead(&self, w: u8) -> i8 {
        if self.variant == Variant::ProcessClockLease && w == 0 {
            self.skew
        } else {
            0
        }
    }

    /// Whether a write of `run` on `job` passes the fence this protocol writes with (`state =
    /// 'running' AND fence = ?`, or `attempt = ?` in [`Variant::FencedByAttempt`]).
    fn fence_matches(&self, job: &Job, run: &Run) -> bool {
        job.state == JobState::Running
            && if self.variant == Variant::FencedByAttempt {
                job.attempt == run.attempt
            } else {
                job.fence == run.fence
            }
    }

    /// Whether worker `w` finds the lease of `job` lapsed (`lease_expires_at < now`).
    fn lapsed_for(&self, job: &Job, w: u8) -> bool {
        job.state == JobState::Running && job.lease_left < self.ahead(w)
    }

    /// Whether worker `w` may take or renew the leader lease (`holder = me OR expires_at <= now`).
    fn leader_free_for(&self, leader: &Leader, w: u8) -> bool {
        match *leader {
            Leader::Free => true,
            Leader::Held { holder, left } => holder == Holder::Worker(w) || left <= self.ahead(w),
        }
    }

    /// `state` one tick later.
    fn ticked(&self, state: &State) -> State {
        let mut s = state.clone();
        s.event = Event::None;
        for job in &mut s.jobs {
            if job.state == JobState::Running {
                job.lease_left = (job.lease_left - 1).max(-1);
            }
        }
        for worker in &mut s.workers {
            for run in &mut worker.runs {
                run.lease_left = (run.lease_left - 1).max(-1);
            }
            worker.leader_left = (worker.leader_left - 1).max(0);
        }
        if let Leader::Held { left, .. } = &mut s.leader {
            *left -= 1;
            if *left <= 0 {
                s.leader = Leader::Free;
            }
        }
        s
    }

    /// The property named `name` (panics if there is none).
    pub fn condition(&self, name: &str) -> fn(&SpoolerModel, &State) -> bool {
        self.properties()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no property named {name:?}"))
            .condition
    }
}

/// The whole system at one moment: the store's rows and each worker's memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// The jobs table, indexed by job id.
    pub jobs: Vec<Job>,
    /// Each worker's memory, indexed by worker.
    pub workers: Vec<Worker>,
    /// The leader lease row of maintenance.
    pub leader: Leader,
    /// Releases still allowed (see [`SpoolerModel::releases`]).
    pub releases_left: u8,
    /// Lost answers still allowed (see [`SpoolerModel::lost_answers`]).
    pub lost_answers_left: u8,
    /// What the step into this state did that the properties look for (reset by every step, so
    /// that history does not multiply the states).
    pub event: Event,
}

/// A step the properties look for, kept in the state it leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Nothing of note.
    None,
    /// The rescuer moved a job on after its lease lapsed.
    Rescued,
    /// A write by a stale claim was rejected by the fence.
    StaleRejected,
    /// A write by a stale claim (an older fence than the job's) was applied.
    StaleWritten,
    /// A write made again after its answer was lost was rejected by the fence (its first try
    /// had landed).
    RetryRejected,
}

/// One row of the jobs table, with history kept for the properties.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    /// Its state (`scheduled` does not occur: the model's retries are due at once).
    pub state: JobState,
    /// Attempts counted: every claim adds one, a release (the handler never started) gives it
    /// back.
    pub attempt: u8,
    /// The fencing token of the latest claim: every claim adds one, nothing lowers it; with the
    /// id, the fence of every write on the running job.
    pub fence: u8,
    /// Attempts allowed.
    pub max_attempts: u8,
    /// Ticks `lease_expires_at` is ahead of now while `running` (`-1`: lapsed); 0 otherwise.
    pub lease_left: i8,
    /// Whether cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// History: how many times it entered a finished state (counted up to 2).
    pub finishes: u8,
    /// History: a cancel was seen (the job was cancelled, or its worker's heartbeat saw the
    /// request and stopped it).
    pub cancel_seen: bool,
}

/// A worker process's memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    /// Its runs, keyed (and sorted) by (job, fence), the lease, like the running set.
    pub runs: Vec<Run>,
    /// Ticks its leader lease has left as it believes it holds it (0: not the leader).
    pub leader_left: i8,
}

/// One claim a worker holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Run {
    /// The job.
    pub job: u8,
    /// The fence the claim gave it: with the job, its lease.
    pub fence: u8,
    /// The attempt the claim gave it.
    pub attempt: u8,
    /// Where in the worker it is.
    pub phase: Phase,
    /// Ticks the lease this worker was given has left (`-1`: lapsed).
    pub lease_left: i8,
}

impl Run {
    /// Whether its handler started.
    pub fn started(&self) -> bool {
        match self.phase {
            Phase::Buffered => false,
            Phase::Executing => true,
            Phase::Sent(o) | Phase::Unanswered(o) => o != Outcome::Released,
        }
    }
}

/// Where a run is in the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Claimed by the producer, in its buffer, not started (heartbeats do not renew it).
    Buffered,
    /// In the executor, in the running set: heartbeats renew it and may stop it.
    Executing,
    /// Its outcome is in the completer, waiting to be written.
    Sent(Outcome),
    /// Its outcome was written but the answer was lost: the completer writes it again. (The
    /// write cleared the job's lease; the run's is kept lapsed, as nothing acts on it any more.)
    Unanswered(Outcome),
}

/// An outcome a worker sends to its completer (the model's subset of `spooler_core::Outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The handler succeeded.
    Completed,
    /// The handler failed with a retryable error (retry due at once).
    Retry,
    /// Stopped after its heartbeat saw a cancel request.
    Cancelled,
    /// Given back unstarted by the producer.
    Released,
}

impl Outcome {
    fn to_core(self, now: DateTime<Utc>) -> spooler_core::Outcome {
        match self {
            Outcome::Completed => spooler_core::Outcome::Completed { result: None },
            Outcome::Retry => spooler_core::Outcome::Retry {
                error: "handler failed".into(),
                at: now,
            },
            Outcome::Cancelled => spooler_core::Outcome::Cancelled {
                reason: "cancellation requested".into(),
            },
            Outcome::Released => spooler_core::Outcome::Released,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Retry => "retry",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        }
    }
}

/// The leader lease row of maintenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leader {
    /// No row, or one whose lease lapsed.
    Free,
    /// Held by `holder` for `left` more ticks (> 0).
    Held {
        /// Who holds it.
        holder: Holder,
        /// Ticks before it lapses.
        left: i8,
    },
}

/// The holder of the leader lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A live worker.
    Worker(u8),
    /// A worker process that crashed (its successor has a new id).
    Gone,
}

/// A step of the system, named like the code's.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// The producer of `worker` claims `job`: `attempt` + 1, `fence` + 1, leased until now +
    /// lease.
    Claim {
        /// The worker.
        worker: u8,
        /// The job.
        job: u8,
        /// The fence the claim gives it (determined by the state; shown in traces).
        fence: u8,
        /// The attempt the claim gives it (determined by the state; shown in traces).
        attempt: u8,
    },
    /// The producer hands a buffered run to the executor (`executor::spawn`).
    Start {
        /// The worker.
        worker: u8,
        /// The job.
        job: u8,
        /// The run's fence.
        fence: u8,
        /// The run's attempt (determined by the fence; shown in traces).
        attempt: u8,
    },
    /// The producer gives a buffered run back unspent (`Outcome::Released` to the completer).
    Release {
        /// The worker.
        worker: u8,
        /// The job.
        job: u8,
        /// The run's fence.
        fence: u8,
        /// The run's attempt (determined by the fence; shown in traces).
        attempt: u8,
    },
    /// The handler returns: success, or a retryable error; the outcome goes to the completer.
    Handler {
        /// The worker.
        worker: u8,
        /// The job.
        job: u8,
        /// The run's fence.
        fence: u8,
        /// The run's attempt (determined by the fence; shown in traces).
        attempt: u8,
        /// Success or not.
        ok: bool,
    },
    /// `job_lease_extend` of every executing run of `worker`, fenced by (id, fence); a lost
    /// lease drops the run, a cancel request stops it.
    Heartbeat {
        /// The worker.
        worker: u8,
    },
    /// The heartbeat task's `stop_expiring`: an executing run whose lease it could not renew and
    /// that lapses at the next tick is stopped, its result dropped (another worker will take the
    /// job). Optional here: the model does not force it before the tick.
    StopExpiring {
        /// The worker.
        worker: u8,
        /// The job.
        job: u8,
        /// The run's fence.
        fence: u8,
        /// The run's attempt (determined by the fence; shown in traces).
        attempt: u8,
    },
    /// The completer writes one outcome (`job_finish_many`), fenced by (id, fence). With
    /// `lost` the write is made but its answer lost, and the completer keeps it to write again.
    Complete {
        /// The worker.
        worker: u8,
        /// The job.
        job: u8,
        /// The run's fence.
        fence: u8,
        /// The run's attempt (determined by the fence; shown in traces).
        attempt: u8,
        /// The outcome written (determined by the state; shown in traces).
        outcome: Outcome,
        /// The answer is lost (bounded by [`SpoolerModel::lost_answers`]).
        lost: bool,
    },
    /// Database time advances one tick.
    Tick,
    /// The leader's `job_rescue`: every running job whose lease lapsed, through `decide`.
    Rescue {
        /// The worker leading.
        worker: u8,
    },
    /// `job_cancel`: an available job is cancelled, a running one gets `cancel_requested`.
    Cancel {
        /// The job.
        job: u8,
    },
    /// The worker process dies: its runs and its leadership are gone (the rows stay).
    Crash {
        /// The worker.
        worker: u8,
    },
    /// `leader_try_elect`: taken when free or lapsed, renewed by its holder.
    LeaderElect {
        /// The worker.
        worker: u8,
    },
    /// `leader_resign`: gives leadership up at once.
    LeaderResign {
        /// The worker.
        worker: u8,
    },
}

impl fmt::Debug for Action {
    /// A claim reads `j0@f2/a1`: job 0, fence 2 (what identifies the claim), attempt 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Claim {
                worker,
                job,
                fence,
                attempt,
            } => write!(f, "claim(w{worker}, j{job}@f{fence}/a{attempt})"),
            Action::Start {
                worker,
                job,
                fence,
                attempt,
            } => write!(f, "start(w{worker}, j{job}@f{fence}/a{attempt})"),
            Action::Release {
                worker,
                job,
                fence,
                attempt,
            } => write!(f, "release(w{worker}, j{job}@f{fence}/a{attempt})"),
            Action::Handler {
                worker,
                job,
                fence,
                attempt,
                ok,
            } => write!(
                f,
                "handler(w{worker}, j{job}@f{fence}/a{attempt}) -> {}",
                if ok { "ok" } else { "error" }
            ),
            Action::Heartbeat { worker } => write!(f, "heartbeat(w{worker})"),
            Action::StopExpiring {
                worker,
                job,
                fence,
                attempt,
            } => write!(f, "stop_expiring(w{worker}, j{job}@f{fence}/a{attempt})"),
            Action::Complete {
                worker,
                job,
                fence,
                attempt,
                outcome,
                lost,
            } => write!(
                f,
                "complete(w{worker}, j{job}@f{fence}/a{attempt}: {}){}",
                outcome.name(),
                if lost { " -> answer lost" } else { "" }
            ),
            Action::Tick => write!(f, "tick"),
            Action::Rescue { worker } => write!(f, "rescue(w{worker})"),
            Action::Cancel { job } => write!(f, "cancel(j{job})"),
            Action::Crash { worker } => write!(f, "crash(w{worker})"),
            Action::LeaderElect { worker } => write!(f, "leader_elect(w{worker})"),
            Action::LeaderResign { worker } => write!(f, "leader_resign(w{worker})"),
        }
    }
}

/// The time `decide` is given: the model's time is relative, and retries are due at once.
fn now() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// What `spooler_core::decide` makes of `outcome` for `job`, with the facts a store reads under
/// the fence (the row's), or `Facts::default()` for an outcome that reads none.
fn decided(outcome: &spooler_core::Outcome, job: &Job) -> Transition {
    let facts = if outcome.reads_facts() {
        Facts {
            attempt: job.attempt.into(),
            max_attempts: job.max_attempts.into(),
            cancel_requested: job.cancel_requested,
            worker_id: None,
        }
    } else {
        Facts::default()
    };
    decide(outcome, &facts, now())
}

/// Writes a decided transition on `job` and clears its lease, as `write_transition` does
/// (`attempt = coalesce(t.attempt, attempt)`, the same for `max_attempts`). `fenced`: the write
/// matched `state = 'running'` and the fence.
fn write(job: &mut Job, t: &Transition, fenced: bool) {
    if fenced {
        assert!(
            JobState::Running.can_transition(t.state),
            "decide chose running -> {}",
            t.state
        );
    }
    assert_ne!(
        t.state,
        JobState::Scheduled,
        "the model's retries are due at once"
    );
    job.state = t.state;
    if let Some(max) = t.max_attempts {
        job.max_attempts = u8::try_from(max).expect("max_attempts fits the model");
    }
    if let Some(attempt) = t.attempt {
        job.attempt = u8::try_from(attempt).expect("attempt fits the model");
    }
    job.lease_left = 0;
    finished(job);
}

/// Records history after `job` moved to its current state.
fn finished(job: &mut Job) {
    if job.state.is_finished() {
        job.finishes = (job.finishes + 1).min(2);
    }
    if job.state == JobState::Cancelled {
        job.cancel_seen = true;
    }
}

impl Model for SpoolerModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let job = Job {
            state: JobState::Available,
            attempt: 0,
            fence: 0,
            max_attempts: self.max_attempts,
            lease_left: 0,
            cancel_requested: false,
            finishes: 0,
            cancel_seen: false,
        };
        let worker = Worker {
            runs: Vec::new(),
            leader_left: 0,
        };
        vec![State {
            jobs: vec![job; self.jobs.into()],
            workers: vec![worker; self.workers.into()],
            leader: Leader::Free,
            releases_left: self.releases,
            lost_answers_left: self.lost_answers,
            event: Event::None,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let mut ticked = self.ticked(state);
        ticked.event = state.event;
        if ticked != *state {
            actions.push(Action::Tick);
        }
        for (j, job) in (0u8..).zip(&state.jobs) {
            if job.state == JobState::Available
                || (job.state == JobState::Running && !job.cancel_requested)
            {
                actions.push(Action::Cancel { job: j });
            }
        }
        for (w, worker) in (0u8..).zip(&state.workers) {
            if worker.runs.len() < usize::from(self.slots) {
                for (j, job) in (0u8..).zip(&state.jobs) {
                    if job.state == JobState::Available {
                        actions.push(Action::Claim {
                            worker: w,
                            job: j,
                            fence: job.fence + 1,
                            attempt: job.attempt + 1,
                        });
                    }
                }
            }
            for run in &worker.runs {
                let (job, fence, attempt) = (run.job, run.fence, run.attempt);
                match run.phase {
                    Phase::Buffered => {
                        actions.push(Action::Start {
                            worker: w,
                            job,
                            fence,
                            attempt,
                        });
                        if state.releases_left > 0 {
                            actions.push(Action::Release {
                                worker: w,
                                job,
                                fence,
                                attempt,
                            });
                        }
                    }
                    Phase::Executing => {
                        if run.lease_left <= 0 {
                            actions.push(Action::StopExpiring {
                                worker: w,
                                job,
                                fence,
                                attempt,
                            });
                        }
                        for ok in [true, false] {
                            actions.push(Action::Handler {
                                worker: w,
                                job,
                                fence,
                                attempt,
                                ok,
                            });
                        }
                    }
                    Phase::Sent(outcome) | Phase::Unanswered(outcome) => {
                        for lost in [false, true] {
                            if !lost || state.lost_answers_left > 0 {
                                actions.push(Action::Complete {
                                    worker: w,
                                    job,
                                    fence,
                                    attempt,
                                    outcome,
                                    lost,
                                });
                            }
                        }
                    }
                }
            }
            if worker.runs.iter().any(|r| r.phase == Phase::Executing) {
                actions.push(Action::Heartbeat { worker: w });
            }
            if worker.leader_left > 0 && state.jobs.iter().any(|job| self.lapsed_for(job, w)) {
                actions.push(Action::Rescue { worker: w });
            }
            if !worker.runs.is_empty()
                || worker.leader_left > 0
                || matches!(state.leader, Leader::Held { holder, .. } if holder == Holder::Worker(w))
            {
                actions.push(Action::Crash { worker: w });
            }
            let renewed = Leader::Held {
                holder: Holder::Worker(w),
                left: self.leader_ttl,
            };
            if self.leader_free_for(&state.leader, w)
                && (state.leader != renewed || worker.leader_left != self.leader_ttl)
            {
                actions.push(Action::LeaderElect { worker: w });
            }
            if worker.leader_left > 0 {
                actions.push(Action::LeaderResign { worker: w });
            }
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut s = state.clone();
        s.event = Event::None;
        match action {
            Action::Tick => return Some(self.ticked(state)),
            Action::Claim {
                worker,
                job,
                fence,
                attempt,
            } => {
                let row = &mut s.jobs[usize::from(job)];
                if row.state != JobState::Available {
                    return None;
                }
                row.state = JobState::Running;
                row.attempt += 1;
                row.fence += 1;
                row.lease_left = self.lease;
                assert_eq!((row.fence, row.attempt), (fence, attempt));
                let runs = &mut s.workers[usize::from(worker)].runs;
                runs.push(Run {
                    job,
                    fence,
                    attempt,
                    phase: Phase::Buffered,
                    lease_left: self.lease,
                });
                runs.sort();
            }
            Action::Start {
                worker, job, fence, ..
            } => run_mut(&mut s, worker, job, fence).phase = Phase::Executing,
            Action::Release {
                worker, job, fence, ..
            } => {
                s.releases_left -= 1;
                run_mut(&mut s, worker, job, fence).phase = Phase::Sent(Outcome::Released);
            }
            Action::Handler {
                worker,
                job,
                fence,
                ok,
                ..
            } => {
                run_mut(&mut s, worker, job, fence).phase = Phase::Sent(if ok {
                    Outcome::Completed
                } else {
                    Outcome::Retry
                });
            }
            Action::Heartbeat { worker } => {
                let mut runs = std::mem::take(&mut s.workers[usize::from(worker)].runs);
                let mut stale_written = false;
                runs.retain_mut(|run| {
                    if run.phase != Phase::Executing {
                        return true;
                    }
                    let row = &mut s.jobs[usize::from(run.job)];
                    if !self.fence_matches(row, run) {
                        // Not held any more: the run is stopped and its result dropped.
                        return false;
                    }
                    stale_written |= row.fence != run.fence;
                    row.lease_left = self.lease;
                    run.lease_left = self.lease;
                    if row.cancel_requested {
                        run.phase = Phase::Sent(Outcome::Cancelled);
                        row.cancel_seen = true;
                    }
                    true
                });
                s.workers[usize::from(worker)].runs = runs;
                if stale_written {
                    s.event = Event::StaleWritten;
                }
            }
            Action::StopExpiring {
                worker, job, fence, ..
            } => s.workers[usize::from(worker)]
                .runs
                .retain(|r| (r.job, r.fence) != (job, fence)),
            Action::Complete {
                worker,
                job,
                fence,
                outcome,
                lost,
                ..
            } => {
                let runs = &mut s.workers[usize::from(worker)].runs;
                let i = runs.iter().position(|r| r.job == job && r.fence == fence)?;
                if !matches!(runs[i].phase, Phase::Sent(o) | Phase::Unanswered(o) if o == outcome) {
                    return None;
                }
                let retried = matches!(runs[i].phase, Phase::Unanswered(_));
                let run = if lost {
                    s.lost_answers_left = s.lost_answers_left.checked_sub(1)?;
                    runs[i].phase = Phase::Unanswered(outcome);
                    runs[i].lease_left = -1;
                    runs[i].clone()
                } else {
                    runs.remove(i)
                };
                let row = &mut s.jobs[usize::from(job)];
                let fenced = self.fence_matches(row, &run);
                if fenced || self.variant == Variant::UnfencedCompletion {
                    if row.fence != run.fence {
                        s.event = Event::StaleWritten;
                    }
                    let t = decided(&outcome.to_core(now()), row);
                    write(row, &t, fenced);
                } else if retried {
                    s.event = Event::RetryRejected;
                } else {
                    s.event = Event::StaleRejected;
                }
            }
            Action::Rescue { worker } => {
                for row in &mut s.jobs {
                    if self.lapsed_for(row, worker) {
                        let t = decided(&spooler_core::Outcome::LeaseExpired { at: now() }, row);
                        write(row, &t, true);
                        s.event = Event::Rescued;
                    }
                }
            }
            Action::Cancel { job } => {
                let row = &mut s.jobs[usize::from(job)];
                match row.state {
                    JobState::Available => {
                        row.state = JobState::Cancelled;
                        finished(row);
                    }
                    JobState::Running => row.cancel_requested = true,
                    _ => return None,
                }
            }
            Action::Crash { worker } => {
                let w = &mut s.workers[usize::from(worker)];
                w.runs.clear();
                w.leader_left = 0;
                if let Leader::Held { holder, .. } = &mut s.leader
                    && *holder == Holder::Worker(worker)
                {
                    *holder = Holder::Gone;
                }
            }
            Action::LeaderElect { worker } => {
                if !self.leader_free_for(&s.leader, worker) {
                    return None;
                }
                s.leader = Leader::Held {
                    holder: Holder::Worker(worker),
                    left: self.leader_ttl,
                };
                s.workers[usize::from(worker)].leader_left = self.leader_ttl;
            }
            Action::LeaderResign { worker } => {
                s.workers[usize::from(worker)].leader_left = 0;
                if matches!(s.leader, Leader::Held { holder, .. } if holder == Holder::Worker(worker))
                {
                    s.leader = Leader::Free;
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("no job finished twice", |_, s: &State| {
                s.jobs.iter().all(|j| j.finishes <= 1)
            }),
            Property::always(
                "a cancelled job never completes after its cancel was seen",
                |_, s: &State| {
                    !s.jobs
                        .iter()
                        .any(|j| j.cancel_seen && j.state == JobState::Completed)
                },
            ),
            Property::always("at most one leader", |_, s: &State| {
                s.workers.iter().filter(|w| w.leader_left > 0).count() <= 1
            }),
            Property::always("one live lease per job", |_, s: &State| {
                (0..s.jobs.len()).all(|j| {
                    s.workers
                        .iter()
                        .flat_map(|w| &w.runs)
                        .filter(|r| usize::from(r.job) == j && r.lease_left >= 0)
                        .count()
                        <= 1
                })
            }),
            Property::always("a job not running holds no lease", |_, s: &State| {
                s.jobs
                    .iter()
                    .all(|j| j.state == JobState::Running || j.lease_left == 0)
            }),
            Property::always("a stale claim never writes", |_, s: &State| {
                s.event != Event::StaleWritten
            }),
            Property::always("attempt <= fence", |_, s: &State| {
                s.jobs.iter().all(|j| j.attempt <= j.fence)
            }),
            // Only a release (of a claim whose handler never started) gives an attempt back: a
            // run whose handler started, current or stale, stays counted.
            Property::always(
                "a started handler's attempt is never given back",
                |_, s: &State| {
                    s.workers
                        .iter()
                        .flat_map(|w| &w.runs)
                        .filter(|r| r.started())
                        .all(|r| s.jobs[usize::from(r.job)].attempt >= r.attempt)
                },
            ),
            Property::sometimes("a job completed", |_, s: &State| {
                s.jobs.iter().any(|j| j.state == JobState::Completed)
            }),
            Property::sometimes("a job rescued", |_, s: &State| s.event == Event::Rescued),
            Property::sometimes("a job cancelled", |_, s: &State| {
                s.jobs.iter().any(|j| j.state == JobState::Cancelled)
            }),
            Property::sometimes("a running job cancelled by its worker", |_, s: &State| {
                s.workers
                    .iter()
                    .flat_map(|w| &w.runs)
                    .any(|r| r.phase == Phase::Sent(Outcome::Cancelled))
            }),
            Property::sometimes("a completion wins over a cancel request", |_, s: &State| {
                s.jobs
                    .iter()
                    .any(|j| j.state == JobState::Completed && j.cancel_requested)
            }),
            Property::sometimes("a job failed after its attempts", |_, s: &State| {
                s.jobs.iter().any(|j| j.state == JobState::Failed)
            }),
            Property::sometimes("a stale result rejected", |_, s: &State| {
                s.event == Event::StaleRejected
            }),
            Property::sometimes("every job finished", |_, s: &State| {
                s.jobs.iter().all(|j| j.state.is_finished())
            }),
        ];
        if self.releases > 0 {
            // A release gave its attempt back (fence > attempt) and the job was claimed again and
            // its handler started, under the newer fence.
            properties.push(Property::sometimes(
                "a released job runs again",
                |_, s: &State| {
                    s.workers.iter().flat_map(|w| &w.runs).any(|r| {
                        let j = &s.jobs[usize::from(r.job)];
                        r.phase == Phase::Executing
                            && j.state == JobState::Running
                            && r.fence == j.fence
                            && j.fence > j.attempt
                    })
                },
            ));
        }
        if self.lost_answers > 0 {
            properties.push(Property::sometimes(
                "a write whose answer was lost is rejected when written again",
                |_, s: &State| s.event == Event::RetryRejected,
            ));
        }
        properties
    }
}

/// The run of `worker` with lease (`job`, `fence`).
fn run_mut(s: &mut State, worker: u8, job: u8, fence: u8) -> &mut Run {
    s.workers[usize::from(worker)]
        .runs
        .iter_mut()
        .find(|r| r.job == job && r.fence == fence)
        .expect("the action names a run of the worker")
}

/// Every job finished: the goal of [`crate::progress::check`].
pub fn all_finished(_: &SpoolerModel, s: &State) -> bool {
    s.jobs.iter().all(|j| j.state.is_finished())
}
