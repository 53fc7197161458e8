//! Detection vs refusal geometry: is the direction along which a chat model separates known from
//! unknown entities the direction along which it refuses, and does pushing along the first move
//! the second?
//!
//! * A refusal direction per layer: the difference of the mean residual stream (entering block
//!   L, at the last prompt token, the site of Arditi et al. 2024) between questions the model
//!   refused and questions it answered. Refused / answered is judged on the model's own greedy
//!   chat answers (stored by `knowlens label --chat --mode greedy`) with a refusal rule. The
//!   difference is taken within strata (one stratum per question template, i.e. type and
//!   attribute) and averaged with weights n_r·n_a / (n_r + n_a), so that a template the model
//!   refuses often does not turn "which template" into "refusal". Fitted on the train split,
//!   checked on the held-out (validation + test) split by AUROC of the projection.
//! * Per layer, its cosine with the entity-recognition directions (difference of means known −
//!   unknown at the entity's last token and at the last prompt token, and a logistic probe at the
//!   entity's last token; the unknown directions are these reversed, so their cosines are these
//!   negated) against two nulls: random isotropic directions, and differences of means of the
//!   same prompts under shuffled labels (which keeps the residual stream's anisotropy). Its
//!   stability: the cosine between the directions fitted on the two disjoint halves.
//! * Steering: the detection direction added at the entity's last token through the end of the
//!   prompt (the paper's refusal setting), at multiples of the mean residual norm there; the
//!   change of the refusal direction's projection at the last prompt token at every later layer,
//!   against random directions of the same layer and strength.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;

use super::direction::{mean_resid_norm, SteeringDirection};
use super::refusal::{is_refusal, RefusalRule};
use crate::batch::EntityBatch;
use crate::entities::label_set::{LabelSet, Split};
use crate::entities::questions::EntityType;
use crate::hooks::{HookPoint, HookSpec, Positions};
use crate::progress::Progress;
use crate::rng::{shuffle, SplitMix64};
use crate::stats::{self, auroc, auroc_ci, bootstrap, mean, mean_var, welch, Estimate, Welch};
use crate::Model;

/// Derived-stream purposes of this module (distinct from `crate::rng`'s tags).
const TAG_PERMUTE: u64 = 0x6E0_0001;

/// A question from the labels with the model's stored greedy answer and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalPrompt {
    pub id: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub attribute: String,
    pub name: String,
    pub question: String,
    pub answer: String,
    pub refused: bool,
    /// Fitted on train; held out: validation and test.
    pub train: bool,
}

impl RefusalPrompt {
    pub fn stratum(&self) -> String {
        format!("{}.{}", self.entity_type, self.attribute)
    }
}

/// Every question of the labels' entities of `types` (dropped entities excluded) whose greedy
/// answer is stored, judged by `rule`.
pub fn refusal_prompts(labels: &LabelSet, types: &[EntityType], rule: RefusalRule) -> Result<Vec<RefusalPrompt>> {
    let mut out = Vec::new();
    for e in &labels.entities {
        let Some(split) = e.split else { continue };
        if !types.contains(&e.entity_type()) {
            continue;
        }
        for r in &e.label.records {
            let Some(g) = &r.greedy else { continue };
            out.push(RefusalPrompt {
                id: e.id().to_string(),
                entity_type: e.entity_type(),
                attribute: r.attribute.clone(),
                name: e.name().to_string(),
                question: r.prompt.clone(),
                answer: g.text.clone(),
                refused: is_refusal(&g.text, rule),
                train: split == Split::Train,
            });
        }
    }
    if out.is_empty() {
        bail!("{}: no question with a stored greedy answer (label with --mode greedy)", labels.dir.display());
    }
    Ok(out)
}

/// How many questions of one template were refused and answered, in each half.
#[derive(Debug, Clone, Serialize)]
pub struct Stratum {
    pub name: String,
    pub train_refused: usize,
    pub train_answered: usize,
    pub heldout_refused: usize,
    pub heldout_answered: usize,
    /// Both classes reach the minimum in both halves: the stratum enters the fit and the checks.
    pub used: bool,
}

/// Strata of the prompts (sorted by name) and each prompt's stratum index.
pub fn strata(prompts: &[RefusalPrompt], min_per_class: usize) -> (Vec<Stratum>, Vec<usize>) {
    let mut names: Vec<String> = prompts.iter().map(|p| p.stratum()).collect();
    names.sort();
    names.dedup();
    let index: Vec<usize> = prompts.iter().map(|p| names.binary_search(&p.stratum()).expect("listed")).collect();
    let mut out: Vec<Stratum> = names
        .into_iter()
        .map(|name| Stratum {
            name,
            train_refused: 0,
            train_answered: 0,
            heldout_refused: 0,
            heldout_answered: 0,
            used: false,
        })
        .collect();
    for (p, &s) in prompts.iter().zip(&index) {
        let st = &mut out[s];
        match (p.train, p.refused) {
            (true, true) => st.train_refused += 1,
            (true, false) => st.train_answered += 1,
            (false, true) => st.heldout_refused += 1,
            (false, false) => st.heldout_answered += 1,
        }
    }
    for s in &mut out {
        s.used = [s.train_refused, s.train_answered, s.heldout_refused, s.heldout_answered]
            .iter()
            .all(|&n| n >= min_per_class.max(1));
    }
    (out, index)
}

/// Cosine of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += (x as f64).powi(2);
        bb += (y as f64).powi(2);
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

/// `v / ‖v‖`, or an error naming `what` when v is zero or not finite.
pub fn unit(v: &[f32], what: &str) -> Result<Vec<f32>> {
    let n = norm(v);
    if !(n > 0.0 && n.is_finite()) {
        bail!("{what}: the direction has norm {n}");
    }
    Ok(v.iter().map(|&x| (x as f64 / n) as f32).collect())
}

/// The difference of means positive − negative within each stratum, averaged over the strata
/// in `use_stratum` with weights n₊n₋ / (n₊ + n₋) (the weights of a stratified two-sample
/// comparison). Rows outside `rows` (e.g. held-out rows) are ignored. Errors when no stratum
/// has both classes among the rows.
pub fn stratified_diff_of_means(
    x: &[f32],
    d: usize,
    y: &[bool],
    strata: &[usize],
    use_stratum: &dyn Fn(usize) -> bool,
    rows: &dyn Fn(usize) -> bool,
) -> Result<Vec<f32>> {
    if x.len() != y.len() * d || strata.len() != y.len() {
        bail!("{} values, {} labels and {} strata for width {d}", x.len(), y.len(), strata.len());
    }
    let n_strata = strata.iter().copied().max().map_or(0, |m| m + 1);
    let mut sums = vec![[vec![0f64; d], vec![0f64; d]]; n_strata];
    let mut counts = vec![[0usize; 2]; n_strata];
    for (r, (row, (&label, &s))) in x.chunks(d).zip(y.iter().zip(strata)).enumerate() {
        if !rows(r) || !use_stratum(s) {
            continue;
        }
        let c = usize::from(label);
        sums[s][c].iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
        counts[s][c] += 1;
    }
    let mut out = vec![0f64; d];
    let mut total_w = 0.0;
    for s in 0..n_strata {
        let [n0, n1] = counts[s];
        if n0 == 0 || n1 == 0 {
            continue;
        }
        let w = (n0 * n1) as f64 / (n0 + n1) as f64;
        total_w += w;
        for j in 0..d {
            out[j] += w * (sums[s][1][j] / n1 as f64 - sums[s][0][j] / n0 as f64);
        }
    }
    if total_w == 0.0 {
        bail!("no stratum has both classes among the rows used");
    }
    Ok(out.iter().map(|v| (v / total_w) as f32).collect())
}

/// AUROC of `scores` (positives higher) with pairs compared only within a stratum: the
/// stratified Mann–Whitney statistic Σ U_s / Σ n₊,s·n₋,s over the strata where `rows` selects
/// both classes.
pub fn within_strata_auroc(scores: &[f64], y: &[bool], strata: &[usize], rows: &dyn Fn(usize) -> bool) -> Option<f64> {
    let n_strata = strata.iter().copied().max().map_or(0, |m| m + 1);
    let (mut u, mut pairs) = (0.0, 0.0);
    for s in 0..n_strata {
        let sel = |want: bool| -> Vec<f64> {
            (0..scores.len()).filter(|&r| rows(r) && strata[r] == s && y[r] == want).map(|r| scores[r]).collect()
        };
        let (p, n) = (sel(true), sel(false));
        if let Some(a) = auroc(&p, &n) {
            let w = (p.len() * n.len()) as f64;
            u += a * w;
            pairs += w;
        }
    }
    (pairs > 0.0).then(|| u / pairs)
}

/// The spread of |cosine| under a null.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NullBand {
    pub n: usize,
    pub mean_abs: f64,
    /// 95th percentile of |cosine|.
    pub p95_abs: f64,
}

fn band(mut abs: Vec<f64>) -> NullBand {
    abs.sort_by(|a, b| a.total_cmp(b));
    let n = abs.len();
    NullBand {
        n,
        mean_abs: abs.iter().sum::<f64>() / n.max(1) as f64,
        p95_abs: if n == 0 { f64::NAN } else { stats::quantile_sorted(&abs, 0.95) },
    }
}

/// |cosine| of `v` with `n` seeded isotropic Gaussian directions (in d dimensions the mean is
/// about √(2/π)/√d, 0.033 for d = 576).
pub fn isotropic_null(v: &[f32], layer: usize, n: usize, seed: u64) -> Result<NullBand> {
    let abs = (0..n as u64)
        .map(|i| Ok(cosine(v, &SteeringDirection::random(layer, v.len(), seed ^ 0x6E0, i)?.unit).abs()))
        .collect::<Result<Vec<_>>>()?;
    Ok(band(abs))
}

/// |cosine| of `v` with the difference of means of the rows `x` under `n` shuffles of the
/// labels `y`: how aligned a difference of means of these prompts is with `v` by chance, given
/// the residual stream's own anisotropy.
pub fn permutation_null(v: &[f32], x: &[f32], d: usize, y: &[bool], n: usize, seed: u64) -> Result<NullBand> {
    let mut labels = y.to_vec();
    let mut abs = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let mut rng = SplitMix64::derive(seed, TAG_PERMUTE, i);
        shuffle(&mut labels, &mut rng);
        abs.push(cosine(v, &stats::diff_of_means(x, d, &labels)?).abs());
    }
    Ok(band(abs))
}

/// The residual stream entering every block at two sites of each prompt: its last token and the
/// entity's last token. Per layer, rows of width d, in prompt order.
#[derive(Debug, Clone)]
pub struct SiteActivations {
    pub n: usize,
    pub d: usize,
    pub last: Vec<Vec<f32>>,
    pub entity: Vec<Vec<f32>>,
}

impl SiteActivations {
    pub fn row<'a>(&'a self, site: &'a [Vec<f32>], layer: usize, r: usize) -> &'a [f32] {
        &site[layer][r * self.d..(r + 1) * self.d]
    }
}

/// `(prompt text, entity name)` pairs, tokenized with special tokens parsed (chat templates).
fn entity_batch(model: &Model, prompts: &[(String, String)]) -> Result<EntityBatch> {
    let pairs: Vec<(&str, &str)> = prompts.iter().map(|(t, e)| (t.as_str(), e.as_str())).collect();
    model.entity_batch(&pairs, true)
}

/// Rows [b, d] of `hook` at one position per row.
fn gather_rows(cache: &crate::hooks::ActivationCache, hook: HookPoint, positions: &Positions) -> Result<Vec<f32>> {
    Ok(cache.gather(hook, positions)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

pub fn site_activations(
    model: &Model,
    prompts: &[(String, String)],
    batch: usize,
    progress: &dyn Progress,
) -> Result<SiteActivations> {
    let (n_layers, d) = (model.cfg().n_layers, model.cfg().d_model);
    let hooks: Vec<HookPoint> = (0..n_layers).map(HookPoint::ResidPre).collect();
    let mut last = vec![Vec::with_capacity(prompts.len() * d); n_layers];
    let mut entity = vec![Vec::with_capacity(prompts.len() * d); n_layers];
    progress.start("residual streams", Some(prompts.len() as u64));
    for chunk in prompts.chunks(batch.max(1)) {
        let eb = entity_batch(model, chunk)?;
        let out = model.run(&eb.batch, &HookSpec::new().capture(hooks.iter().copied()))?;
        for (l, &h) in hooks.iter().enumerate() {
            last[l].extend(gather_rows(&out.cache, h, &Positions::Last)?);
            entity[l].extend(gather_rows(&out.cache, h, &eb.last())?);
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(SiteActivations { n: prompts.len(), d, last, entity })
}

/// One push: `direction` at `magnitude` (residual units) from the entity's last token to the end
/// of the prompt.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub direction: &'a SteeringDirection,
    pub magnitude: f64,
}

/// Projections of the last prompt token's residual stream onto `read[l]` (a unit vector per
/// layer l in `layers`), per prompt: [layer index][prompt]. `pushes`: one per prompt (steered),
/// else the model as it is.
pub fn projections(
    model: &Model,
    prompts: &[(String, String)],
    pushes: Option<&[Push]>,
    layers: &[usize],
    read: &[Vec<f32>],
    batch: usize,
) -> Result<Vec<Vec<f64>>> {
    if layers.len() != read.len() {
        bail!("{} layers to read but {} directions", layers.len(), read.len());
    }
    if pushes.is_some_and(|p| p.len() != prompts.len()) {
        bail!("{} prompts but {} pushes", prompts.len(), pushes.map_or(0, |p| p.len()));
    }
    let device = model.transformer.device();
    let mut out = vec![Vec::with_capacity(prompts.len()); layers.len()];
    let units: Vec<Tensor> =
        read.iter().map(|r| Tensor::from_vec(r.clone(), (r.len(), 1), device)).collect::<candle_core::Result<_>>()?;
    let b = batch.max(1);
    for (c, chunk) in prompts.chunks(b).enumerate() {
        let eb = entity_batch(model, chunk)?;
        let mut spec = HookSpec::new().capture(layers.iter().map(|&l| HookPoint::ResidPre(l)));
        if let Some(pushes) = pushes {
            // One edit per row, each selecting only its row's positions.
            let Positions::Rows(rows) = eb.last_to_end() else { bail!("steered positions are per row") };
            for (r, ps) in rows.iter().enumerate() {
                let p = &pushes[c * b + r];
                let only: Vec<Vec<i64>> =
                    (0..rows.len()).map(|k| if k == r { ps.clone() } else { Vec::new() }).collect();
                spec = p.direction.add(spec, Positions::Rows(only), p.magnitude, device)?;
            }
        }
        let res = model.run(&eb.batch, &spec)?;
        for (i, &l) in layers.iter().enumerate() {
            let h = res.cache.gather(HookPoint::ResidPre(l), &Positions::Last)?.to_dtype(DType::F32)?.squeeze(1)?;
            let p: Vec<f32> = h.matmul(&units[i])?.flatten_all()?.to_vec1()?;
            out[i].extend(p.iter().map(|&v| v as f64));
        }
    }
    Ok(out)
}

/// The mean residual norm entering block `layer` over the steered positions (the entity's last
/// token to the end) of every prompt: the unit of the steering coefficients.
pub fn steered_norm(model: &Model, prompts: &[(String, String)], layer: usize, batch: usize) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for chunk in prompts.chunks(batch.max(1)) {
        let eb = entity_batch(model, chunk)?;
        let positions = eb.last_to_end();
        let count: usize = eb.batch.columns(&positions)?.iter().map(|c| c.len()).sum();
        sum += mean_resid_norm(model, &eb, layer, &positions)? * count as f64;
        n += count;
    }
    if n == 0 {
        bail!("no steered positions");
    }
    Ok(sum / n as f64)
}

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Steering strengths, in multiples of the mean residual norm at the steered positions.
    pub coefs: Vec<f64>,
    pub n_random: usize,
    /// Random isotropic directions of the cosine null.
    pub n_null: usize,
    /// Label shuffles of the permutation null.
    pub n_permutations: usize,
    /// Refused and answered questions a template needs in each half to enter the fit.
    pub min_per_class: usize,
    pub probe_l2: f64,
    pub batch: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coefs: vec![1.0, 2.0, 4.0],
            n_random: 10,
            n_null: 1000,
            n_permutations: 200,
            min_per_class: 5,
            probe_l2: 1e-2,
            batch: 16,
            seed: 0,
        }
    }
}

/// One layer's refusal direction and its cosines with the detection directions.
#[derive(Debug, Clone, Serialize)]
pub struct LayerGeometry {
    pub layer: usize,
    /// ‖mean refused − mean answered‖ (train split, within strata).
    pub refusal_norm: f64,
    /// Held-out AUROC of the projection, refused positive, pooled over the used strata.
    pub heldout_auroc: Option<Estimate>,
    /// Held-out AUROC comparing pairs within a stratum only.
    pub heldout_auroc_within: Option<f64>,
    /// Held-out mean projection refused − answered (within strata), residual units.
    pub heldout_gap: f64,
    /// Cosine between the directions fitted on train and on the held-out half.
    pub stability: f64,
    /// Cosine with known − unknown difference of means at the entity's last token.
    pub cos_dom_entity: f64,
    /// The same at the last prompt token.
    pub cos_dom_last: f64,
    /// Cosine with the known probe's raw-space direction at the entity's last token.
    pub cos_probe_entity: Option<f64>,
    pub null_isotropic: NullBand,
    /// Shuffled known / unknown labels, difference of means at the entity's last token.
    pub null_permutation: NullBand,
    /// The same at the last prompt token (the null of `cos_dom_last`).
    pub null_permutation_last: NullBand,
    /// Cosines with the detector file's directions at this layer: (name, cosine).
    pub detectors: Vec<(String, f64)>,
}

/// The projection shift of one steering condition at one read layer.
#[derive(Debug, Clone, Serialize)]
pub struct ShiftCell {
    /// The steered questions are about known entities (else unknown ones).
    pub known: bool,
    pub direction: String,
    pub steer_layer: usize,
    pub coef: f64,
    pub magnitude: f64,
    pub read_layer: usize,
    pub n: usize,
    /// Mean change of the projection onto the refusal direction, bootstrap 95% interval.
    pub shift: Option<Estimate>,
    /// The same with question i pushed along random direction i mod n instead.
    pub random_shift: Option<Estimate>,
    /// Mean shift of each random direction (over its questions).
    pub random_means: Vec<f64>,
    /// The direction's per-question shifts against the random per-question shifts.
    pub welch: Option<Welch>,
    /// (direction's mean − mean of the random means) / their standard deviation.
    pub z_vs_random: Option<f64>,
    /// The mean shift over the held-out refused − answered gap at the read layer.
    pub gap_fraction: f64,
    /// Cosine of the steering direction with the refusal direction at the read layer.
    pub cos_with_refusal: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusalCounts {
    pub questions: usize,
    pub refused: usize,
    pub strata: Vec<Stratum>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GeometryResult {
    pub options: Options,
    pub refusal_rule: RefusalRule,
    pub refusal: RefusalCounts,
    pub detection_train: (usize, usize),
    pub layers: Vec<LayerGeometry>,
    /// Layers without a refusal contrast (refused and answered identical at the last token).
    pub skipped_layers: Vec<usize>,
    pub known_direction: SteeringDirection,
    pub unknown_direction: SteeringDirection,
    pub mean_norms: Vec<(usize, f64)>,
    pub steered_items: (usize, usize),
    pub shifts: Vec<ShiftCell>,
    /// Stored answers regenerated now (filled by the caller): are they the model's answers?
    pub answer_check: Option<AnswerCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswerCheck {
    pub n: usize,
    pub same_text: usize,
    pub same_verdict: usize,
}

/// Regenerates the greedy answers of `prompts` (indices `which`) and compares them with the
/// stored ones: the refusal labels are only the model's if the answers are.
pub fn check_answers(
    model: &Model,
    prompts: &[RefusalPrompt],
    texts: &[ChatPrompt],
    which: &[usize],
    max_tokens: usize,
    rule: RefusalRule,
    batch: usize,
) -> Result<AnswerCheck> {
    use crate::model::generate::{generate, GenerateOptions};
    let opts = GenerateOptions { max_tokens, ..Default::default() };
    let (mut same_text, mut same_verdict) = (0, 0);
    for chunk in which.chunks(batch.max(1)) {
        let sel: Vec<ChatPrompt> = chunk.iter().map(|&i| texts[i].clone()).collect();
        let eb = entity_batch(model, &sel)?;
        let (gens, _) = generate(model, &eb.batch, &HookSpec::new(), &opts)?;
        for (&i, g) in chunk.iter().zip(gens) {
            same_text += usize::from(g.text.trim() == prompts[i].answer.trim());
            same_verdict += usize::from(is_refusal(&g.text, rule) == prompts[i].refused);
        }
    }
    Ok(AnswerCheck { n: which.len(), same_text, same_verdict })
}

/// A chat question about an entity, rendered with the template: (full text, entity name).
pub type ChatPrompt = (String, String);

/// Everything the experiment needs, prepared by the caller.
pub struct Inputs<'a> {
    pub refusal: Vec<RefusalPrompt>,
    /// Their chat texts, in the same order.
    pub refusal_texts: Vec<ChatPrompt>,
    /// Detection training prompts and their class (known = true).
    pub detection: Vec<ChatPrompt>,
    pub detection_known: Vec<bool>,
    /// Questions to steer, and their class.
    pub steer: Vec<ChatPrompt>,
    pub steer_known: Vec<bool>,
    pub known_direction: SteeringDirection,
    pub unknown_direction: SteeringDirection,
    /// Further directions (e.g. a detector file's) whose cosine with the refusal direction at
    /// their layer is reported.
    pub extra: Vec<&'a SteeringDirection>,
    pub rule: RefusalRule,
}

pub fn run(model: &Model, inputs: Inputs, opts: &Options, progress: &dyn Progress) -> Result<GeometryResult> {
    if opts.coefs.iter().any(|c| !c.is_finite()) {
        bail!("steering coefficients must be finite, got {:?}", opts.coefs);
    }
    let (n_layers, d) = (model.cfg().n_layers, model.cfg().d_model);
    for dir in [&inputs.known_direction, &inputs.unknown_direction].into_iter().chain(inputs.extra.iter().copied()) {
        if dir.unit.len() != d || dir.layer >= n_layers {
            bail!(
                "direction {} (layer {}, width {}) does not fit the model ({n_layers} layers, d_model {d})",
                dir.name,
                dir.layer,
                dir.unit.len()
            );
        }
    }
    if inputs.refusal.len() != inputs.refusal_texts.len()
        || inputs.detection.len() != inputs.detection_known.len()
        || inputs.steer.len() != inputs.steer_known.len()
    {
        bail!("prompts and their labels differ in length");
    }
    // The refusal contrast.
    let (strata_list, stratum) = strata(&inputs.refusal, opts.min_per_class);
    if !strata_list.iter().any(|s| s.used) {
        let counts: Vec<String> = strata_list
            .iter()
            .map(|s| {
                format!(
                    "{} {}+{} refused of {}+{}",
                    s.name,
                    s.train_refused,
                    s.heldout_refused,
                    s.train_refused + s.train_answered,
                    s.heldout_refused + s.heldout_answered
                )
            })
            .collect();
        bail!(
            "no question template has at least {} refused and {} answered questions in both halves, so there is no \
             refusal contrast to fit ({})",
            opts.min_per_class,
            opts.min_per_class,
            counts.join("; ")
        );
    }
    let y: Vec<bool> = inputs.refusal.iter().map(|p| p.refused).collect();
    let train: Vec<bool> = inputs.refusal.iter().map(|p| p.train).collect();
    let used = |s: usize| strata_list[s].used;
    progress.log(&format!("refusal contrast: {} questions", inputs.refusal.len()));
    let ref_acts = site_activations(model, &inputs.refusal_texts, opts.batch, progress)?;
    let det_acts = site_activations(model, &inputs.detection, opts.batch, progress)?;
    let yk = &inputs.detection_known;
    if !yk.iter().any(|&k| k) || yk.iter().all(|&k| k) {
        bail!("the detection prompts need both known and unknown entities");
    }

    let mut layers = Vec::with_capacity(n_layers);
    // Per layer (None where there is no contrast to fit, e.g. block 0's input at the last
    // token: every chat prompt ends with the same token, whose embedding is all there is).
    let mut refusal_units: Vec<Option<Vec<f32>>> = vec![None; n_layers];
    let mut gaps = vec![f64::NAN; n_layers];
    let mut skipped = Vec::new();
    progress.start("per-layer geometry", Some(n_layers as u64));
    for l in 0..n_layers {
        let x = &ref_acts.last[l];
        let r_train = stratified_diff_of_means(x, d, &y, &stratum, &used, &|r| train[r])?;
        let r_held = stratified_diff_of_means(x, d, &y, &stratum, &used, &|r| !train[r])?;
        let Ok(r_unit) = unit(&r_train, &format!("refusal direction at layer {l}")) else {
            progress
                .log(&format!("layer {l}: refused and answered questions do not differ at the last token; skipped"));
            skipped.push(l);
            progress.advance(1);
            continue;
        };
        let scores: Vec<f64> =
            x.chunks(d).map(|row| row.iter().zip(&r_unit).map(|(&a, &b)| a as f64 * b as f64).sum()).collect();
        let held = |r: usize| !train[r] && used(stratum[r]);
        let pick =
            |want: bool| -> Vec<f64> { (0..y.len()).filter(|&r| held(r) && y[r] == want).map(|r| scores[r]).collect() };
        let heldout_auroc = auroc_ci(&pick(true), &pick(false), 1000, opts.seed);
        let heldout_auroc_within = within_strata_auroc(&scores, &y, &stratum, &held);
        // The held-out gap, within strata: the projection of the held-out direction estimate.
        let heldout_gap = r_held.iter().zip(&r_unit).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();

        let xe = &det_acts.entity[l];
        let dom_entity = stats::diff_of_means(xe, d, yk)?;
        let dom_last = stats::diff_of_means(&det_acts.last[l], d, yk)?;
        let cos_probe_entity = if opts.probe_l2 > 0.0 {
            let (probe, keep) = crate::discover::baselines::fit_probe(xe, d, yk, opts.probe_l2)
                .with_context(|| format!("probe at layer {l}"))?;
            let mut full = vec![0f32; d];
            for (&j, w) in keep.iter().zip(probe.raw_direction()) {
                full[j] = w;
            }
            Some(cosine(&r_unit, &full))
        } else {
            None
        };
        let detectors =
            inputs.extra.iter().filter(|e| e.layer == l).map(|e| (e.name.clone(), cosine(&r_unit, &e.unit))).collect();
        layers.push(LayerGeometry {
            layer: l,
            refusal_norm: norm(&r_train),
            heldout_auroc,
            heldout_auroc_within,
            heldout_gap,
            stability: cosine(&r_train, &r_held),
            cos_dom_entity: cosine(&r_unit, &dom_entity),
            cos_dom_last: cosine(&r_unit, &dom_last),
            cos_probe_entity,
            null_isotropic: isotropic_null(&r_unit, l, opts.n_null, opts.seed)?,
            null_permutation: permutation_null(&r_unit, xe, d, yk, opts.n_permutations, opts.seed)?,
            null_permutation_last: permutation_null(&r_unit, &det_acts.last[l], d, yk, opts.n_permutations, opts.seed)?,
            detectors,
        });
        refusal_units[l] = Some(r_unit);
        gaps[l] = heldout_gap;
        progress.advance(1);
    }
    progress.finish();

    // Steering: known questions with the unknown direction, unknown questions with the known.
    let mut mean_norms: Vec<(usize, f64)> = Vec::new();
    for dir in [&inputs.known_direction, &inputs.unknown_direction] {
        if !mean_norms.iter().any(|&(l, _)| l == dir.layer) {
            mean_norms.push((dir.layer, steered_norm(model, &inputs.steer, dir.layer, opts.batch)?));
        }
    }
    let norm_at = |l: usize| mean_norms.iter().find(|&&(x, _)| x == l).map_or(0.0, |&(_, n)| n);
    let mut shifts = Vec::new();
    let total: usize = [true, false]
        .iter()
        .map(|&k| {
            inputs.steer_known.iter().filter(|&&x| x == k).count()
                * (1 + opts.coefs.len() * (1 + usize::from(opts.n_random > 0)))
        })
        .sum();
    progress.start("steered forward passes", Some(total as u64));
    for known in [true, false] {
        let dir = if known { &inputs.unknown_direction } else { &inputs.known_direction };
        let prompts: Vec<ChatPrompt> =
            inputs.steer.iter().zip(&inputs.steer_known).filter(|(_, &k)| k == known).map(|(p, _)| p.clone()).collect();
        if prompts.is_empty() {
            continue;
        }
        let read_layers: Vec<usize> = (dir.layer..n_layers).filter(|&l| refusal_units[l].is_some()).collect();
        let read: Vec<Vec<f32>> = read_layers.iter().filter_map(|&l| refusal_units[l].clone()).collect();
        let base = projections(model, &prompts, None, &read_layers, &read, opts.batch)?;
        progress.advance(prompts.len() as u64);
        // Random baseline: question i is pushed along random direction i mod n (as `steer`
        // does), so a condition costs one pass while the baseline spans n directions.
        let randoms: Vec<SteeringDirection> = (0..opts.n_random as u64)
            .map(|i| SteeringDirection::random(dir.layer, d, opts.seed, i))
            .collect::<Result<_>>()?;
        for &coef in &opts.coefs {
            let magnitude = coef * norm_at(dir.layer);
            let delta = |p: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
                p.iter().zip(&base).map(|(s, b)| s.iter().zip(b).map(|(a, c)| a - c).collect()).collect()
            };
            let along: Vec<Push> = prompts.iter().map(|_| Push { direction: dir, magnitude }).collect();
            let steered = delta(projections(model, &prompts, Some(&along), &read_layers, &read, opts.batch)?);
            progress.advance(prompts.len() as u64);
            let random = if randoms.is_empty() {
                None
            } else {
                let pushes: Vec<Push> =
                    (0..prompts.len()).map(|i| Push { direction: &randoms[i % randoms.len()], magnitude }).collect();
                let r = delta(projections(model, &prompts, Some(&pushes), &read_layers, &read, opts.batch)?);
                progress.advance(prompts.len() as u64);
                Some(r)
            };
            for (i, &rl) in read_layers.iter().enumerate() {
                // Per random direction, the shifts of its questions.
                let by_direction: Vec<Vec<f64>> = match &random {
                    None => Vec::new(),
                    Some(r) => (0..randoms.len())
                        .map(|k| {
                            r[i].iter().enumerate().filter(|(q, _)| q % randoms.len() == k).map(|(_, &v)| v).collect()
                        })
                        .filter(|v: &Vec<f64>| !v.is_empty())
                        .collect(),
                };
                shifts.push(shift_cell(
                    known,
                    dir,
                    coef,
                    magnitude,
                    rl,
                    &steered[i],
                    &by_direction,
                    gaps[rl],
                    cosine(&dir.unit, refusal_units[rl].as_deref().unwrap_or_default()),
                    opts.seed,
                ));
            }
        }
    }
    progress.finish();
    let refused = y.iter().filter(|&&r| r).count();
    Ok(GeometryResult {
        options: opts.clone(),
        refusal_rule: inputs.rule,
        refusal: RefusalCounts { questions: y.len(), refused, strata: strata_list },
        detection_train: (yk.iter().filter(|&&k| k).count(), yk.iter().filter(|&&k| !k).count()),
        layers,
        skipped_layers: skipped,
        known_direction: inputs.known_direction,
        unknown_direction: inputs.unknown_direction,
        mean_norms,
        steered_items: (
            inputs.steer_known.iter().filter(|&&k| k).count(),
            inputs.steer_known.iter().filter(|&&k| !k).count(),
        ),
        shifts,
        answer_check: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn shift_cell(
    known: bool,
    dir: &SteeringDirection,
    coef: f64,
    magnitude: f64,
    read_layer: usize,
    steered: &[f64],
    random: &[Vec<f64>],
    gap: f64,
    cos_with_refusal: f64,
    seed: u64,
) -> ShiftCell {
    let pooled: Vec<f64> = random.iter().flatten().copied().collect();
    let random_means: Vec<f64> = random.iter().map(|r| mean(r)).collect();
    let z_vs_random = (random_means.len() >= 2).then(|| {
        let (m, v) = mean_var(&random_means);
        (mean(steered) - m) / v.sqrt()
    });
    ShiftCell {
        known,
        direction: dir.name.clone(),
        steer_layer: dir.layer,
        coef,
        magnitude,
        read_layer,
        n: steered.len(),
        shift: bootstrap(steered, 1000, seed, mean),
        random_shift: bootstrap(&pooled, 1000, seed, mean),
        random_means,
        welch: welch(steered, &pooled).ok(),
        z_vs_random: z_vs_random.filter(|z| z.is_finite()),
        gap_fraction: mean(steered) / gap,
        cos_with_refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_unit_handle_degenerate_vectors() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!(unit(&[0.0; 3], "x").is_err());
        assert!(unit(&[f32::NAN, 1.0], "x").is_err());
    }

    #[test]
    fn within_strata_auroc_ignores_between_stratum_offsets() {
        // Stratum 0 sits far above stratum 1, and stratum 1 holds the positives' majority: a
        // pooled AUROC mixes the offset in, the within-strata one sees only within-stratum order.
        let scores = [10.0, 11.0, 0.0, 1.0, 0.5];
        let y = [false, true, true, false, true];
        let s = [0, 0, 1, 1, 1];
        let a = within_strata_auroc(&scores, &y, &s, &|_| true).unwrap();
        // Stratum 0: 1 pair, won. Stratum 1: positives 0.0, 0.5 vs negative 1.0: 0 of 2.
        assert!((a - 1.0 / 3.0).abs() < 1e-12, "{a}");
    }
}
