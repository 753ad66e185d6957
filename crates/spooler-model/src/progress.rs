//! The liveness check: from every reachable state a goal state (every job finished) can still be
//! reached. On a finite model that is what "with fair progress, eventually finished" needs: a run
//! that keeps giving every enabled step its turn cannot avoid the goal forever if it is always
//! reachable. Stateright's `eventually` is checked only on paths that end (states with no
//! successors), and in this model time can always advance, so it would pass vacuously; this
//! module builds the state graph itself from the same [`Model`] and searches it backwards.

use stateright::Model;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// What [`check`] found.
#[derive(Debug)]
pub struct Progress<S, A> {
    /// Reachable states.
    pub states: usize,
    /// Transitions between them.
    pub transitions: usize,
    /// States from which the goal is reachable.
    pub can_finish: usize,
    /// The shortest path to a state from which the goal can never be reached, if there is one:
    /// the actions taken and the state they lead to.
    pub stuck: Option<(Vec<A>, S)>,
}

/// Explores every state of `model` reachable from its initial states and finds one, if any, from
/// which no path leads to a state satisfying `goal`. Stops exploring (and reports `None` as
/// the result) past `max_states`.
pub fn check<M>(
    model: &M,
    goal: fn(&M, &M::State) -> bool,
    max_states: usize,
) -> Option<Progress<M::State, M::Action>>
where
    M: Model,
    M::State: Clone + Eq + Hash,
    M::Action: Clone,
{
    let mut index: HashMap<M::State, u32> = HashMap::new();
    let mut states: Vec<M::State> = Vec::new();
    // How each state was first reached (BFS tree): the shortest path to it.
    let mut parent: Vec<Option<(u32, M::Action)>> = Vec::new();
    let mut preds: Vec<Vec<u32>> = Vec::new();
    let mut queue = VecDeque::new();
    let mut transitions = 0;
    for s in model.init_states() {
        if !index.contains_key(&s) {
            let id = states.len() as u32;
            index.insert(s.clone(), id);
            states.push(s);
            parent.push(None);
            preds.push(Vec::new());
            queue.push_back(id);
        }
    }
    let mut actions = Vec::new();
    while let Some(id) = queue.pop_front() {
        let state = states[id as usize].clone();
        actions.clear();
        model.actions(&state, &mut actions);
        for action in actions.drain(..) {
            let Some(next) = model.next_state(&state, action.clone()) else {
                continue;
            };
            transitions += 1;
            let to = match index.get(&next) {
                Some(&to) => to,
                None => {
                    if states.len() >= max_states {
                        return None;
                    }
                    let to = states.len() as u32;
                    index.insert(next.clone(), to);
                    states.push(next);
                    parent.push(Some((id, action)));
                    preds.push(Vec::new());
                    queue.push_back(to);
                    to
                }
            };
            preds[to as usize].push(id);
        }
    }
    drop(index);
    // Backwards from the goal states.
    let mut can_finish = vec![false; states.len()];
    let mut back: VecDeque<u32> = VecDeque::new();
    for (id, s) in states.iter().enumerate() {
        if goal(model, s) {
            can_finish[id] = true;
            back.push_back(id as u32);
        }
    }
    while let Some(id) = back.pop_front() {
        for &p in &preds[id as usize] {
            if !can_finish[p as usize] {
                can_finish[p as usize] = true;
                back.push_back(p);
            }
        }
    }
    // States are numbered in BFS order: the first stuck one is the nearest.
    let stuck = can_finish.iter().position(|ok| !ok).map(|id| {
        let mut path = Vec::new();
        let mut at = id as u32;
        while let Some((from, action)) = parent[at as usize].clone() {
            path.push(action);
            at = from;
        }
        path.reverse();
        (path, states[id].clone())
    });
    Some(Progress {
        states: states.len(),
        transitions,
        can_finish: can_finish.iter().filter(|ok| **ok).count(),
        stuck,
    })
}

/// How a state was first reached: from which state, by which action (`None` for an initial one).
type Step<M> = Option<(<M as Model>::State, <M as Model>::Action)>;

/// A shortest path from an initial state of `model` to a state breaking `condition`, by plain
/// breadth-first search: stateright's BFS keeps the last counterexample it met in a block of
/// states, a short one but not always the shortest. `None` if there is none within `max_states`.
pub fn shortest_violation<M>(
    model: &M,
    condition: fn(&M, &M::State) -> bool,
    max_states: usize,
) -> Option<(Vec<M::Action>, M::State)>
where
    M: Model,
    M::State: Clone + Eq + Hash,
    M::Action: Clone,
{
    let mut parent: HashMap<M::State, Step<M>> = HashMap::new();
    let mut queue = VecDeque::new();
    for s in model.init_states() {
        if parent.insert(s.clone(), None).is_none() {
            queue.push_back(s);
        }
    }
    let mut actions = Vec::new();
    while let Some(state) = queue.pop_front() {
        if !condition(model, &state) {
            let mut path = Vec::new();
            let mut at = state.clone();
            while let Some(Some((from, action))) = parent.get(&at).cloned() {
                path.push(action);
                at = from;
            }
            path.reverse();
            return Some((path, state));
        }
        actions.clear();
        model.actions(&state, &mut actions);
        for action in actions.drain(..) {
            if let Some(next) = model.next_state(&state, action.clone())
                && !parent.contains_key(&next)
            {
                if parent.len() >= max_states {
                    return None;
                }
                parent.insert(next.clone(), Some((state.clone(), action)));
                queue.push_back(next);
            }
        }
    }
    None
}
