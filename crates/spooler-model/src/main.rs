//! Checks the model with bounds given on the command line, for runs larger than the tests':
//! `cargo run -p spooler-model --release -- --jobs 3 --workers 3`.

use spooler_model::model::all_finished;
use spooler_model::stateright::{Checker, Model};
use spooler_model::{SpoolerModel, Variant, progress};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: spooler-model [--jobs N] [--workers N] [--max-attempts N] [--slots N] \
[--lease TICKS] [--leader-ttl TICKS] [--releases N] [--lost-answers N] [--skew TICKS] \
[--variant correct|unfenced-completion|fenced-by-attempt|process-clock-lease] [--threads N] \
[--max-states N] [--no-progress]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut model = SpoolerModel::new(Variant::Correct);
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut max_states = 50_000_000;
    let mut liveness = true;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--no-progress" {
            liveness = false;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--jobs" => model.jobs = value.parse().map_err(bad)?,
            "--workers" => model.workers = value.parse().map_err(bad)?,
            "--max-attempts" => model.max_attempts = value.parse().map_err(bad)?,
            "--slots" => model.slots = value.parse().map_err(bad)?,
            "--lease" => model.lease = value.parse().map_err(bad)?,
            "--leader-ttl" => model.leader_ttl = value.parse().map_err(bad)?,
            "--releases" => model.releases = value.parse().map_err(bad)?,
            "--lost-answers" => model.lost_answers = value.parse().map_err(bad)?,
            "--skew" => model.skew = value.parse().map_err(bad)?,
            "--threads" => threads = value.parse().map_err(bad)?,
            "--max-states" => max_states = value.parse().map_err(bad)?,
            "--variant" => {
                model.variant = match value.as_str() {
                    "correct" => Variant::Correct,
                    "unfenced-completion" => Variant::UnfencedCompletion,
                    "fenced-by-attempt" => Variant::FencedByAttempt,
                    "process-clock-lease" => Variant::ProcessClockLease,
                    other => return Err(format!("unknown variant {other:?}")),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    println!("{model:?}");
    let started = Instant::now();
    let checker = model.clone().checker().threads(threads).spawn_bfs().join();
    println!(
        "bfs: {} unique states ({} generated), depth {}, {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    let mut failed = false;
    for property in model.properties() {
        let found = checker.discovery(property.name);
        let ok = match property.expectation {
            spooler_model::stateright::Expectation::Always
            | spooler_model::stateright::Expectation::Eventually => found.is_none(),
            spooler_model::stateright::Expectation::Sometimes => found.is_some(),
        };
        failed |= !ok;
        println!(
            "  {} {:?} {:?}",
            if ok { "ok  " } else { "FAIL" },
            property.expectation,
            property.name
        );
        if let (false, Some(path)) = (ok, found) {
            // stateright keeps the last counterexample it met; a shortest one reads better.
            let actions = match progress::shortest_violation(&model, property.condition, max_states)
            {
                Some((shortest, _)) => shortest,
                None => path.into_actions(),
            };
            let trace: Vec<String> = actions.iter().map(|a| model.format_action(a)).collect();
            println!("       counterexample: {}", trace.join(" → "));
        }
    }
    if liveness {
        let started = Instant::now();
        match progress::check(&model, all_finished, max_states) {
            None => println!("progress: more than {max_states} states, not checked"),
            Some(p) => {
                println!(
                    "progress: {} states, {} transitions, {:.2?}: {}",
                    p.states,
                    p.transitions,
                    started.elapsed(),
                    if p.stuck.is_none() {
                        "every state can still finish every job"
                    } else {
                        "FAIL"
                    }
                );
                if let Some((path, state)) = p.stuck {
                    failed = true;
                    println!("  stuck after: {path:?}\n  in {state:?}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
