//! The paper's causal experiments (its §4–§6): steering a model with the entity-recognition
//! directions and measuring refusals, the "are you sure you know" logit difference, attention to
//! the entity and activation patching.
//!
//! * `direction`: steering directions (from exported detectors, or random) and their strength in
//!   units of the residual stream's mean norm
//! * `refusal`: refusal detection (the paper's lists, and the same lists with their defects fixed)

pub mod attention;
pub mod direction;
pub mod patching;
pub mod refusal;

pub use direction::SteeringDirection;
