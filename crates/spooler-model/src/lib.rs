//! spooler's job protocol as a model for the [stateright] model checker: workers claim, heartbeat,
//! run and complete jobs under leases, an elected leader rescues lapsed leases, and cancels and
//! crashes come at any moment; the checker explores every interleaving of a small configuration.
//!
//! [`SpoolerModel`] is the model (its parameters are the bounds: jobs, workers, attempts, lease
//! length), [`Variant`] selects the correct protocol or a deliberately broken one, and
//! [`progress::check`] adds the liveness check stateright's `eventually` cannot make on a model
//! whose time never stops. The next state of a running job is not re-implemented here: the model
//! calls `spooler_core::decide`, the function the stores call. What is modelled and how each
//! action maps to the code is in `docs/model.md`.

pub mod model;
pub mod progress;

pub use model::{
    Action, Event, Holder, Job, Leader, Outcome, Phase, Run, SpoolerModel, State, Variant, Worker,
};
pub use stateright;
