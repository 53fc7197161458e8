//! Hooks: named places in the forward pass (`point`), what a run asks of them (`spec`), how a
//! run applies that request (`runtime`) and what it returns (`cache`).

mod cache;
mod point;
mod runtime;
mod spec;

pub use cache::ActivationCache;
pub use point::{HookPoint, BLOCK_HOOKS};
pub(crate) use runtime::HookRuntime;
pub use spec::{ActivationEdit, Edit, HookSpec, Intervention, LogitsAt, Positions};
