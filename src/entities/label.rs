//! Asking the model about each entity's attributes and judging its answers.
//!
//! Three modes, one record per (entity, attribute):
//! * `greedy`: one greedy completion; the attribute is correct if it matches.
//! * `sampled`: the paper's rule: one greedy completion plus `samples` completions at T = 1; the
//!   attribute is reliably correct if at least `min_correct_samples` samples match.
//! * `likelihood`: no generation: one teacher-forced forward pass per gold value; correct if every
//!   token of some gold value is the model's top prediction (greedy decoding would produce it),
//!   with the log-probability kept for finer analyses.
//! * `estimate`: the sampled rule at full scale. No generation: the probability that one answer
//!   at T = 1 is judged correct, estimated as the summed teacher-forced probability of the
//!   acceptable answers' surface forms (each usable gold value, with a leading "the" where the
//!   value has one or is a country, and every name of a gold country), capped at 1; the attribute
//!   is reliably correct if the estimate reaches `threshold` (`rule::ESTIMATE_THRESHOLD`, where
//!   "≥ 3 of 10 samples" is a coin flip).
//!
//! Answers are judged by `matching::judge_answer` (echoes and fragments are not correct) against
//! the question's usable gold values (`rule::usable_gold`). Generation stops at the answer's first
//! clause (line break, ". ", ", ", "; ") and after a type-dependent token budget, not the paper's
//! 32 tokens (see `max_new_tokens`).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dataset::Entity;
use super::matching::{country_names, form_usable, judge_answer, Outcome};
use super::questions::{self, AnswerKind, AttributeSpec, EntityType};
use super::record_log::Keyed;
use super::rule::{self, AttributeSet, Guessable};
use crate::hooks::HookSpec;
use crate::model::generate::{generate_many, GenerateOptions};
use crate::model::score::score_continuations;
use crate::model::Model;
use crate::tokenizer::ChatMessage;

/// How an attribute is judged correct (see the module docs). Parsed from and displayed as its
/// lowercase name (`greedy`, `sampled`, `likelihood`), the name its output directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Greedy,
    Sampled,
    Likelihood,
    Estimate,
}

crate::names::named_enum!(Mode, "labeling mode", Greedy => "greedy", Sampled => "sampled", Likelihood => "likelihood", Estimate => "estimate");

#[derive(Debug, Clone)]
pub struct LabelOptions {
    pub mode: Mode,
    /// Prompts per forward pass (rows, for likelihood: gold values).
    pub batch_size: usize,
    /// Samples at T = 1 per question in `sampled` mode (the paper: 10).
    pub samples: usize,
    /// Matching samples needed for an attribute to count as known (the paper: 3).
    pub min_correct_samples: usize,
    /// Gold values scored per question in `likelihood` mode.
    pub max_gold_values: usize,
    pub seed: u64,
    /// Ask through the model's chat template (chat models) instead of base-model prompts.
    pub chat: bool,
    /// Estimated probability of a correct answer at which an attribute counts (`estimate` mode).
    pub threshold: f64,
    /// Surface forms scored per question in `estimate` mode.
    pub max_forms: usize,
}

/// Greedy mode, 64 prompts per batch, the paper's sampling rule (3 of 10 samples), 4 gold
/// values per likelihood question, seed 0, base-model prompts, the estimate's threshold
/// `rule::ESTIMATE_THRESHOLD` over at most 8 surface forms.
impl Default for LabelOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Greedy,
            batch_size: 64,
            samples: 10,
            min_correct_samples: 3,
            max_gold_values: 4,
            seed: 0,
            chat: false,
            threshold: rule::ESTIMATE_THRESHOLD,
            max_forms: 8,
        }
    }
}

impl LabelOptions {
    /// Errors (naming the setting) for values that cannot produce answers.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.mode == Mode::Sampled {
            if self.samples == 0 {
                bail!("samples must be at least 1 in sampled mode");
            }
            if self.min_correct_samples == 0 || self.min_correct_samples > self.samples {
                bail!(
                    "min_correct_samples ({}) must be between 1 and samples ({}): otherwise every or no attribute is correct",
                    self.min_correct_samples,
                    self.samples
                );
            }
        }
        if self.chat && matches!(self.mode, Mode::Likelihood | Mode::Estimate) {
            // Measured on SmolLM2-135M-Instruct: it answers "The city of Algiers is in Algeria."
            // so the probability that its answer *starts* with the gold value is at most 0.13 for
            // every one of 12,418 questions, and estimate mode called all 6,000 entities unknown.
            bail!(
                "{} mode scores the gold answer as the first tokens after the prompt, but a chat model answers                  in sentences, so it would call nearly everything unknown: label chat models in greedy or sampled mode",
                self.mode
            );
        }
        if self.mode == Mode::Likelihood && self.max_gold_values == 0 {
            bail!("max_gold_values must be at least 1 in likelihood mode");
        }
        if self.mode == Mode::Estimate {
            if !(self.threshold > 0.0 && self.threshold <= 1.0) {
                bail!("threshold must be in (0, 1] in estimate mode, got {}", self.threshold);
            }
            if self.max_forms == 0 {
                bail!("max_forms must be at least 1 in estimate mode");
            }
        }
        Ok(())
    }
}

/// One completion and how it was judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub outcome: Outcome,
}

/// The model's probability of one gold value under teacher forcing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoldLikelihood {
    pub value: String,
    pub tokens: usize,
    /// Sum of the log-probabilities of the value's tokens.
    pub logprob: f64,
    pub first_token_prob: f64,
    /// Every token of the value is the argmax: greedy decoding would produce it.
    pub argmax_all: bool,
}

/// Everything asked and answered about one attribute of one entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub entity_id: String,
    pub entity_type: EntityType,
    pub attribute: String,
    pub template: usize,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<Completion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Completion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub likelihood: Vec<GoldLikelihood>,
    /// `estimate` mode: the estimated probability that an answer at T = 1 is judged correct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// Whether the attribute counts as (reliably) correct under the mode's rule.
    pub correct: bool,
}

impl Keyed for QuestionRecord {
    fn key(&self) -> String {
        question_key(&self.entity_id, &self.attribute)
    }
}

pub fn question_key(entity_id: &str, attribute: &str) -> String {
    format!("{entity_id}\t{attribute}")
}

/// One question ready to ask.
pub struct Question<'a> {
    pub entity: &'a Entity,
    pub spec: &'static AttributeSpec,
    pub template: usize,
    pub prompt: String,
    pub ids: Vec<u32>,
    /// The gold values answers are judged against (`rule::usable_gold`; all of the entity's
    /// values for a question built by `question`).
    pub gold: Vec<String>,
}

impl Question<'_> {
    pub fn key(&self) -> String {
        question_key(&self.entity.id, self.spec.name)
    }
    pub fn gold(&self) -> &[String] {
        &self.gold
    }
}

/// Which base-model template each attribute uses: (type, attribute) → index into `spec.base`.
pub type TemplateTable = BTreeMap<String, usize>;

pub fn template_key(t: EntityType, attr: &str) -> String {
    format!("{t}.{attr}")
}

/// Builds the question for one attribute of one entity with the given base template (ignored
/// for chat prompts, which use the chat question).
pub fn question<'a>(
    model: &Model,
    entity: &'a Entity,
    spec: &'static AttributeSpec,
    template: usize,
    chat: bool,
) -> Result<Question<'a>> {
    let (prompt, ids) = if chat {
        let q = questions::fill(spec.chat, &entity.name);
        let ids = model.tokenizer.encode_chat(&[ChatMessage::user(q.clone())], true)?;
        (q, ids)
    } else {
        let p = questions::fill(spec.base[template], &entity.name);
        let ids = model.tokenizer.encode_prompt(&p, false)?;
        (p, ids)
    };
    let gold = entity.attributes.get(spec.name).cloned().unwrap_or_default();
    Ok(Question { entity, spec, template, prompt, ids, gold })
}

/// Every question for the given entities (attributes with at least one gold value), judged
/// against usable gold values with the guessable values of these entities.
pub fn questions_for<'a>(
    model: &Model,
    entities: &'a [Entity],
    templates: &TemplateTable,
    chat: bool,
) -> Result<Vec<Question<'a>>> {
    questions_with(model, entities, templates, chat, AttributeSet::All, &Guessable::from_entities(entities))
}

/// The questions of a run: the attributes of `set` (`rule::asks`), each judged against its usable
/// gold values (`rule::usable_gold`).
pub fn questions_with<'a>(
    model: &Model,
    entities: &'a [Entity],
    templates: &TemplateTable,
    chat: bool,
    set: AttributeSet,
    guessable: &Guessable,
) -> Result<Vec<Question<'a>>> {
    let mut out = Vec::new();
    for e in entities {
        for spec in questions::attributes_of(e.entity_type) {
            if !rule::asks(e, spec, set, guessable) {
                continue;
            }
            let t = templates.get(&template_key(e.entity_type, spec.name)).copied().unwrap_or(0);
            let mut q = question(model, e, spec, t, chat)?;
            q.gold = rule::usable_gold(e, spec, guessable);
            out.push(q);
        }
    }
    Ok(out)
}

/// New tokens worth generating for an answer of this kind (Gemma spells numbers digit by digit).
pub fn max_new_tokens(kind: AnswerKind) -> usize {
    match kind {
        AnswerKind::Name => 12,
        AnswerKind::Genre | AnswerKind::Number { .. } => 8,
        AnswerKind::Relative { .. } => 14,
    }
}

/// Orders questions for `answer` and cuts them into its batches: each batch holds at most
/// `batch_size` questions of one answer length (`max_new_tokens`), and similar prompt lengths sit
/// together, which wastes the least padding. Returns index ranges into the reordered `qs`.
pub fn answer_batches(qs: &mut [&Question], batch_size: usize) -> Vec<std::ops::Range<usize>> {
    qs.sort_by_key(|q| (max_new_tokens(q.spec.kind), q.ids.len(), q.key()));
    let mut out = Vec::new();
    let mut i = 0;
    while i < qs.len() {
        let kind = max_new_tokens(qs[i].spec.kind);
        let mut j = i;
        while j < qs.len() && j - i < batch_size.max(1) && max_new_tokens(qs[j].spec.kind) == kind {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// A seed that depends only on what is asked, so a sample is the same whatever its batch (sample
/// s of the question draws from the stream (seed, s)).
fn sample_seed(seed: u64, key: &str) -> u64 {
    let h = Sha256::digest(format!("{seed}\t{key}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Answers a batch of questions (all with the same `max_new_tokens`) under `opts.mode`.
pub fn answer(model: &Model, qs: &[&Question], opts: &LabelOptions) -> Result<Vec<QuestionRecord>> {
    opts.validate()?;
    match opts.mode {
        Mode::Greedy => answer_generated(model, qs, opts, false),
        Mode::Sampled => answer_generated(model, qs, opts, true),
        Mode::Likelihood => answer_likelihood(model, qs, opts),
        Mode::Estimate => answer_estimate(model, qs, opts),
    }
}

/// Judges a stored record again against `gold` (usable gold values) with the current judge, and
/// recomputes its `correct` under `opts`' rule: records written by an earlier version (or with
/// other gold values) are labeled by today's rule without asking the model again. An estimate is
/// summed again over the stored forms that are still acceptable (`matching::form_usable`);
/// likelihood records keep their judgment.
pub fn rejudge(r: &mut QuestionRecord, kind: AnswerKind, gold: &[String], entity_name: &str, opts: &LabelOptions) {
    if r.estimate.is_some() {
        let p = r
            .likelihood
            .iter()
            .filter(|g| form_usable(&g.value, entity_name))
            .map(|g| g.logprob.exp())
            .sum::<f64>()
            .min(1.0);
        r.estimate = Some(p);
        r.correct = !gold.is_empty() && p >= opts.threshold;
        return;
    }
    let judge = |c: &mut Completion| c.outcome = judge_answer(kind, gold, &c.text, entity_name);
    if let Some(g) = r.greedy.as_mut() {
        judge(g);
    }
    r.samples.iter_mut().for_each(judge);
    if gold.is_empty() {
        r.correct = false;
        return;
    }
    if !r.samples.is_empty() {
        r.correct = r.samples.iter().filter(|c| c.outcome == Outcome::Correct).count() >= opts.min_correct_samples;
    } else if r.estimate.is_none() && r.likelihood.is_empty() {
        r.correct = r.greedy.as_ref().is_some_and(|g| g.outcome == Outcome::Correct);
    }
}

fn stops(opts: &LabelOptions) -> Vec<String> {
    // A base model's answer is its first clause: what follows a line break, a sentence end or a
    // comma is more text about something else, which costs decoding time and, under a token-set
    // match, invites false positives. (Thousands separators have no space after the comma.) A
    // chat model's turn ends at its end-of-turn token.
    if opts.chat {
        Vec::new()
    } else {
        ["\n", ". ", ", ", "; "].map(String::from).to_vec()
    }
}

fn record(
    q: &Question,
    greedy: Option<Completion>,
    samples: Vec<Completion>,
    likelihood: Vec<GoldLikelihood>,
    correct: bool,
) -> QuestionRecord {
    QuestionRecord {
        entity_id: q.entity.id.clone(),
        entity_type: q.entity.entity_type,
        attribute: q.spec.name.to_string(),
        template: q.template,
        prompt: q.prompt.clone(),
        greedy,
        samples,
        likelihood,
        estimate: None,
        correct,
    }
}

fn answer_generated(
    model: &Model,
    qs: &[&Question],
    opts: &LabelOptions,
    sampled: bool,
) -> Result<Vec<QuestionRecord>> {
    // Chat models restate the question before answering: the paper's 32 tokens.
    let max_tokens = if opts.chat { 32 } else { qs.iter().map(|q| max_new_tokens(q.spec.kind)).max().unwrap_or(8) };
    let judge_text = |q: &Question, text: String| {
        let outcome = judge_answer(q.spec.kind, q.gold(), &text, &q.entity.name);
        Completion { text, outcome }
    };
    let prompts: Vec<Vec<u32>> = qs.iter().map(|q| q.ids.clone()).collect();
    let rows = opts.batch_size.max(1);
    let greedy_opts = GenerateOptions { max_tokens, stop: stops(opts), ..Default::default() };
    let gens = generate_many(model, &prompts, &HookSpec::new(), &greedy_opts, 1, rows)?;
    let greedy: Vec<Completion> = qs.iter().zip(gens).map(|(q, mut g)| judge_text(q, g.remove(0).text)).collect();
    if !sampled {
        return Ok(qs
            .iter()
            .zip(greedy)
            .map(|(q, g)| {
                let ok = g.outcome == Outcome::Correct;
                record(q, Some(g), Vec::new(), Vec::new(), ok)
            })
            .collect());
    }
    // Samples: the `samples` draws of a question share its prefill; sample s of a question
    // draws from the stream (its seed, s), whatever its batch.
    let n = opts.samples;
    let seeds: Vec<u64> = qs.iter().map(|q| sample_seed(opts.seed, &q.key())).collect();
    let o = GenerateOptions {
        max_tokens,
        temperature: 1.0,
        row_seeds: Some(seeds),
        stop: stops(opts),
        ..Default::default()
    };
    let gens = generate_many(model, &prompts, &HookSpec::new(), &o, n, rows.max(n))?;
    Ok(qs
        .iter()
        .zip(greedy)
        .zip(gens)
        .map(|((q, g), s)| {
            let s: Vec<Completion> = s.into_iter().map(|g| judge_text(q, g.text)).collect();
            let hits = s.iter().filter(|c| c.outcome == Outcome::Correct).count();
            record(q, Some(g), s, Vec::new(), hits >= opts.min_correct_samples)
        })
        .collect())
}

/// The surface forms whose probabilities `estimate` mode sums for one question: each gold value
/// as the answer's first words (" Francis Ford Coppola"), with "the" before it where the value
/// starts with "The" (and without it) or is a country name of several words or a plural
/// ("the Czech Republic", "the Netherlands"), and every name of a gold country.
pub fn surface_forms(q: &Question, chat: bool, max_forms: usize) -> Vec<String> {
    let lead = if chat { "" } else { " " };
    let mut forms: Vec<String> = Vec::new();
    let mut push = |f: String| {
        if !forms.iter().any(|x| x == &f) {
            forms.push(f);
        }
    };
    let country = q.spec.is_country();
    for value in q.gold() {
        let names = if country { country_names(value) } else { vec![value.clone()] };
        for name in &names {
            push(format!("{lead}{name}"));
            if q.spec.takes_article() {
                let article =
                    if name.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
                push(format!("{lead}{article} {name}"));
            }
            if let Some(rest) = name.strip_prefix("The ").or_else(|| name.strip_prefix("the ")) {
                push(format!("{lead}the {rest}"));
                push(format!("{lead}{rest}"));
            } else if country && (name.contains(' ') || name.ends_with('s')) {
                // "the United States", "the Czech Republic", "the Netherlands"; not "the Japan".
                push(format!("{lead}the {name}"));
            }
        }
    }
    forms.retain(|f| form_usable(f, &q.entity.name));
    forms.truncate(max_forms);
    forms
}

fn answer_estimate(model: &Model, qs: &[&Question], opts: &LabelOptions) -> Result<Vec<QuestionRecord>> {
    let batch = model.batch_from_ids(&qs.iter().map(|q| q.ids.clone()).collect::<Vec<_>>())?;
    let mut conts: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    for (qi, q) in qs.iter().enumerate() {
        let mut ids_of: Vec<(String, Vec<u32>)> = Vec::new();
        for form in surface_forms(q, opts.chat, opts.max_forms) {
            let ids = model.tokenizer.encode(&form, false, false)?;
            if !ids.is_empty() {
                ids_of.push((form, ids));
            }
        }
        // A form that continues another (" the United States of America" after " the United
        // States") is already inside that one's probability: the shorter one is kept.
        let kept: Vec<(String, Vec<u32>)> = ids_of
            .iter()
            .filter(|(_, ids)| !ids_of.iter().any(|(_, other)| other.len() < ids.len() && ids.starts_with(other)))
            .cloned()
            .collect();
        for (form, ids) in kept {
            conts.push((qi, ids));
            values.push(form);
        }
    }
    let scored = score_gold(model, &batch, qs.len(), &conts, values)?;
    Ok(qs
        .iter()
        .zip(scored)
        .map(|(q, l)| {
            let p = l.iter().map(|g| g.logprob.exp()).sum::<f64>().min(1.0);
            let mut r = record(q, None, Vec::new(), l, p >= opts.threshold);
            r.estimate = Some(p);
            r
        })
        .collect())
}

/// Teacher-forced scores of answer forms `(question index, ids)` named `values`, grouped per
/// question: what the likelihood and estimate modes decide from.
fn score_gold(
    model: &Model,
    batch: &crate::batch::Batch,
    n_questions: usize,
    conts: &[(usize, Vec<u32>)],
    values: Vec<String>,
) -> Result<Vec<Vec<GoldLikelihood>>> {
    let scores = score_continuations(model, batch, conts)?;
    let mut scored: Vec<Vec<GoldLikelihood>> = vec![Vec::new(); n_questions];
    for (((qi, _), value), s) in conts.iter().zip(values).zip(scores) {
        scored[*qi].push(GoldLikelihood {
            value,
            tokens: s.len(),
            logprob: s.iter().map(|t| t.logprob as f64).sum(),
            first_token_prob: (s[0].logprob as f64).exp(),
            argmax_all: s.iter().all(|t| t.argmax),
        });
    }
    Ok(scored)
}

fn answer_likelihood(model: &Model, qs: &[&Question], opts: &LabelOptions) -> Result<Vec<QuestionRecord>> {
    let batch = model.batch_from_ids(&qs.iter().map(|q| q.ids.clone()).collect::<Vec<_>>())?;
    // One continuation per (question, gold value); each prompt runs once.
    let mut conts: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    for (qi, q) in qs.iter().enumerate() {
        for value in q.gold().iter().take(opts.max_gold_values) {
            let text = if opts.chat { value.clone() } else { format!(" {value}") };
            let answer = model.tokenizer.encode(&text, false, false)?;
            if !answer.is_empty() {
                conts.push((qi, answer));
                values.push(value.clone());
            }
        }
    }
    let scored = score_gold(model, &batch, qs.len(), &conts, values)?;
    Ok(qs
        .iter()
        .zip(scored)
        .map(|(q, l)| {
            let ok = l.iter().any(|g| g.argmax_all);
            record(q, None, Vec::new(), l, ok)
        })
        .collect())
}

#[cfg(test)]
mod option_tests {
    use super::*;

    #[test]
    fn chat_models_are_refused_in_the_teacher_forced_modes() {
        for mode in [Mode::Estimate, Mode::Likelihood] {
            let o = LabelOptions { chat: true, mode, ..Default::default() };
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains("greedy or sampled"), "{e}");
            assert!(LabelOptions { chat: false, mode, ..Default::default() }.validate().is_ok());
        }
        assert!(LabelOptions { chat: true, mode: Mode::Greedy, ..Default::default() }.validate().is_ok());
    }
}
