//! Attention from the final token to the entity (the paper's §5, Fig. 4 and Table 7; its code's
//! `mech_interp/attn_analysis.py`): how much each head at the last position of
//! `The {type} '{name}' {relation}` attends to the entity's last token, for known and unknown
//! entities; how steering that one token with the entity-recognition directions changes it,
//! against random directions of the same norm; and, for the heads that separate the classes
//! most, which tokens their output promotes through the unembedding.
//!
//! Also what `patching` shares with it: the paper's base-model relations, the choice of prompts
//! from a label set, interval helpers and the heatmap both reports draw.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, IndexOp, Tensor};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::direction::SteeringDirection;
use super::relations::{candidates, default_attribute, fill, relation, sample};
use crate::discover::detectors::DetectorFile;
use crate::discover::scores::Direction;
use crate::entities::decide::Class;
use crate::entities::label_set::{LabelSet, LabeledEntity, Split};
use crate::entities::EntityType;
use crate::hooks::{HookPoint, HookSpec, Intervention, Positions};
use crate::progress::Progress;
use crate::report::csv_field;
use crate::report::heatmap::heatmap_svg;
use crate::report::html::{Html, Page, Table};
use crate::stats::{self, mean_ci, Estimate};
use crate::Model;

/// The prompt: the discovery prompt (`The {type} '{name}'`) followed by a base-model relation.
pub const TEMPLATE: &str = "The {type} '{name}' {relation}";

/// One prompt of the experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Prompt {
    pub id: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub name: String,
    pub known: bool,
    pub split: String,
    pub prompt: String,
}

/// Which entities to read.
#[derive(Debug, Clone)]
pub struct SelectOptions {
    pub splits: Vec<Split>,
    /// `None`: every type with both classes in the splits (the others are noted and left out);
    /// given types must have both, or it is an error.
    pub types: Option<Vec<EntityType>>,
    /// At most this many entities per type and class (a seeded sample when there are more).
    pub per_type: usize,
    pub template: String,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct Selection {
    /// Every known item first, then every unknown one (each class is run in its own batches).
    pub items: Vec<Prompt>,
    pub types: Vec<EntityType>,
    /// (type → (attribute, relation)).
    pub relations: BTreeMap<EntityType, (String, String)>,
    pub notes: Vec<String>,
}

fn split_list(splits: &[Split]) -> String {
    splits.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// The known and unknown prompts of each type.
pub fn select(labels: &LabelSet, o: &SelectOptions) -> Result<Selection> {
    if o.splits.is_empty() {
        bail!("no split chosen (use train, validation, test)");
    }
    if o.per_type == 0 {
        bail!("per_type must be at least 1");
    }
    if !o.template.contains("{name}") {
        bail!("template {:?} has no {{name}}", o.template);
    }
    let explicit = o.types.is_some();
    let types = o.types.clone().unwrap_or_else(|| EntityType::ALL.to_vec());
    let (mut known, mut unknown, mut kept, mut notes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut relations = BTreeMap::new();
    for (ti, &t) in types.iter().enumerate() {
        let k = candidates(labels, t, Class::Known, &o.splits);
        let u = candidates(labels, t, Class::Unknown, &o.splits);
        if k.is_empty() || u.is_empty() {
            let what =
                format!("{t}: {} known and {} unknown entities in splits {}", k.len(), u.len(), split_list(&o.splits));
            if explicit {
                bail!(
                    "{}: {what}; the experiment compares the two classes, so every type needs both \
                     (choose other types or splits)",
                    labels.dir.display()
                );
            }
            notes.push(format!("{what}: type left out"));
            continue;
        }
        let attribute = default_attribute(t);
        let rel = relation(t, attribute)?;
        relations.insert(t, (attribute.to_string(), rel.to_string()));
        let item = |e: &LabeledEntity| Prompt {
            id: e.id().to_string(),
            entity_type: t,
            name: e.name().to_string(),
            known: e.class() == Class::Known,
            split: e.split.map(|s| s.as_str().to_string()).unwrap_or_default(),
            prompt: fill(&o.template, t, e.name(), rel),
        };
        known.extend(sample(&k, o.per_type, o.seed, 2 * ti as u64).into_iter().map(item));
        unknown.extend(sample(&u, o.per_type, o.seed, 2 * ti as u64 + 1).into_iter().map(item));
        kept.push(t);
    }
    if kept.is_empty() {
        bail!(
            "{}: no entity type has both known and unknown entities in splits {}",
            labels.dir.display(),
            split_list(&o.splits)
        );
    }
    known.extend(unknown);
    Ok(Selection { items: known, types: kept, relations, notes })
}

/// The known and unknown steering directions.
#[derive(Debug, Clone)]
pub struct Directions {
    pub known: SteeringDirection,
    pub unknown: SteeringDirection,
    pub notes: Vec<String>,
}

fn negated(d: &SteeringDirection) -> SteeringDirection {
    d.negated()
}

/// Picks the known and unknown directions of a detector file: by name, else the one discovery
/// selected for the class's claims, else the first detector of that class, else the negation
/// of the other direction (probes and differences of means are
/// exported for "known" only, so their "unknown" direction is their negation). A named detector
/// of the other class is negated too.
pub fn directions_from(file: &DetectorFile, known: Option<&str>, unknown: Option<&str>) -> Result<Directions> {
    let mut notes = Vec::new();
    let mut pick = |want: Direction, name: Option<&str>| -> Result<Option<SteeringDirection>> {
        let det = match name {
            Some(n) => file.detectors.iter().find(|d| d.name == n).with_context(|| {
                let names: Vec<&str> = file.detectors.iter().map(|d| d.name.as_str()).collect();
                format!("no detector named {n:?} (the file has: {})", names.join(", "))
            })?,
            // The detector discovery selected for the claims (on validation), else the first of
            // the class in the file.
            None => {
                let chosen =
                    file.selected.as_ref().map(|sel| if want == Direction::Known { &sel.known } else { &sel.unknown });
                match chosen
                    .and_then(|n| file.detectors.iter().find(|d| &d.name == n))
                    .or_else(|| file.detectors.iter().find(|d| d.detects == want))
                {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
        };
        let d = SteeringDirection::from_detector(det)?;
        if det.detects == want {
            return Ok(Some(d));
        }
        let (w, what) = (want.as_str(), det.detects.as_str());
        notes.push(format!("the {w} direction is the negation of {} (a {what} detector)", det.name));
        Ok(Some(negated(&d)))
    };
    let k = pick(Direction::Known, known)?;
    let u = pick(Direction::Unknown, unknown)?;
    let (k, u) = match (k, u) {
        (Some(k), Some(u)) => (k, u),
        (Some(k), None) => {
            notes.push(format!("the unknown direction is the negation of {}", k.name));
            let u = negated(&k);
            (k, u)
        }
        (None, Some(u)) => {
            notes.push(format!("the known direction is the negation of {}", u.name));
            (negated(&u), u)
        }
        (None, None) => bail!("the detector file holds no detector"),
    };
    Ok(Directions { known: k, unknown: u, notes })
}

/// [layer][head] values of one prompt.
pub type HeadGrid = Vec<Vec<f32>>;

/// A steering edit: `magnitude · unit` added to the entity's last token at the direction's layer.
#[derive(Debug, Clone, Copy)]
pub struct Steer<'a> {
    pub direction: &'a SteeringDirection,
    pub magnitude: f64,
}

#[derive(Debug, Clone)]
pub struct MeasureOptions {
    /// Prompts per forward pass.
    pub batch: usize,
    /// Also ‖a · v‖ (one more forward pass per batch).
    pub value_weighted: bool,
    /// Layers whose `resid_pre` norm at the entity's last token is recorded.
    pub norm_layers: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// [item][layer][head]: attention probability from the final token to the entity's last.
    pub attention: Vec<HeadGrid>,
    /// [item][layer][head]: ‖a · v_entity‖₂ (empty unless asked).
    pub value_weighted: Vec<HeadGrid>,
    /// Per layer asked: ‖resid_pre‖ at the entity's last token, per item.
    pub resid_norms: BTreeMap<usize, Vec<f64>>,
}

/// Reads the attention of every head from each prompt's final token to its entity's last token,
/// `batch` prompts per forward pass in the order given (with `steer`, the entity's last token
/// is steered first). The same items in the same order always run in the same batches, so a
/// steered and an unsteered measurement differ only by the steering.
pub fn measure(
    model: &Model,
    items: &[&Prompt],
    steer: Option<Steer>,
    o: &MeasureOptions,
    progress: &dyn Progress,
) -> Result<Measured> {
    let add = |spec: HookSpec, eb: &crate::EntityBatch| -> Result<HookSpec> {
        match steer {
            Some(st) => st.direction.add(spec, eb.last(), st.magnitude, model.transformer.device()),
            None => Ok(spec),
        }
    };
    measure_with(model, items, &add, steer, o, progress)
}

/// An edit of the forward pass built per batch (a steering direction, a head's attention edit).
pub type EditFn<'a> = dyn Fn(HookSpec, &crate::EntityBatch) -> Result<HookSpec> + 'a;

/// `measure` with any edit of the forward pass; `steer` only feeds the value-weighted norms.
pub fn measure_with(
    model: &Model,
    items: &[&Prompt],
    edit: &EditFn,
    steer: Option<Steer>,
    o: &MeasureOptions,
    progress: &dyn Progress,
) -> Result<Measured> {
    if o.batch == 0 {
        bail!("batch must be at least 1");
    }
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    for &l in &o.norm_layers {
        HookPoint::ResidPre(l).check_layer(nl)?;
    }
    let mut out = Measured::default();
    for chunk in items.chunks(o.batch) {
        let prompts: Vec<(&str, &str)> = chunk.iter().map(|i| (i.prompt.as_str(), i.name.as_str())).collect();
        let eb = model.entity_batch(&prompts, false)?;
        let s = eb.batch.seq_len;
        let mut key_cols = Vec::with_capacity(chunk.len());
        for (r, &p) in eb.last_positions().iter().enumerate() {
            if p as usize + 1 >= eb.batch.len_of(r) {
                bail!(
                    "prompt {:?}: the entity's last token is the prompt's last token; the template must \
                     continue after the name",
                    chunk[r].prompt
                );
            }
            key_cols.push(eb.batch.column(r, p)?);
        }
        let mut spec = HookSpec::new()
            .capture((0..nl).map(HookPoint::AttnPattern))
            .capture(o.norm_layers.iter().map(|&l| HookPoint::ResidPre(l)));
        spec = edit(spec, &eb)?;
        let run = model.run(&eb.batch, &spec)?;
        let mut grids = vec![vec![vec![0f32; nh]; nl]; chunk.len()];
        for l in 0..nl {
            // [b, head, key] at the final query (left padding puts every row's last token last).
            let p: Vec<Vec<Vec<f32>>> =
                run.cache.get(HookPoint::AttnPattern(l))?.i((.., .., s - 1, ..))?.to_dtype(DType::F32)?.to_vec3()?;
            for (r, g) in grids.iter_mut().enumerate() {
                for h in 0..nh {
                    g[l][h] = p[r][h][key_cols[r]];
                }
            }
        }
        for &l in &o.norm_layers {
            let x: Vec<Vec<f32>> =
                run.cache.gather(HookPoint::ResidPre(l), &eb.last())?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?;
            out.resid_norms.entry(l).or_default().extend(x.iter().map(|v| l2(v)));
        }
        if o.value_weighted {
            let v = value_norms(model, &eb, &key_cols, steer)?;
            for (a, v) in grids.iter().zip(v) {
                out.value_weighted
                    .push(a.iter().zip(v).map(|(al, vl)| al.iter().zip(vl).map(|(x, y)| x * y).collect()).collect());
            }
        }
        out.attention.extend(grids);
        progress.advance(chunk.len() as u64);
    }
    Ok(out)
}

fn l2(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

/// ‖v_j‖ of every head's value vector at the entity's last token j, [row][layer][head]: one
/// forward pass in which the final query of every layer and head attends to j alone, so its
/// hook_z is v_j. Only the final position's attention is changed, and no earlier position reads
/// the final one, so every v_j is the one of the unedited run.
fn value_norms(
    model: &Model,
    eb: &crate::EntityBatch,
    key_cols: &[usize],
    steer: Option<Steer>,
) -> Result<Vec<HeadGrid>> {
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    let (b, s) = (eb.batch.rows(), eb.batch.seq_len);
    let mut onehot = vec![0f32; b * nh * s * s];
    for (r, &c) in key_cols.iter().enumerate() {
        for h in 0..nh {
            for q in 0..s {
                onehot[((r * nh + h) * s + q) * s + c] = 1.0;
            }
        }
    }
    let device = model.transformer.device();
    let onehot = Tensor::from_vec(onehot, (b, nh, s, s), device)?;
    let mut spec = HookSpec::new();
    for l in 0..nl {
        spec = spec
            .edit(HookPoint::AttnPattern(l), Positions::Last, Intervention::Replace(onehot.clone()))
            .capture([HookPoint::AttnZ(l)]);
    }
    if let Some(st) = steer {
        spec = st.direction.add(spec, eb.last(), st.magnitude, device)?;
    }
    let run = model.run(&eb.batch, &spec)?;
    let mut out = vec![vec![vec![0f32; nh]; nl]; b];
    for l in 0..nl {
        // [b, head, d_head] at the final position → norms [b, head].
        let z = run.cache.get(HookPoint::AttnZ(l))?.i((.., s - 1))?.to_dtype(DType::F32)?;
        let n: Vec<Vec<f32>> = z.sqr()?.sum(2)?.sqrt()?.to_vec2()?;
        for (r, g) in out.iter_mut().enumerate() {
            g[l].copy_from_slice(&n[r]);
        }
    }
    Ok(out)
}

/// A difference of two means with Welch's 95% interval, t and two-sided p.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

/// mean(a) − mean(b) with Welch's interval. Needs two values per group.
pub fn welch_difference(a: &[f64], b: &[f64]) -> Result<Difference> {
    let w = stats::welch(a, b)?;
    let (_, va) = stats::mean_var(a);
    let (_, vb) = stats::mean_var(b);
    let se = (va / a.len() as f64 + vb / b.len() as f64).sqrt();
    let half = if se > 0.0 {
        let t = StudentsT::new(0.0, 1.0, w.df).map_err(|e| anyhow::anyhow!("Student t with df {}: {e}", w.df))?;
        t.inverse_cdf(0.975) * se
    } else {
        0.0
    };
    Ok(Difference { value: w.diff, lo: w.diff - half, hi: w.diff + half, t: w.t, df: w.df, p: w.p })
}

/// One head, known vs unknown.
#[derive(Debug, Clone, Serialize)]
pub struct HeadContrast {
    pub layer: usize,
    pub head: usize,
    pub n_known: usize,
    pub n_unknown: usize,
    /// Means with bootstrap intervals.
    pub known: Estimate,
    pub unknown: Estimate,
    /// known − unknown, Welch interval.
    pub diff: Difference,
}

/// Known vs unknown for every head. Each class needs two prompts.
pub fn contrast(known: &[&HeadGrid], unknown: &[&HeadGrid], reps: usize, seed: u64) -> Result<Vec<HeadContrast>> {
    let (Some(first), true) = (known.first(), known.len() >= 2 && unknown.len() >= 2) else {
        bail!("known vs unknown needs two prompts of each class (got {} and {})", known.len(), unknown.len());
    };
    let mut out = Vec::new();
    for l in 0..first.len() {
        for h in 0..first[l].len() {
            let k: Vec<f64> = known.iter().map(|g| g[l][h] as f64).collect();
            let u: Vec<f64> = unknown.iter().map(|g| g[l][h] as f64).collect();
            let s = seed.wrapping_add((l * 1000 + h) as u64);
            out.push(HeadContrast {
                layer: l,
                head: h,
                n_known: k.len(),
                n_unknown: u.len(),
                known: mean_ci(&k, reps, s),
                unknown: mean_ci(&u, reps, s ^ 0x5555),
                diff: welch_difference(&k, &u)?,
            });
        }
    }
    Ok(out)
}

/// Which way the paper expects a steered head's attention to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Unknown prompts steered with the known direction: more attention to the entity.
    Increase,
    /// Known prompts steered with the unknown direction: less.
    Decrease,
}

/// One head under steering: Δ = steered − original attention.
#[derive(Debug, Clone, Serialize)]
pub struct HeadDelta {
    pub layer: usize,
    pub head: usize,
    /// Mean Δ over prompts with the real direction (bootstrap interval).
    pub delta: Estimate,
    /// Mean and standard deviation of Δ over every random direction and prompt.
    pub random_mean: f64,
    pub random_sd: f64,
    /// Welch's t of the real Δ against the pooled random Δ, and its one-sided p in the expected
    /// direction.
    pub t: f64,
    pub p_one_sided: f64,
    /// × the number of heads tested, capped at 1.
    pub p_bonferroni: f64,
}

/// Steering one class's prompts with one direction.
#[derive(Debug, Clone, Serialize)]
pub struct SteeringResult {
    /// "known" or "unknown": the prompts steered.
    pub prompts: String,
    pub direction: String,
    pub source: super::direction::Source,
    pub layer: usize,
    /// Strength in mean residual norms at the layer (entity's last token), and in absolute units.
    pub coef: f64,
    pub magnitude: f64,
    pub n_prompts: usize,
    pub n_random: usize,
    pub expect: Expect,
    /// Heads of layers ≥ `layer`, in layer and head order.
    pub heads: Vec<HeadDelta>,
}

/// Steers `items` (one class) at the entity's last token with `direction` and with `n_random`
/// random directions of the same layer and magnitude; compares each head's Δ (layers ≥ the
/// direction's) with a one-sided Welch test. `base` is the unsteered attention of the same
/// items measured with the same batches.
#[allow(clippy::too_many_arguments)]
pub fn steer_class(
    model: &Model,
    items: &[&Prompt],
    base: &[HeadGrid],
    direction: &SteeringDirection,
    coef: f64,
    magnitude: f64,
    n_random: usize,
    expect: Expect,
    o: &MeasureOptions,
    reps: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<SteeringResult> {
    if items.len() != base.len() {
        bail!("{} prompts but {} unsteered measurements", items.len(), base.len());
    }
    if n_random < 1 {
        bail!("the random baseline needs at least one random direction");
    }
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    HookPoint::ResidPre(direction.layer).check_layer(nl).with_context(|| format!("direction {}", direction.name))?;
    if direction.unit.len() != model.cfg().d_model {
        let (n, d) = (direction.unit.len(), model.cfg().d_model);
        bail!("direction {} has {n} values, the model's d_model is {d}", direction.name);
    }
    let plain = MeasureOptions { value_weighted: false, norm_layers: Vec::new(), ..o.clone() };
    let delta = |m: Measured| -> Vec<HeadGrid> {
        m.attention
            .iter()
            .zip(base)
            .map(|(s, b)| s.iter().zip(b).map(|(sl, bl)| sl.iter().zip(bl).map(|(x, y)| x - y).collect()).collect())
            .collect()
    };
    let real = delta(measure(model, items, Some(Steer { direction, magnitude }), &plain, progress)?);
    let mut random: Vec<Vec<HeadGrid>> = Vec::with_capacity(n_random);
    for i in 0..n_random {
        let r = SteeringDirection::random(direction.layer, model.cfg().d_model, seed, i as u64)?;
        random.push(delta(measure(model, items, Some(Steer { direction: &r, magnitude }), &plain, progress)?));
    }
    let tested = (nl - direction.layer) * nh;
    let mut heads = Vec::new();
    for l in direction.layer..nl {
        for h in 0..nh {
            let a: Vec<f64> = real.iter().map(|g| g[l][h] as f64).collect();
            let b: Vec<f64> = random.iter().flat_map(|d| d.iter().map(|g| g[l][h] as f64)).collect();
            let (rm, rv) = stats::mean_var(&b);
            let (t, p_one_sided) = if a.len() >= 2 {
                let w = stats::welch(&a, &b)?;
                let toward = match expect {
                    Expect::Increase => w.t > 0.0,
                    Expect::Decrease => w.t < 0.0,
                };
                (w.t, if toward { w.p / 2.0 } else { 1.0 - w.p / 2.0 })
            } else {
                (f64::NAN, f64::NAN)
            };
            heads.push(HeadDelta {
                layer: l,
                head: h,
                delta: mean_ci(&a, reps, seed.wrapping_add((l * 1000 + h) as u64)),
                random_mean: rm,
                random_sd: rv.sqrt(),
                t,
                p_one_sided,
                p_bonferroni: (p_one_sided * tested as f64).min(1.0),
            });
        }
    }
    Ok(SteeringResult {
        prompts: if items.first().is_some_and(|i| i.known) { "known" } else { "unknown" }.to_string(),
        direction: direction.name.clone(),
        source: direction.source,
        layer: direction.layer,
        coef,
        magnitude,
        n_prompts: items.len(),
        n_random,
        expect,
        heads,
    })
}

/// The tokens one head's output at the final position promotes: its output alone (the other
/// heads of its layer zeroed at `hook_z` at that position, read at `hook_attn_out`), times the
/// final norm's weight, through the unembedding — the paper's `unembed(head_out · ln_final.w)`.
///
/// Gemma's post-attention RMSNorm normalises the sum of the heads: the block adds
/// `Σ_h (z_h W_O[h]) ⊙ g / rms(Σ_h z_h W_O[h])`, linear in each head once the shared scale is
/// fixed, so a head's share points along `(z_h W_O[h]) ⊙ g`. With the other heads zeroed the
/// norm returns exactly that direction (scaled by the head's own rms instead of the sum's); the
/// ranking of tokens does not depend on the scale. Without post-norms (Llama) it is
/// `z_h W_O[h]` itself. `targets`: (item, layer, head); returns the top `k` (token id, logit)
/// per target.
pub fn promoted_tokens(
    model: &Model,
    items: &[&Prompt],
    targets: &[(usize, usize, usize)],
    k: usize,
    batch: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    let mut out = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(batch.max(1)) {
        for &(i, l, h) in chunk {
            if i >= items.len() || l >= nl || h >= nh {
                bail!("head L{l}H{h} of item {i}: the model has {nl} layers of {nh} heads, {} items", items.len());
            }
        }
        let prompts: Vec<(&str, &str)> =
            chunk.iter().map(|&(i, _, _)| (items[i].prompt.as_str(), items[i].name.as_str())).collect();
        let eb = model.entity_batch(&prompts, false)?;
        let mut spec = HookSpec::new();
        let mut layers: Vec<usize> = chunk.iter().map(|t| t.1).collect();
        layers.sort_unstable();
        layers.dedup();
        for &l in &layers {
            for other in 0..nh {
                let rows: Vec<Vec<i64>> =
                    chunk.iter().map(|&(_, tl, th)| if tl == l && th != other { vec![-1] } else { vec![] }).collect();
                if rows.iter().any(|r| !r.is_empty()) {
                    spec = spec.edit_head(HookPoint::AttnZ(l), other, Positions::Rows(rows), Intervention::Zero);
                }
            }
            spec = spec.capture([HookPoint::AttnOut(l)]);
        }
        let run = model.run(&eb.batch, &spec)?;
        let s = eb.batch.seq_len;
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(r, &(_, l, _))| Ok(run.cache.get(HookPoint::AttnOut(l))?.i((r, s - 1))?))
            .collect::<Result<Vec<Tensor>>>()?;
        let y = Tensor::stack(&rows, 0)?.to_dtype(DType::F32)?;
        let y = y.broadcast_mul(model.transformer.final_norm_weight())?;
        let logits: Vec<Vec<f32>> = model.transformer.unembed_linear(&y)?.to_vec2()?;
        out.extend(logits.iter().map(|row| top_k(row, k)));
    }
    Ok(out)
}

fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

/// Settings of the attention experiment.
#[derive(Debug, Clone)]
pub struct AttentionOptions {
    pub model_name: String,
    pub select: SelectOptions,
    pub measure: MeasureOptions,
    /// Steering strengths in mean residual norms at the direction's layer (each one steers
    /// both classes).
    pub coefs: Vec<f64>,
    pub n_random: usize,
    /// Also steer at every strength and report every head's change against the random
    /// directions pooled per prompt (exploratory maps; the claims use `head_test`).
    pub per_head_steering: bool,
    /// Heads listed (and whose promoted tokens are read), and tokens per head.
    pub top: usize,
    pub promoted_heads: usize,
    pub promoted_examples: usize,
    pub promoted_tokens: usize,
    pub reps: usize,
    pub seed: u64,
}

impl AttentionOptions {
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = self.coefs.iter().find(|c| !(c.is_finite() && **c >= 0.0)) {
            bail!("coef must be a finite number ≥ 0 (mean residual norms), got {c}");
        }
        if self.measure.batch == 0 {
            bail!("batch must be at least 1");
        }
        if self.n_random == 0 {
            bail!("random must be at least 1 (the baseline of the steering test)");
        }
        if self.reps == 0 {
            bail!("reps must be at least 1");
        }
        if self.top == 0 {
            bail!("top must be at least 1");
        }
        Ok(())
    }
}

/// A head's top promoted tokens on one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Promoted {
    pub layer: usize,
    pub head: usize,
    pub entity: String,
    pub known: bool,
    pub attention: f32,
    pub tokens: Vec<String>,
    pub logits: Vec<f32>,
}

/// Everything the experiment found.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionReport {
    pub model: String,
    pub template: String,
    /// type → "attribute: relation".
    pub relations: BTreeMap<String, String>,
    pub splits: Vec<String>,
    pub n_layers: usize,
    pub n_heads: usize,
    /// type → [known, unknown] prompts.
    pub counts: BTreeMap<String, [usize; 2]>,
    pub notes: Vec<String>,
    /// Known vs unknown per head, all types together and per type.
    pub pooled: Vec<HeadContrast>,
    pub per_type: BTreeMap<String, Vec<HeadContrast>>,
    pub value_weighted: Option<Vec<HeadContrast>>,
    /// Heads ranked by Welch's t of known − unknown (pooled), best first.
    pub top_heads: Vec<[usize; 2]>,
    pub steering: Vec<SteeringResult>,
    /// The claims' design: head chosen on train and validation, contrast and steering tested on
    /// test with their controls (`head_test`).
    pub verdicts: Option<super::head_test::HeadVerdicts>,
    pub promoted: Vec<Promoted>,
    pub seconds: BTreeMap<String, f64>,
    #[serde(skip)]
    pub items: Vec<Prompt>,
    #[serde(skip)]
    pub measured: Measured,
}

/// Runs the experiment: attention of every head on known and unknown prompts, their contrast,
/// steering (when `directions` are given) and the promoted tokens of the top heads.
pub fn run(
    model: &Model,
    labels: &LabelSet,
    o: &AttentionOptions,
    directions: Option<&Directions>,
    progress: &dyn Progress,
) -> Result<AttentionReport> {
    o.validate()?;
    let t0 = Instant::now();
    let mut seconds = BTreeMap::new();
    let sel = select(labels, &o.select)?;
    let mut notes = sel.notes.clone();
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    if let Some(d) = directions {
        notes.extend(d.notes.iter().cloned());
        for dir in [&d.known, &d.unknown] {
            HookPoint::ResidPre(dir.layer).check_layer(nl).with_context(|| format!("direction {}", dir.name))?;
        }
    }
    let known: Vec<&Prompt> = sel.items.iter().filter(|i| i.known).collect();
    let unknown: Vec<&Prompt> = sel.items.iter().filter(|i| !i.known).collect();
    let mut mo = o.measure.clone();
    if let Some(d) = directions {
        mo.norm_layers = vec![d.known.layer, d.unknown.layer];
        mo.norm_layers.dedup();
    }
    progress.start("attention", Some(sel.items.len() as u64));
    // Each class in its own batches: the steered runs below repeat exactly these batches.
    let mk = measure(model, &known, None, &mo, progress)?;
    let mu = measure(model, &unknown, None, &mo, progress)?;
    progress.finish();
    seconds.insert("attention".into(), t0.elapsed().as_secs_f64());

    let all_k: Vec<&HeadGrid> = mk.attention.iter().collect();
    let all_u: Vec<&HeadGrid> = mu.attention.iter().collect();
    let pooled = contrast(&all_k, &all_u, o.reps, o.seed)?;
    let mut per_type = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for &t in &sel.types {
        let k: Vec<&HeadGrid> =
            known.iter().zip(&mk.attention).filter(|(i, _)| i.entity_type == t).map(|x| x.1).collect();
        let u: Vec<&HeadGrid> =
            unknown.iter().zip(&mu.attention).filter(|(i, _)| i.entity_type == t).map(|x| x.1).collect();
        counts.insert(t.to_string(), [k.len(), u.len()]);
        match contrast(&k, &u, o.reps, o.seed) {
            Ok(c) => {
                per_type.insert(t.to_string(), c);
            }
            Err(e) => notes.push(format!("{t}: no per-type contrast ({e})")),
        }
    }
    let value_weighted = if o.measure.value_weighted {
        let vk: Vec<&HeadGrid> = mk.value_weighted.iter().collect();
        let vu: Vec<&HeadGrid> = mu.value_weighted.iter().collect();
        Some(contrast(&vk, &vu, o.reps, o.seed)?)
    } else {
        None
    };
    let mut ranked: Vec<&HeadContrast> = pooled.iter().collect();
    ranked.sort_by(|a, b| b.diff.t.total_cmp(&a.diff.t));
    let top_heads: Vec<[usize; 2]> = ranked.iter().take(o.top).map(|c| [c.layer, c.head]).collect();

    let mut steering = Vec::new();
    if let (Some(d), true) = (directions, o.per_head_steering) {
        let t1 = Instant::now();
        let norm_at = |layer: usize| -> f64 {
            let all: Vec<f64> =
                mk.resid_norms.get(&layer).into_iter().chain(mu.resid_norms.get(&layer)).flatten().copied().collect();
            all.iter().sum::<f64>() / all.len().max(1) as f64
        };
        let total = o.coefs.len() * (1 + o.n_random) * (known.len() + unknown.len());
        progress.start("steering", Some(total as u64));
        for &coef in &o.coefs {
            for (items, base, dir, expect) in [
                (&known, &mk.attention, &d.unknown, Expect::Decrease),
                (&unknown, &mu.attention, &d.known, Expect::Increase),
            ] {
                let magnitude = coef * norm_at(dir.layer);
                steering.push(steer_class(
                    model, items, base, dir, coef, magnitude, o.n_random, expect, &mo, o.reps, o.seed, progress,
                )?);
            }
        }
        progress.finish();
        seconds.insert("steering".into(), t1.elapsed().as_secs_f64());
    }

    // The claims' design: chosen on train and validation, tested once on test.
    let t3 = Instant::now();
    let all_items: Vec<&Prompt> = known.iter().chain(&unknown).copied().collect();
    let all_grids: Vec<HeadGrid> = mk.attention.iter().chain(&mu.attention).cloned().collect();
    let verdicts = match super::head_test::run(
        model, &all_items, &all_grids, directions, &o.coefs, o.n_random, &mo, o.reps, o.seed, progress,
    ) {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("no head test: {e}"));
            None
        }
    };
    seconds.insert("head_test".into(), t3.elapsed().as_secs_f64());

    // Promoted tokens of the top heads, on the known prompts they attend to most.
    let t2 = Instant::now();
    let mut targets = Vec::new();
    for &[l, h] in top_heads.iter().take(o.promoted_heads) {
        let mut order: Vec<usize> = (0..known.len()).collect();
        order.sort_by(|&a, &b| mk.attention[b][l][h].total_cmp(&mk.attention[a][l][h]));
        targets.extend(order.into_iter().take(o.promoted_examples).map(|i| (i, l, h)));
    }
    let tokens = promoted_tokens(model, &known, &targets, o.promoted_tokens, o.measure.batch)?;
    let promoted = targets
        .iter()
        .zip(tokens)
        .map(|(&(i, l, h), top)| Promoted {
            layer: l,
            head: h,
            entity: known[i].name.clone(),
            known: true,
            attention: mk.attention[i][l][h],
            tokens: top.iter().map(|&(id, _)| model.tokenizer.token(id)).collect(),
            logits: top.iter().map(|&(_, v)| v).collect(),
        })
        .collect();
    seconds.insert("promoted_tokens".into(), t2.elapsed().as_secs_f64());
    seconds.insert("total".into(), t0.elapsed().as_secs_f64());

    let items: Vec<Prompt> = known.iter().chain(&unknown).map(|&i| i.clone()).collect();
    let measured = Measured {
        attention: mk.attention.iter().chain(&mu.attention).cloned().collect(),
        value_weighted: mk.value_weighted.iter().chain(&mu.value_weighted).cloned().collect(),
        resid_norms: BTreeMap::new(),
    };
    Ok(AttentionReport {
        model: o.model_name.clone(),
        template: o.select.template.clone(),
        relations: sel.relations.iter().map(|(t, (a, r))| (t.to_string(), format!("{a}: {r}"))).collect(),
        splits: o.select.splits.iter().map(|s| s.as_str().to_string()).collect(),
        n_layers: nl,
        n_heads: nh,
        counts,
        notes,
        pooled,
        per_type,
        value_weighted,
        top_heads,
        steering,
        verdicts,
        promoted,
        seconds,
        items,
        measured,
    })
}

/// Writes `attention.json`, `heads.csv` (known vs unknown per head and scope), `steering.csv`,
/// `items.csv` (every prompt's attention per head) and `report.html` into `dir`.
pub fn write(r: &AttentionReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsio::write_atomic(&dir.join("attention.json"), serde_json::to_string_pretty(r)?.as_bytes())?;
    let mut heads =
        String::from("scope,metric,layer,head,n_known,n_unknown,mean_known,mean_unknown,diff,diff_lo,diff_hi,t,df,p\n");
    let mut rows = |scope: &str, metric: &str, cs: &[HeadContrast]| {
        for c in cs {
            let _ = writeln!(
                heads,
                "{scope},{metric},{},{},{},{},{},{},{},{},{},{},{},{}",
                c.layer,
                c.head,
                c.n_known,
                c.n_unknown,
                c.known.value,
                c.unknown.value,
                c.diff.value,
                c.diff.lo,
                c.diff.hi,
                c.diff.t,
                c.diff.df,
                c.diff.p
            );
        }
    };
    rows("all", "attention", &r.pooled);
    for (t, cs) in &r.per_type {
        rows(t, "attention", cs);
    }
    if let Some(v) = &r.value_weighted {
        rows("all", "value_weighted", v);
    }
    crate::fsio::write_atomic(&dir.join("heads.csv"), heads.as_bytes())?;
    let mut st = String::from(
        "prompts,direction,layer,coef,magnitude,head_layer,head,delta,delta_lo,delta_hi,random_mean,random_sd,t,\
         p_one_sided,p_bonferroni\n",
    );
    for s in &r.steering {
        for h in &s.heads {
            let _ = writeln!(
                st,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                s.prompts,
                csv_field(&s.direction),
                s.layer,
                s.coef,
                s.magnitude,
                h.layer,
                h.head,
                h.delta.value,
                h.delta.lo,
                h.delta.hi,
                h.random_mean,
                h.random_sd,
                h.t,
                h.p_one_sided,
                h.p_bonferroni
            );
        }
    }
    crate::fsio::write_atomic(&dir.join("steering.csv"), st.as_bytes())?;
    let mut items = String::from("id,type,name,class,split,layer,head,attention,value_weighted\n");
    for (k, it) in r.items.iter().enumerate() {
        for l in 0..r.n_layers {
            for h in 0..r.n_heads {
                let vw = r.measured.value_weighted.get(k).map(|g| g[l][h].to_string()).unwrap_or_default();
                let _ = writeln!(
                    items,
                    "{},{},{},{},{},{l},{h},{},{vw}",
                    csv_field(&it.id),
                    it.entity_type,
                    csv_field(&it.name),
                    if it.known { "known" } else { "unknown" },
                    it.split,
                    r.measured.attention[k][l][h]
                );
            }
        }
    }
    crate::fsio::write_atomic(&dir.join("items.csv"), items.as_bytes())?;
    page(r).write(&dir.join("report.html"))
}

fn est(e: &Estimate, digits: usize) -> String {
    format!("{:.*} [{:.*}, {:.*}]", digits, e.value, digits, e.lo, digits, e.hi)
}

fn diff_text(d: &Difference) -> String {
    format!("{:+.4} [{:+.4}, {:+.4}]", d.value, d.lo, d.hi)
}

/// p-values in a compact, honest form (no "0.0000").
pub fn p_text(p: f64) -> String {
    if p.is_nan() {
        "–".into()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn page(r: &AttentionReport) -> Page {
    let layers: Vec<String> = (0..r.n_layers).map(|l| format!("L{l}")).collect();
    let heads: Vec<String> = (0..r.n_heads).map(|h| format!("H{h}")).collect();
    let grid = |cs: &[HeadContrast]| -> Vec<Vec<f64>> {
        let mut g = vec![vec![f64::NAN; r.n_heads]; r.n_layers];
        cs.iter().for_each(|c| g[c.layer][c.head] = c.diff.value);
        g
    };
    let counts: Vec<String> = r.counts.iter().map(|(t, [k, u])| format!("{t}: {k} known, {u} unknown")).collect();
    let mut p = Page::new(&format!("Attention to the entity — {}", r.model)).meta(Html::text(&format!(
        "prompt {:?}; relations: {}; splits {}; {}",
        r.template,
        r.relations.iter().map(|(t, rel)| format!("{t} ({rel})")).collect::<Vec<_>>().join(", "),
        r.splits.join(","),
        counts.join("; ")
    )));
    p = p.paragraph(
        "Attention probability from the prompt's final token to the entity's last token, per layer and head \
         (hook_pattern[b, h, −1, entity_last]). Known − unknown means with Welch 95% intervals; class means \
         with bootstrap intervals.",
    );
    if let Some(v) = &r.verdicts {
        p = p.heading("The claims' test: head chosen on train and validation, tested on test");
        let c = &v.contrast;
        p = p.paragraph(&format!(
            "Chosen head L{}H{} ({}; {} known and {} unknown selection prompts). Known − unknown on test, within type              and pooled over types with at least {} of each class: {}. Null rate under within-type label              permutations: {}/{}.",
            v.choice.layer,
            v.choice.head,
            v.choice.rule,
            v.choice.n_known,
            v.choice.n_unknown,
            super::head_test::MIN_TYPE,
            c.stratified.map_or("–".into(), |e| est(&e, 4)),
            c.null.passed,
            c.null.draws
        ));
        let mut t = Table::new(&[
            "prompts",
            "head",
            "direction",
            "strength",
            "detector (signed Δ)",
            "Gaussian mean",
            "Gaussian max",
            "opposite",
            "direct edit",
        ]);
        for st in &v.steering {
            let mean = st.controls.iter().sum::<f64>() / st.controls.len().max(1) as f64;
            let max = st.controls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            t.text_row(&[
                st.prompts.clone(),
                format!("L{}H{}", st.head.0, st.head.1),
                st.direction.clone(),
                format!("×{}", st.coef),
                st.detector.map_or("–".into(), |e| est(&e, 4)),
                format!("{mean:+.4}"),
                format!("{max:+.4}"),
                st.opposite.map_or("–".into(), |o| format!("{o:+.4}")),
                st.positive.map_or("–".into(), |e| est(&e, 4)),
            ]);
        }
        p = p.table(t.class("num"));
        for n in &v.notes {
            p = p.paragraph(n);
        }
    }
    p = p.figure(
        &heatmap_svg("known − unknown attention (all types)", &layers, &heads, &grid(&r.pooled)),
        "Mean attention to the entity's last token, known minus unknown, per layer (rows) and head (columns).",
    );
    for (t, cs) in &r.per_type {
        let svg = heatmap_svg(&format!("known − unknown ({t})"), &layers, &heads, &grid(cs));
        p = p.figure(&svg, &format!("{t} only."));
    }
    let mut top = Table::new(&["head", "known", "unknown", "known − unknown", "t", "p", "value-weighted diff"]);
    for &[l, h] in &r.top_heads {
        let Some(c) = r.pooled.iter().find(|c| c.layer == l && c.head == h) else { continue };
        let vw = r
            .value_weighted
            .as_ref()
            .and_then(|v| v.iter().find(|c| c.layer == l && c.head == h))
            .map(|c| diff_text(&c.diff))
            .unwrap_or_else(|| "–".into());
        top.text_row(&[
            format!("L{l}H{h}"),
            est(&c.known, 4),
            est(&c.unknown, 4),
            diff_text(&c.diff),
            format!("{:.2}", c.diff.t),
            p_text(c.diff.p),
            vw,
        ]);
    }
    p = p.heading("Heads that attend more to known entities").table(top);
    for s in &r.steering {
        let mut moved: Vec<&HeadDelta> = s.heads.iter().collect();
        moved.sort_by(|a, b| (b.delta.value - b.random_mean).abs().total_cmp(&(a.delta.value - a.random_mean).abs()));
        let mut t = Table::new(&["head", "Δ (direction)", "Δ (random: mean ± sd)", "t", "p one-sided", "p Bonferroni"]);
        for h in moved.iter().take(r.top_heads.len().max(1)) {
            t.text_row(&[
                format!("L{}H{}", h.layer, h.head),
                format!("{:+.4} [{:+.4}, {:+.4}]", h.delta.value, h.delta.lo, h.delta.hi),
                format!("{:+.4} ± {:.4}", h.random_mean, h.random_sd),
                format!("{:.2}", h.t),
                p_text(h.p_one_sided),
                p_text(h.p_bonferroni),
            ]);
        }
        let title = format!(
            "{} prompts steered with {} (layer {}, {} × mean norm = {:.1}); expected: {:?}",
            s.prompts, s.direction, s.layer, s.coef, s.magnitude, s.expect
        );
        let mut g = vec![vec![f64::NAN; r.n_heads]; r.n_layers];
        s.heads.iter().for_each(|h| g[h.layer][h.head] = h.delta.value - h.random_mean);
        p = p
            .heading(&title)
            .paragraph(&format!(
                "Δ = steered − original attention at the entity's last token; {} prompts, {} random directions of \
                 the same norm; heads of layers ≥ {} ({} tested), ordered by |Δ − random Δ|.",
                s.n_prompts,
                s.n_random,
                s.layer,
                s.heads.len()
            ))
            .table(t)
            .figure(
                &heatmap_svg("Δ(direction) − Δ(random)", &layers, &heads, &g),
                "Mean change of attention under the direction minus the random directions' mean change.",
            );
    }
    if !r.promoted.is_empty() {
        let mut t = Table::new(&["head", "entity", "attention", "top promoted tokens"]);
        for pr in &r.promoted {
            let toks: Vec<String> = pr.tokens.iter().map(|s| format!("{s:?}")).collect();
            t.text_row(&[
                format!("L{}H{}", pr.layer, pr.head),
                pr.entity.clone(),
                format!("{:.3}", pr.attention),
                toks.join(" "),
            ]);
        }
        p = p
            .heading("Tokens the top heads promote (known prompts they attend to most)")
            .paragraph(
                "The head's output at the final position (other heads of its layer zeroed; through Gemma's \
                 post-attention norm), times the final norm's weight, through the unembedding.",
            )
            .table(t);
    }
    p.notes(&r.notes).timing_footer("attention", &r.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_interval_is_the_t_quantile_times_the_standard_error() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [0.5, 0.7, 0.9];
        let d = welch_difference(&a, &b).unwrap();
        assert!((d.value - 1.8).abs() < 1e-12);
        assert!(d.lo < d.value && d.value < d.hi);
        // se = sqrt(1.6667/4 + 0.04/3); the half-width is t_{0.975, df} · se.
        let se = (5.0f64 / 3.0 / 4.0 + 0.04 / 3.0).sqrt();
        let q = StudentsT::new(0.0, 1.0, d.df).unwrap().inverse_cdf(0.975);
        assert!((d.hi - d.value - q * se).abs() < 1e-12);
    }

    #[test]
    fn top_k_orders_by_value() {
        assert_eq!(top_k(&[0.1, 3.0, -1.0, 2.0], 2), vec![(1, 3.0), (3, 2.0)]);
        assert!(top_k(&[1.0], 0).is_empty());
    }
}
