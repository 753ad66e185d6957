//! The protocol model checked: the correct protocol keeps every property and can always finish
//! every job; each broken variant breaks the property it is meant to, with a counterexample.

use spooler_model::model::{JobState, all_finished};
use spooler_model::stateright::{Checker, HasDiscoveries, Model};
use spooler_model::{SpoolerModel, State, Variant, progress};
use std::collections::BTreeSet;
use std::time::Instant;

/// Checks `model` exhaustively and asserts every property holds (each `always` has no
/// counterexample, each `sometimes` a witness).
fn passes_every_property(model: SpoolerModel) {
    let started = Instant::now();
    let checker = model.clone().checker().threads(2).spawn_bfs().join();
    eprintln!(
        "{model:?}: {} unique states, depth {}, {:.2?}",
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker.assert_properties();
    assert!(
        checker.unique_state_count() > 1_000,
        "a model this size reaches more states"
    );
}

/// Checks that from every state `model` reaches, every job can still be finished.
fn can_always_finish_every_job(model: SpoolerModel) {
    let started = Instant::now();
    let p = progress::check(&model, all_finished, 5_000_000).expect("the model is small");
    eprintln!(
        "{model:?}: {} states, {} transitions, {:.2?}",
        p.states,
        p.transitions,
        started.elapsed()
    );
    assert!(p.stuck.is_none(), "a job can be stuck: {:?}", p.stuck);
    assert_eq!(p.can_finish, p.states);
    assert!(p.states > 1_000);
}

/// Checks a broken `model` until `property` fails, prints the counterexample and asserts it is a
/// real one: a non-empty path whose last state (and only that one) breaks the property. Returns
/// a shortest counterexample's actions (checked the same way).
fn breaks(model: SpoolerModel, property: &'static str) -> Vec<String> {
    let condition = model.condition(property);
    let checker = model
        .clone()
        .checker()
        // One thread: the BFS order is exact, so the counterexample is a shortest one.
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_bfs()
        .join();
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("{:?} keeps {property:?}", model.variant));
    let trace: Vec<String> = path
        .clone()
        .into_actions()
        .iter()
        .map(|a| model.format_action(a))
        .collect();
    eprintln!(
        "{:?} breaks {property:?} after {} steps:\n  {}\n  in {:?}",
        model.variant,
        trace.len(),
        trace.join("\n  "),
        path.last_state()
    );
    assert!(!trace.is_empty());
    let states: Vec<State> = path.into_states();
    let (last, before) = states.split_last().expect("a path has states");
    assert!(!condition(&model, last), "the trace ends in the violation");
    assert!(
        before.iter().all(|s| condition(&model, s)),
        "the violation is the trace's first"
    );
    // The shortest counterexample, replayed through the model to its violating state.
    let (shortest, end) =
        progress::shortest_violation(&model, condition, 1_000_000).expect("one exists");
    assert!(!shortest.is_empty() && shortest.len() <= trace.len());
    let mut state = model.init_states().remove(0);
    for action in &shortest {
        state = model.next_state(&state, action.clone()).expect("enabled");
    }
    assert_eq!(state, end);
    assert!(!condition(&model, &state));
    let shortest: Vec<String> = shortest.iter().map(|a| model.format_action(a)).collect();
    eprintln!("  shortest: {}", shortest.join(" → "));
    shortest
}

#[test]
fn the_protocol_keeps_every_property() {
    passes_every_property(SpoolerModel::new(Variant::Correct));
}

#[test]
fn the_protocol_can_always_finish_every_job() {
    can_always_finish_every_job(SpoolerModel::new(Variant::Correct));
}

#[test]
fn releases_lost_answers_two_slots_and_longer_leases_keep_every_property() {
    // One job, so that a worker's stale run and its next claim of the same job can be held side
    // by side, a release can give an attempt back (the next claim has the same attempt and a new
    // fence), a write can land with its answer lost and be written again, and leases last two
    // ticks.
    let model = SpoolerModel {
        jobs: 1,
        slots: 2,
        lease: 2,
        leader_ttl: 2,
        releases: 1,
        lost_answers: 1,
        ..SpoolerModel::new(Variant::Correct)
    };
    passes_every_property(model.clone());
    can_always_finish_every_job(model);
}

#[test]
fn an_unfenced_completion_finishes_a_job_twice() {
    let model = SpoolerModel::new(Variant::UnfencedCompletion);
    let trace = breaks(model.clone(), "no job finished twice");
    // The stale worker's write is the one that finishes the job a second time.
    assert!(trace.last().unwrap().starts_with("complete("), "{trace:?}");
    breaks(
        model,
        "a cancelled job never completes after its cancel was seen",
    );
}

#[test]
fn a_fence_by_attempt_lets_a_stale_claim_write_on_a_newer_claim() {
    // A release gives its attempt back, so the next claim has the same attempt number: a write of
    // the released claim made again (its answer was lost) passes an (id, attempt) fence.
    let model = SpoolerModel {
        jobs: 1,
        releases: 1,
        lost_answers: 1,
        ..SpoolerModel::new(Variant::FencedByAttempt)
    };
    let trace = breaks(model.clone(), "a stale claim never writes");
    assert!(trace.iter().any(|a| a.starts_with("release(")), "{trace:?}");
    assert!(
        trace.iter().any(|a| a.ends_with("answer lost")),
        "{trace:?}"
    );
    assert!(trace.last().unwrap().starts_with("complete("), "{trace:?}");
    // The newer claim's handler runs with its attempt given back under it: uncounted.
    breaks(model, "a started handler's attempt is never given back");
}

#[test]
fn a_process_clock_elects_two_leaders() {
    let trace = breaks(
        SpoolerModel::new(Variant::ProcessClockLease),
        "at most one leader",
    );
    assert!(
        trace.last().unwrap().starts_with("leader_elect(w0)"),
        "{trace:?}"
    );
}

#[test]
fn a_process_clock_rescues_a_live_lease() {
    let trace = breaks(
        SpoolerModel::new(Variant::ProcessClockLease),
        "one live lease per job",
    );
    assert!(trace.iter().any(|a| a == "rescue(w0)"), "{trace:?}");
}

#[test]
fn the_progress_check_finds_a_job_that_cannot_reach_its_goal() {
    // Asked for every job *completed*, a failed or cancelled job is stuck: the check must say so,
    // with the path that got there.
    fn all_completed(_: &SpoolerModel, s: &State) -> bool {
        s.jobs.iter().all(|j| j.state == JobState::Completed)
    }
    let model = SpoolerModel {
        jobs: 1,
        ..SpoolerModel::new(Variant::Correct)
    };
    let p = progress::check(&model, all_completed, 1_000_000).expect("small");
    let (path, state) = p.stuck.expect("a cancelled job never completes");
    assert!(!path.is_empty());
    assert!(state.jobs[0].state.is_finished());
    assert!(p.can_finish < p.states);
}
