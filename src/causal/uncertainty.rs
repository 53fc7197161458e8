//! Uncertainty directions (the paper's §6): which residual-stream features at the last prompt
//! token — the position whose next-token prediction starts the answer — tell in advance that
//! the model's answer will be wrong, compared with a logistic probe at the same site.
//!
//! * Questions (`questions`): the greedy answers to counting (name) attributes whose gold value
//!   can show recall (no years, genres or populations; no guessable or echo gold values), each
//!   entity in one split (train selects latents and fits probes, test gives every number).
//! * Per SAE latent: Welch's t between its activations on wrong and on correct train answers
//!   (the paper's `t_test`); the top latents of each sign ("fires when the model will be wrong",
//!   "fires when it will be right"), optionally without latents active on ≥ 2% of random corpus
//!   tokens.
//! * Each top latent as a one-latent classifier of "will be wrong" on test: AUROC with a
//!   bootstrap 95% interval, precision / recall / F1 at a threshold chosen on train (and, for a
//!   latent, at "fires at all"); the same for an L2 logistic probe and a difference of means on
//!   the raw residual at every site, a probe on popularity, name length and the attribute asked,
//!   the constant "always wrong" classifier, and random latents of the same firing frequency.
//!
//! Layer convention (the paper's, as in `discover`): layer L is `blocks.L.hook_resid_pre` =
//! `blocks.{L-1}.hook_resid_post`.

pub mod questions;
pub mod report;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use self::questions::{PoolCounts, Question};
use crate::corpus::TokenCorpus;
use crate::discover::activations::{self, Activations, Item};
use crate::discover::baselines::{self, Dom};
use crate::discover::heldout::train_threshold;
use crate::discover::layer_of;
use crate::discover::scores::active_fraction;
use crate::entities::label_set::{LabelSet, Split};
use crate::entities::questions::EntityType;
use crate::entities::rule::{Guessable, COUNTING};
use crate::entities::Entity;
use crate::progress::Progress;
use crate::stats::{self, Estimate, Welch};
use crate::{HookPoint, Model, Sae};

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub model_name: String,
    /// Layers (resid_pre, the paper's numbering) of the probe and difference of means; every SAE
    /// site is added.
    pub probe_layers: Vec<usize>,
    /// At most this many wrong and this many correct questions per type, in each of train and
    /// test (the classes balanced wherever a type has enough of both).
    pub per_type: usize,
    /// Latents kept per direction per SAE.
    pub top: usize,
    /// Random latents of the same firing frequency per top latent.
    pub n_random: usize,
    pub l2: f64,
    pub reps: usize,
    pub seed: u64,
    pub batch: usize,
    pub corpus_tokens: usize,
    pub corpus_context: usize,
    /// Latents active on at least this share of corpus tokens are not selected (paper: 0.02).
    pub max_corpus_freq: f32,
}

impl Options {
    pub fn new(model_name: &str) -> Self {
        Self {
            model_name: model_name.to_string(),
            probe_layers: Vec::new(),
            per_type: 200,
            top: 5,
            n_random: 20,
            l2: 1e-2,
            reps: 1000,
            seed: 0,
            batch: 32,
            corpus_tokens: 1000,
            corpus_context: 32,
            max_corpus_freq: 0.02,
        }
    }

    /// Refuses settings that would give meaningless numbers, naming the setting.
    pub fn check(&self) -> Result<()> {
        if self.per_type == 0 {
            bail!("per_type must be at least 1");
        }
        if self.top == 0 {
            bail!("top must be at least 1");
        }
        if self.reps == 0 {
            bail!("reps (bootstrap resamples) must be at least 1");
        }
        if !(self.l2 > 0.0 && self.l2.is_finite()) {
            bail!("l2 must be a positive number, got {}", self.l2);
        }
        if !(self.max_corpus_freq > 0.0 && self.max_corpus_freq <= 1.0) {
            bail!("max_corpus_freq must be in (0, 1], got {}", self.max_corpus_freq);
        }
        Ok(())
    }
}

/// What the experiment reads.
pub struct Inputs<'a> {
    pub model: &'a Model,
    /// A greedy labeling run (its records hold the model's answers and their judgments).
    pub labels: &'a LabelSet,
    /// The entity dataset the labels were made from (gold values, to tell usable ones).
    pub entities: &'a [Entity],
    pub guessable: &'a Guessable,
    /// SAEs on the residual stream (none: only probes and baselines).
    pub saes: &'a [Sae],
    pub corpus: Option<&'a TokenCorpus>,
}

/// A test subset is reported only with at least this many wrong and this many correct answers.
pub const MIN_SUBSET: usize = 5;

/// Which way a latent points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Fires more when the answer will be wrong (the paper's "uncertainty" latents).
    Wrong,
    /// Fires more when the answer will be correct.
    Correct,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Wrong, Direction::Correct];
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Wrong => "wrong",
            Direction::Correct => "correct",
        }
    }
}

/// A classifier of "will be wrong" on one subset of test questions (wrong = positive).
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub subset: String,
    pub n_wrong: usize,
    pub n_correct: usize,
    pub auroc: Option<Estimate>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<Estimate>,
    pub accuracy: Option<f64>,
}

/// One detector's held-out results.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorResult {
    pub name: String,
    /// sae_latent, probe, diff_of_means, confound_probe, constant.
    pub kind: String,
    pub layer: Option<usize>,
    pub hook: Option<String>,
    pub latent: Option<usize>,
    pub direction: Option<Direction>,
    pub rank: Option<usize>,
    /// Welch's t (wrong − correct) on train, for a latent.
    pub train_welch: Option<Welch>,
    pub train_auroc: Option<f64>,
    /// Share of train questions / corpus tokens on which the latent fires.
    pub train_freq: Option<f32>,
    pub corpus_freq: Option<f32>,
    /// How the threshold was set and its value (score > threshold ⇒ "wrong"; a latent of the
    /// "correct" direction scores minus its activation).
    pub threshold_rule: String,
    pub threshold: f64,
    pub evals: Vec<Metrics>,
    /// A latent read as "fires (> 0) ⇒ wrong" (or, for the correct direction, "silent ⇒ wrong"),
    /// on the pooled test split.
    pub at_firing: Option<Metrics>,
}

/// Random latents at one SAE with the firing frequency of a top latent.
#[derive(Debug, Clone, Serialize)]
pub struct RandomBaseline {
    pub hook: String,
    pub layer: usize,
    pub direction: Direction,
    pub of_latent: usize,
    pub of_auroc: Option<f64>,
    pub latents: Vec<usize>,
    pub aurocs: Vec<Option<f64>>,
    pub mean: Option<f64>,
    pub max: Option<f64>,
    /// Random latents whose test AUROC is at least the top latent's.
    pub at_least_top: usize,
}

/// Test AUROCs at one site (the chart's groups).
#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub layer: usize,
    pub hook: String,
    pub sae: Option<String>,
    /// The rank-0 latent (by train t) of each direction.
    pub top_wrong_latent: Option<Estimate>,
    pub top_correct_latent: Option<Estimate>,
    pub random_mean: Option<f64>,
    pub probe: Option<Estimate>,
    pub diff_of_means: Option<Estimate>,
}

/// Everything the experiment measured.
#[derive(Debug, Clone, Serialize)]
pub struct Uncertainty {
    pub model: String,
    pub labels: String,
    pub label_mode: Option<String>,
    pub options: Options,
    /// What the label set holds and what was left out.
    pub pool: PoolCounts,
    /// Questions used: split → type → [wrong, correct].
    pub used: BTreeMap<String, BTreeMap<String, [usize; 2]>>,
    pub sites: Vec<Site>,
    pub detectors: Vec<DetectorResult>,
    pub random_baselines: Vec<RandomBaseline>,
    pub corpus_tokens: usize,
    /// The test questions a top latent scores highest and lowest (entity, attribute, answer,
    /// wrong, activation) for each rank-0 latent.
    pub examples: Vec<Examples>,
    pub notes: Vec<String>,
    pub seconds: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Examples {
    pub detector: String,
    pub highest: Vec<(String, String, String, bool, f32)>,
    pub lowest: Vec<(String, String, String, bool, f32)>,
}

/// Welch's t of every latent, wrong − correct, over `wrong` and `correct` rows of `f`
/// ([rows, d_sae] back to back); None where a group has fewer than two rows.
pub fn welch_per_latent(f: &[f32], d_sae: usize, wrong: &[usize], correct: &[usize]) -> Vec<Option<Welch>> {
    (0..d_sae)
        .map(|j| {
            let a: Vec<f64> = wrong.iter().map(|&r| f[r * d_sae + j] as f64).collect();
            let b: Vec<f64> = correct.iter().map(|&r| f[r * d_sae + j] as f64).collect();
            stats::welch(&a, &b).ok()
        })
        .collect()
}

/// The `top` latents of one direction by Welch's t (largest t for wrong, most negative for
/// correct), leaving out latents that never fire on the rows or that fire on at least
/// `max_corpus_freq` of corpus tokens (when `corpus_freq` is given). Ties: lower index.
pub fn top_latents(
    welch: &[Option<Welch>],
    train_freq: &[f32],
    corpus_freq: &[f32],
    max_corpus_freq: f32,
    dir: Direction,
    top: usize,
) -> Vec<usize> {
    let sign = match dir {
        Direction::Wrong => 1.0,
        Direction::Correct => -1.0,
    };
    let mut c: Vec<(f64, usize)> = welch
        .iter()
        .enumerate()
        .filter(|(j, _)| train_freq.get(*j).is_some_and(|&f| f > 0.0))
        .filter(|(j, _)| corpus_freq.get(*j).is_none_or(|&f| f < max_corpus_freq))
        .filter_map(|(j, w)| w.filter(|w| !w.t.is_nan() && sign * w.t > 0.0).map(|w| (sign * w.t, j)))
        .collect();
    c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    c.into_iter().take(top).map(|x| x.1).collect()
}

/// Metrics of scores (higher ⇒ "wrong") on `rows` at `threshold`.
pub fn metrics(
    subset: &str,
    scores: &[f64],
    wrong: &[bool],
    rows: &[usize],
    threshold: f64,
    reps: usize,
    seed: u64,
) -> Metrics {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let mut pairs = Vec::with_capacity(rows.len());
    for &r in rows {
        if wrong[r] {
            pos.push(scores[r]);
        } else {
            neg.push(scores[r]);
        }
        pairs.push((wrong[r], scores[r] > threshold));
    }
    let (tp, fp, fneg) = confusion(&pairs);
    Metrics {
        subset: subset.to_string(),
        n_wrong: pos.len(),
        n_correct: neg.len(),
        auroc: stats::auroc_ci(&pos, &neg, reps, seed),
        precision: (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64),
        recall: (tp + fneg > 0).then(|| tp as f64 / (tp + fneg) as f64),
        f1: if pos.is_empty() { None } else { stats::bootstrap(&pairs, reps, seed, f1) },
        accuracy: (!pairs.is_empty()).then(|| pairs.iter().filter(|(y, p)| y == p).count() as f64 / pairs.len() as f64),
    }
}

/// (true positives, false positives, false negatives) of (label, prediction) pairs.
fn confusion(pairs: &[(bool, bool)]) -> (usize, usize, usize) {
    pairs.iter().fold((0, 0, 0), |(tp, fp, fneg), &(y, p)| {
        (tp + usize::from(y && p), fp + usize::from(!y && p), fneg + usize::from(y && !p))
    })
}

/// F1 of the positive class (0 when nothing is predicted positive or nothing is positive).
pub fn f1(pairs: &[(bool, bool)]) -> f64 {
    let (tp, fp, fneg) = confusion(pairs);
    if tp == 0 {
        return 0.0;
    }
    2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
}

/// The rows of one run and how to evaluate a score on them.
struct Ctx<'a> {
    qs: &'a [Question],
    wrong: Vec<bool>,
    train: Vec<usize>,
    /// (name, rows) of every reported test subset; the first is the pooled test split.
    subsets: Vec<(String, Vec<usize>)>,
    opts: &'a Options,
}

impl Ctx<'_> {
    fn train_threshold(&self, scores: &[f64]) -> f64 {
        let (mut p, mut n) = (Vec::new(), Vec::new());
        for &r in &self.train {
            if self.wrong[r] {
                p.push(scores[r]);
            } else {
                n.push(scores[r]);
            }
        }
        train_threshold(&p, &n)
    }

    fn auroc_on(&self, rows: &[usize], scores: &[f64]) -> Option<f64> {
        let (mut p, mut n) = (Vec::new(), Vec::new());
        for &r in rows {
            if self.wrong[r] {
                p.push(scores[r]);
            } else {
                n.push(scores[r]);
            }
        }
        stats::auroc(&p, &n)
    }

    fn evals(&self, scores: &[f64], threshold: f64) -> Vec<Metrics> {
        self.subsets
            .iter()
            .map(|(name, rows)| metrics(name, scores, &self.wrong, rows, threshold, self.opts.reps, self.opts.seed))
            .collect()
    }

    fn test(&self) -> &[usize] {
        &self.subsets[0].1
    }

    /// A detector whose threshold maximises balanced accuracy on train.
    fn detector(&self, name: String, kind: &str, scores: &[f64]) -> DetectorResult {
        let threshold = self.train_threshold(scores);
        DetectorResult {
            name,
            kind: kind.to_string(),
            layer: None,
            hook: None,
            latent: None,
            direction: None,
            rank: None,
            train_welch: None,
            train_auroc: self.auroc_on(&self.train, scores),
            train_freq: None,
            corpus_freq: None,
            threshold_rule: "train: maximises balanced accuracy".into(),
            threshold,
            evals: self.evals(scores, threshold),
            at_firing: None,
        }
    }

    fn examples(&self, detector: &str, scores: &[f64]) -> Examples {
        let mut v: Vec<(f64, usize)> = self.test().iter().map(|&r| (scores[r], r)).collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let row = |&(s, r): &(f64, usize)| {
            let q = &self.qs[r];
            (q.name.clone(), q.attribute.clone(), q.answer.clone(), q.wrong, s as f32)
        };
        Examples {
            detector: detector.to_string(),
            highest: v.iter().take(8).map(row).collect(),
            lowest: v.iter().rev().take(8).map(row).collect(),
        }
    }
}

/// Runs the experiment.
pub fn run(
    inp: &Inputs,
    opts: &Options,
    cache: Option<&std::path::Path>,
    progress: &dyn Progress,
) -> Result<Uncertainty> {
    opts.check()?;
    let t0 = Instant::now();
    let model = inp.model;
    let cfg = model.cfg();
    let mut notes = Vec::new();
    let mut seconds = BTreeMap::new();

    // Sites: every SAE's hook and every probe layer; the probe also runs at every SAE site.
    let mut sae_sites: Vec<(usize, &Sae)> = Vec::new();
    for sae in inp.saes {
        sae.check_model(model)?;
        let l = layer_of(sae.hook).with_context(|| format!("SAE {}", sae.source.display()))?;
        if sae_sites.iter().any(|(m, _)| *m == l) {
            bail!("two SAEs read layer {l} (the second: {})", sae.source.display());
        }
        sae_sites.push((l, sae));
    }
    sae_sites.sort_by_key(|x| x.0);
    let mut layers: Vec<usize> = opts.probe_layers.clone();
    layers.extend(sae_sites.iter().map(|x| x.0));
    layers.sort_unstable();
    layers.dedup();
    if layers.is_empty() {
        bail!("no site: give SAEs or probe layers");
    }
    for &l in &layers {
        if l == 0 || l > cfg.n_layers {
            bail!("layer {l}: the residual stream after a block is layer 1..={} (layer L = blocks.{{L-1}}.hook_resid_post)", cfg.n_layers);
        }
    }
    if sae_sites.is_empty() {
        notes.push("no SAE given: only the probes, difference of means and baselines were computed".into());
    }

    // Questions.
    let (pool, pool_counts) = questions::pool(inp.labels, inp.entities, inp.guessable, opts.seed)?;
    let keep = questions::balanced_sample(&pool, opts.per_type, opts.seed);
    let qs: Vec<Question> = keep.iter().map(|&i| pool[i].clone()).collect();
    let wrong: Vec<bool> = qs.iter().map(|q| q.wrong).collect();
    let in_split = |s: Split| -> Vec<usize> { (0..qs.len()).filter(|&i| qs[i].split == s).collect() };
    let (train, test) = (in_split(Split::Train), in_split(Split::Test));
    let count = |rows: &[usize], w: bool| rows.iter().filter(|&&r| wrong[r] == w).count();
    for (name, rows) in [("train", &train), ("test", &test)] {
        if count(rows, true) < 2 || count(rows, false) < 2 {
            bail!(
                "{}: {name} has {} wrong and {} correct usable answers after balancing; at least 2 of each are needed",
                inp.labels.dir.display(),
                count(rows, true),
                count(rows, false)
            );
        }
    }
    let mut used: BTreeMap<String, BTreeMap<String, [usize; 2]>> = BTreeMap::new();
    for q in &qs {
        used.entry(q.split.to_string()).or_default().entry(q.entity_type.to_string()).or_default()
            [usize::from(!q.wrong)] += 1;
    }
    // Subsets: per type and per attribute (the attribute asked alone predicts much of
    // correctness, and the last prompt token differs between attributes), where each class has
    // at least MIN_SUBSET questions; and the entities the model got partly right.
    let mut subsets = vec![("test".to_string(), test.clone())];
    let mut add = |name: String, rows: Vec<usize>| {
        if count(&rows, true) >= MIN_SUBSET && count(&rows, false) >= MIN_SUBSET {
            subsets.push((name, rows));
        }
    };
    for t in EntityType::ALL {
        add(format!("test: {t}"), test.iter().copied().filter(|&r| qs[r].entity_type == t).collect());
    }
    for &(t, a) in COUNTING {
        add(
            format!("test: {t}.{a}"),
            test.iter().copied().filter(|&r| qs[r].entity_type == t && qs[r].attribute == a).collect(),
        );
    }
    let mixed: Vec<usize> = test.iter().copied().filter(|&r| qs[r].mixed).collect();
    add("test: entities with both correct and wrong answers".into(), mixed);
    let ctx = Ctx { qs: &qs, wrong: wrong.clone(), train: train.clone(), subsets, opts };

    // Activations at the last prompt token.
    let hooks: Vec<HookPoint> = layers.iter().map(|&l| HookPoint::ResidPost(l - 1)).collect();
    let items: Vec<Item> =
        qs.iter().map(|q| questions::prompt_ids(&model.tokenizer, q).map(Item::Tokens)).collect::<Result<_>>()?;
    let acts = activations::collect(model, "questions", &items, &hooks, opts.batch, cache, progress)?;
    seconds.insert("question_activations".into(), t0.elapsed().as_secs_f64());
    let t1 = Instant::now();
    let corpus_acts = match inp.corpus {
        Some(c) if opts.corpus_tokens > 0 && !sae_sites.is_empty() => {
            let items = activations::corpus_items(c, opts.corpus_tokens, opts.corpus_context, opts.seed)?;
            let sae_hooks: Vec<HookPoint> = sae_sites.iter().map(|(l, _)| HookPoint::ResidPost(*l - 1)).collect();
            Some(activations::collect(model, "corpus", &items, &sae_hooks, opts.batch, cache, progress)?)
        }
        _ => {
            if !sae_sites.is_empty() {
                notes.push("no corpus: latents were not filtered by their firing rate on generic text".into());
            }
            None
        }
    };
    seconds.insert("corpus_activations".into(), t1.elapsed().as_secs_f64());

    let t2 = Instant::now();
    let mut detectors = Vec::new();
    let mut random_baselines = Vec::new();
    let mut examples = Vec::new();
    let mut sites = Vec::new();
    let all_rows: Vec<usize> = (0..qs.len()).collect();
    let train_wrong: Vec<usize> = train.iter().copied().filter(|&r| wrong[r]).collect();
    let train_correct: Vec<usize> = train.iter().copied().filter(|&r| !wrong[r]).collect();
    progress.start("sites", Some(layers.len() as u64));
    for &l in &layers {
        // The residual stream after block l − 1 (= entering block l): it exists for every layer.
        let hook = HookPoint::ResidPost(l - 1);
        let h = acts.hook_index(hook)?;
        let mut site = Site {
            layer: l,
            hook: hook.to_string(),
            sae: None,
            top_wrong_latent: None,
            top_correct_latent: None,
            random_mean: None,
            probe: None,
            diff_of_means: None,
        };
        if let Some((_, sae)) = sae_sites.iter().find(|(m, _)| *m == l) {
            site.sae = Some(sae.source.display().to_string());
            let d_sae = sae.d_sae();
            let f = encode_rows(sae, &acts, h, &all_rows)?;
            let train_freq = active_fraction(&f, d_sae, &train);
            let corpus_freq = match &corpus_acts {
                Some(ca) => {
                    let fc = encode_rows(sae, ca, ca.hook_index(hook)?, &(0..ca.n).collect::<Vec<_>>())?;
                    active_fraction(&fc, d_sae, &(0..ca.n).collect::<Vec<_>>())
                }
                None => Vec::new(),
            };
            let welch = welch_per_latent(&f, d_sae, &train_wrong, &train_correct);
            let column = |j: usize| -> Vec<f64> { (0..qs.len()).map(|r| f[r * d_sae + j] as f64).collect() };
            for dir in Direction::ALL {
                let top = top_latents(&welch, &train_freq, &corpus_freq, opts.max_corpus_freq, dir, opts.top);
                let sign = if dir == Direction::Wrong { 1.0 } else { -1.0 };
                let signed = |j: usize| -> Vec<f64> { column(j).into_iter().map(|v| sign * v).collect() };
                for (rank, &j) in top.iter().enumerate() {
                    let s = signed(j);
                    let name = format!("L{l} latent {j} ({})", dir.as_str());
                    let mut d = ctx.detector(name.clone(), "sae_latent", &s);
                    d.layer = Some(l);
                    d.hook = Some(sae.hook.to_string());
                    d.latent = Some(j);
                    d.direction = Some(dir);
                    d.rank = Some(rank);
                    d.train_welch = welch[j];
                    d.train_freq = Some(train_freq[j]);
                    d.corpus_freq = corpus_freq.get(j).copied();
                    // Fires ⇒ wrong (activation > 0), or silent ⇒ wrong (−activation > −tiny).
                    let fire = if dir == Direction::Wrong { 0.0 } else { -1e-12 };
                    d.at_firing = Some(metrics("test", &s, &wrong, ctx.test(), fire, opts.reps, opts.seed));
                    if rank == 0 {
                        let a = d.evals[0].auroc;
                        match dir {
                            Direction::Wrong => site.top_wrong_latent = a,
                            Direction::Correct => site.top_correct_latent = a,
                        }
                        examples.push(ctx.examples(&name, &s));
                        if opts.n_random > 0 {
                            let pick =
                                baselines::same_frequency_latents(&train_freq, train_freq[j], &top, opts.n_random);
                            let aurocs: Vec<Option<f64>> =
                                pick.iter().map(|&k| ctx.auroc_on(ctx.test(), &signed(k))).collect();
                            let vals: Vec<f64> = aurocs.iter().flatten().copied().collect();
                            let of_auroc = a.map(|e| e.value);
                            let rb = RandomBaseline {
                                hook: sae.hook.to_string(),
                                layer: l,
                                direction: dir,
                                of_latent: j,
                                of_auroc,
                                at_least_top: of_auroc.map(|t| vals.iter().filter(|&&v| v >= t).count()).unwrap_or(0),
                                mean: (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
                                max: vals.iter().copied().reduce(f64::max),
                                latents: pick,
                                aurocs,
                            };
                            if dir == Direction::Wrong {
                                site.random_mean = rb.mean;
                            }
                            random_baselines.push(rb);
                        }
                    }
                    detectors.push(d);
                }
                if top.is_empty() {
                    notes.push(format!("L{l}: no latent fires more on {} answers", dir.as_str()));
                }
            }
        }
        // Probe and difference of means on the raw residual, fitted on train.
        let x = acts.matrix(h, &train);
        let y: Vec<bool> = train.iter().map(|&r| wrong[r]).collect();
        let dom = Dom::fit(&x, acts.d, &y).with_context(|| format!("difference of means at layer {l}"))?;
        let (probe, keep) =
            baselines::fit_probe(&x, acts.d, &y, opts.l2).with_context(|| format!("probe at layer {l}"))?;
        let dom_s: Vec<f64> = (0..qs.len()).map(|r| dom.score(acts.row(r, h))).collect();
        let probe_s: Vec<f64> = (0..qs.len()).map(|r| baselines::probe_logit(&probe, &keep, acts.row(r, h))).collect();
        for (name, kind, s) in
            [(format!("L{l} probe"), "probe", &probe_s), (format!("L{l} diff of means"), "diff_of_means", &dom_s)]
        {
            let mut d = ctx.detector(name.clone(), kind, s);
            d.layer = Some(l);
            d.hook = Some(hook.to_string());
            match kind {
                "probe" => {
                    site.probe = d.evals[0].auroc;
                    examples.push(ctx.examples(&name, s));
                }
                _ => site.diff_of_means = d.evals[0].auroc,
            }
            detectors.push(d);
        }
        sites.push(site);
        progress.advance(1);
    }
    progress.finish();

    // Baselines without the residual stream.
    let n_attr = COUNTING.len();
    let feats = |q: &Question| -> Result<Vec<f32>> {
        let ai = COUNTING.iter().position(|&(t, a)| t == q.entity_type && a == q.attribute).unwrap_or(0);
        let name_tokens = model
            .tokenizer
            .span_positions(&q.prompt, &q.name, false, false)
            .with_context(|| format!("name tokens of {:?} in its prompt", q.entity_id))?
            .len();
        Ok(baselines::confound_features(q.popularity_rank, name_tokens, ai, n_attr))
    };
    let fx: Vec<Vec<f32>> = qs.iter().map(feats).collect::<Result<_>>()?;
    let d_conf = 3 + n_attr;
    let x: Vec<f32> = train.iter().flat_map(|&r| fx[r].clone()).collect();
    let y: Vec<bool> = train.iter().map(|&r| wrong[r]).collect();
    let (probe, keep) =
        baselines::fit_probe(&x, d_conf, &y, opts.l2).context("popularity / name-length / attribute probe")?;
    let s: Vec<f64> = fx.iter().map(|row| baselines::probe_logit(&probe, &keep, row)).collect();
    detectors.push(ctx.detector("popularity + name length + attribute probe".into(), "confound_probe", &s));
    let ones = vec![1.0; qs.len()];
    let mut constant = ctx.detector("constant: always wrong".into(), "constant", &ones);
    constant.threshold_rule = "fixed: every answer predicted wrong".into();
    constant.threshold = 0.0;
    constant.evals = ctx.evals(&ones, 0.0);
    detectors.push(constant);
    seconds.insert("analysis".into(), t2.elapsed().as_secs_f64());
    seconds.insert("total".into(), t0.elapsed().as_secs_f64());

    Ok(Uncertainty {
        model: opts.model_name.clone(),
        labels: inp.labels.dir.display().to_string(),
        label_mode: inp.labels.mode.map(|m| m.to_string()),
        options: opts.clone(),
        pool: pool_counts,
        used,
        sites,
        detectors,
        random_baselines,
        corpus_tokens: corpus_acts.as_ref().map(|c| c.n).unwrap_or(0),
        examples,
        notes,
        seconds,
    })
}

/// Encodes rows of one hook with an SAE, in blocks of 1,024: [rows, d_sae] back to back.
fn encode_rows(sae: &Sae, acts: &Activations, h: usize, rows: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows.len() * sae.d_sae());
    for block in rows.chunks(1024) {
        let x = Tensor::from_vec(acts.matrix(h, block), (block.len(), acts.d), &Device::Cpu)?;
        out.extend(sae.encode(&x)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}
