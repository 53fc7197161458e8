//! `knowlens reproduce`: the whole paper as one resumable pipeline (fetch → label → corpus →
//! activation store → SAEs → discover → chat labels and directions → steering), from a TOML
//! config or a preset, ending in one HTML page that marks each claim reproduced, not reproduced
//! or not testable here, with its numbers.
//!
//! * `config`: the TOML schema and the quick / full presets
//! * `plan`: the stages (knowlens commands) and the records finished stages leave
//! * `claims`: the verdicts, recomputed from the stages' JSON outputs
//! * `uncertainty_claim`, `extraction_claim`: the §6 and §5 (patching) claims
//! * `report`: the final page

pub mod claims;
pub mod config;
pub mod extraction_claim;
pub mod plan;
pub mod report;
pub mod uncertainty_claim;

pub use config::Config;
