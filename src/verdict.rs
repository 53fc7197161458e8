//! A claim of the paper and the calibrated verdict on it: what was chosen and on which split,
//! how often the same rule says "reproduced" with a random direction in the detector's place
//! (the null rate), whether a direction known to have the effect shows it with this setup (the
//! positive control), how much of each compared condition's output was broken, and the figures
//! per entity type. Experiments compute these from their typed outputs; `reproduce` gathers them
//! into `claims.json` and the report.
//!
//! The order of the rules matters and is the same for every claim:
//! 1. too little data → not testable (with the reason);
//! 2. a control whose outputs are more than `MAX_BROKEN` broken → inconclusive, never a pass
//!    (checked before the positive control, which is ranked against the same controls);
//! 3. a positive control that fails → not testable with this setup;
//! 4. otherwise the claim's own test decides: reproduced or not reproduced.

use serde::{Deserialize, Serialize};

use crate::stats::calibrate::NullRate;

/// A compared condition whose completions are more than this fraction broken cannot support
/// a verdict: whatever it scores, it scores because the output fell apart.
pub const MAX_BROKEN: f64 = 0.2;

/// A verdict is "reproduced" only at this rank p-value or below.
pub const ALPHA: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Reproduced,
    NotReproduced,
    /// The comparison ran, but a control broke the output: it cannot decide.
    Inconclusive,
    NotTestable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Inconclusive => "inconclusive",
            Verdict::NotTestable => "not testable here",
        }
    }
}

/// What a claim's verdict was computed on, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The split the choice was made on ("train", "validation").
    pub split: String,
    /// The rule, in words.
    pub rule: String,
    /// What was chosen (a latent, a head, a strength).
    pub chosen: String,
    /// The candidates' values under the rule, as "candidate: value" strings.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The positive control of a claim: a direction known to do the thing, under the same test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositiveControl {
    pub what: String,
    pub passed: bool,
    pub evidence: String,
}

/// The broken fraction of one compared condition's completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broken {
    pub condition: String,
    pub n: usize,
    pub fraction: f64,
}

/// One entity type's figures for a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeFigure {
    pub entity_type: String,
    pub n: usize,
    /// The claim's statistic for this type (an AUROC, an effect), as text with its interval.
    pub figure: String,
    /// Whether the type enters the pooled (stratified) figure.
    pub pooled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub id: String,
    pub paper: String,
    pub verdict: Verdict,
    pub evidence: String,
    /// The claim's main statistic in a few words (a headline of the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// Rate of "reproduced" with random directions in the detector's place (at most `ALPHA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null: Option<NullRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_control: Option<PositiveControl>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken: Vec<Broken>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_type: Vec<TypeFigure>,
}

impl Claim {
    /// A claim without calibration (not testable, or a check with nothing to calibrate).
    pub fn plain(id: &str, paper: &str, verdict: Verdict, evidence: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            paper: paper.into(),
            verdict,
            evidence: evidence.into(),
            figure: None,
            selection: None,
            null: None,
            positive_control: None,
            broken: Vec::new(),
            per_type: Vec::new(),
        }
    }

    pub fn not_testable(id: &str, paper: &str, why: impl Into<String>) -> Self {
        Self::plain(id, paper, Verdict::NotTestable, why)
    }
}

/// Applies the shared order of rules: a broken control makes the claim inconclusive, a failed
/// positive control not testable; otherwise `test` decides.
pub fn decide(test_passed: bool, positive: Option<&PositiveControl>, controls_broken: &[Broken]) -> (Verdict, String) {
    if let Some(b) = controls_broken.iter().find(|b| b.fraction > MAX_BROKEN) {
        return (
            Verdict::Inconclusive,
            format!(
                "inconclusive: {:.0}% of the {} completions are broken (more than {:.0}%)",
                100.0 * b.fraction,
                b.condition,
                100.0 * MAX_BROKEN
            ),
        );
    }
    if let Some(p) = positive.filter(|p| !p.passed) {
        return (
            Verdict::NotTestable,
            format!("not testable with this setup: the positive control ({}) failed", p.what),
        );
    }
    if test_passed {
        (Verdict::Reproduced, String::new())
    } else {
        (Verdict::NotReproduced, String::new())
    }
}

/// `decide`, with the reason (when there is one) put in front of `evidence`.
pub fn decide_with(
    test_passed: bool,
    positive: Option<&PositiveControl>,
    controls_broken: &[Broken],
    evidence: &mut String,
) -> Verdict {
    let (v, why) = decide(test_passed, positive, controls_broken);
    if !why.is_empty() {
        *evidence = format!("{why}; {evidence}");
    }
    v
}

/// The rule of every direction claim, with the direction as the unit: a candidate's effect
/// (signed so the claim's expectation is positive) passes when it ranks first enough among the
/// control directions' effects (rank p ≤ `ALPHA`), its interval over prompts lies above zero
/// (`lo`), and it exceeds the opposite class's direction (when there is one). Returns the verdict
/// of the rule and the rank p.
pub fn direction_passes(effect: f64, lo: f64, controls: &[f64], opposite: Option<f64>) -> (bool, f64) {
    let p = crate::stats::calibrate::rank_p(effect, controls);
    (p <= ALPHA && lo > 0.0 && opposite.is_none_or(|o| effect > o), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_control_never_passes_and_a_failed_positive_control_is_not_testable() {
        let bad = Broken { condition: "random".into(), n: 40, fraction: 0.5 };
        assert_eq!(decide(true, None, std::slice::from_ref(&bad)).0, Verdict::Inconclusive);
        let failed = PositiveControl { what: "refusal direction".into(), passed: false, evidence: String::new() };
        assert_eq!(decide(true, Some(&failed), &[]).0, Verdict::NotTestable);
        assert_eq!(decide(true, Some(&failed), std::slice::from_ref(&bad)).0, Verdict::Inconclusive);
        assert_eq!(decide(true, None, &[]).0, Verdict::Reproduced);
        assert_eq!(decide(false, None, &[]).0, Verdict::NotReproduced);
    }
}
