//! The paper's causal experiments (its §4–§6): steering a model with the entity-recognition
//! directions and measuring refusals, the "are you sure you know" logit difference, attention to
//! the entity and activation patching.
//!
//! * `direction`: steering directions (from exported detectors, or random) and their strength in
//!   units of the residual stream's mean norm
//! * `outcome`: a steered completion as correct, wrong, refusal or broken
//! * `refusal`: refusal detection (the paper's lists, and the same lists with their defects fixed)
//! * `items`: the questions asked (one name attribute per labelled entity) and chat prompts
//! * `steer`: the refusal-steering experiment
//! * `yesno`: the "are you sure you know" logit difference
//! * `report`: the steering outputs (JSON, CSV, one HTML page)
//! * `geometry`: the refusal direction (refused − answered questions) against the entity-recognition
//!   directions: cosines per layer with null bands, and whether detection steering moves it
//! * `geometry_report`: its outputs (JSON, CSV, one HTML page)
//! * `attention`: attention from the final token to the entity, known vs unknown and under steering,
//!   and the tokens the top heads promote
//! * `head_test`: the attention claims' design: the head chosen on train and validation, the
//!   contrast and steering tested on test with permutation nulls, Gaussian controls and a direct
//!   edit of the head as the positive control
//! * `relations`: the base-model prompts of attention and patching (the paper's relations) and
//!   the entities they read
//! * `patching`: activation patching from known-entity into unknown-entity prompts
//! * `uncertainty`: latents and probes at the last prompt token that tell in advance whether the
//!   model's answer will be wrong

pub mod attention;
pub mod direction;
pub mod geometry;
pub mod geometry_report;
pub mod head_test;
pub mod items;
pub mod outcome;
pub mod patching;
pub mod refusal;
pub mod relations;
pub mod report;
pub mod steer;
pub mod uncertainty;
pub mod yesno;

pub use direction::SteeringDirection;
