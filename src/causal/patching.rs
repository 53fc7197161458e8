//! Activation patching (the paper's §5, Fig. 4a–b and 13; its code's `mech_interp/patching.py`):
//! run a corrupted prompt (an unknown entity) with one activation taken from the clean run (a
//! known entity, same template, type and token length) and measure how much of the clean answer
//! comes back: `(LD − LD_corr) / (LD_clean − LD_corr)` with
//! `LD = logit[known's answer] − logit[unknown's answer]` at the last position (0 = the
//! corrupted run, 1 = the clean run). Two kinds of site: the residual stream entering a layer at
//! one position (`resid_pre`), and one head's output at the last position (`hook_z`).
//!
//! Many patch sites run as the rows of one forward pass: every row holds the corrupted prompt
//! and its own edit, and each batch also runs the clean and the corrupted prompt unedited, so
//! every site is normalised by references computed in its own batch.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;

use super::relations::{candidates, default_attribute, fill, relation, sample};
use crate::entities::decide::Class;
use crate::entities::label_set::{LabelSet, LabeledEntity, Split};
use crate::entities::EntityType;
use crate::hooks::{HookPoint, HookSpec, Intervention, LogitsAt, Positions};
use crate::progress::Progress;
use crate::report::csv_field;
use crate::report::heatmap::heatmap_svg;
use crate::report::html::{Html, Page, Table};
use crate::rng::{self, SplitMix64, TAG_PICK};
use crate::stats::mean_ci;
use crate::stats::Estimate;
use crate::Model;

/// Where one patch goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Site {
    /// `blocks.{layer}.hook_resid_pre` at these positions (within the prompt; negative from the
    /// end) replaced by the clean run's.
    Resid { layer: usize, positions: Vec<i64> },
    /// One head's `hook_z` at one position replaced by the clean run's.
    Head { layer: usize, head: usize, position: i64 },
}

impl Site {
    fn layer(&self) -> usize {
        match self {
            Site::Resid { layer, .. } | Site::Head { layer, .. } => *layer,
        }
    }
}

/// The logit differences of one patching run.
#[derive(Debug, Clone)]
pub struct Patched {
    /// LD of the clean and corrupted prompts, unedited (from the first batch).
    pub ld_clean: f64,
    pub ld_corrupt: f64,
    /// LD of each site's patched run, and the normalised metric (NaN when the two references
    /// are equal).
    pub ld: Vec<f64>,
    pub normalised: Vec<f64>,
}

/// Patches each site into the corrupted prompt, `rows` rows per forward pass (two of them the
/// unedited clean and corrupted prompts). `answers`: [the clean answer's token, the corrupted
/// answer's token].
pub fn patch(
    model: &Model,
    clean: &[u32],
    corrupt: &[u32],
    answers: [u32; 2],
    sites: &[Site],
    rows: usize,
) -> Result<Patched> {
    let cfg = model.cfg();
    let n = clean.len();
    if corrupt.len() != n {
        let m = corrupt.len();
        bail!("the clean prompt has {n} tokens and the corrupted one {m}: patching needs the same length");
    }
    if rows < 3 {
        bail!("rows per forward pass must be at least 3 (the clean and corrupted references and one patch)");
    }
    if let Some(a) = answers.iter().find(|&&a| a as usize >= cfg.vocab_size) {
        bail!("answer token {a} is outside the vocabulary of {}", cfg.vocab_size);
    }
    let in_prompt = |p: i64| (-(n as i64)..n as i64).contains(&p);
    for s in sites {
        HookPoint::ResidPre(s.layer()).check_layer(cfg.n_layers)?;
        match s {
            Site::Resid { positions, .. } => {
                if let Some(p) = positions.iter().find(|&&p| !in_prompt(p)) {
                    bail!("patch position {p} is outside the prompt of {n} tokens");
                }
            }
            Site::Head { head, position, .. } => {
                if *head >= cfg.n_heads || !in_prompt(*position) {
                    bail!(
                        "head patch H{head} at position {position}: the model has {} heads, the prompt {n} tokens",
                        cfg.n_heads
                    );
                }
            }
        }
    }
    let resid_layers: BTreeSet<usize> =
        sites.iter().filter(|s| matches!(s, Site::Resid { .. })).map(Site::layer).collect();
    let head_layers: BTreeSet<usize> =
        sites.iter().filter(|s| matches!(s, Site::Head { .. })).map(Site::layer).collect();
    let source = model.run(
        &model.batch_from_ids(&[clean.to_vec()])?,
        &HookSpec::new()
            .capture(resid_layers.iter().map(|&l| HookPoint::ResidPre(l)))
            .capture(head_layers.iter().map(|&l| HookPoint::AttnZ(l))),
    )?;
    let device = model.transformer.device();
    let idx = Tensor::from_vec(answers.to_vec(), 2, device)?;
    let mut out = Patched { ld_clean: f64::NAN, ld_corrupt: f64::NAN, ld: Vec::new(), normalised: Vec::new() };
    for (ci, chunk) in sites.chunks(rows - 2).enumerate() {
        let b = chunk.len() + 2;
        let mut ids = vec![clean.to_vec(), corrupt.to_vec()];
        ids.extend(std::iter::repeat_n(corrupt.to_vec(), chunk.len()));
        let batch = model.batch_from_ids(&ids)?;
        let mut spec = HookSpec::new().logits(LogitsAt::Last);
        // Per row, the positions one edit selects (none in the reference rows).
        let positions = |select: &dyn Fn(&Site) -> Option<Vec<i64>>| -> Positions {
            let mut p = vec![Vec::new(), Vec::new()];
            p.extend(chunk.iter().map(|s| select(s).unwrap_or_default()));
            Positions::Rows(p)
        };
        for &l in &resid_layers {
            if !chunk.iter().any(|s| matches!(s, Site::Resid { layer, .. } if *layer == l)) {
                continue;
            }
            let src = source.cache.get(HookPoint::ResidPre(l))?;
            let src = src.broadcast_as((b, n, src.dim(2)?))?.contiguous()?;
            let pos = positions(&|s| match s {
                Site::Resid { layer, positions } if *layer == l => Some(positions.clone()),
                _ => None,
            });
            spec = spec.edit(HookPoint::ResidPre(l), pos, Intervention::Replace(src));
        }
        for &l in &head_layers {
            let heads: BTreeSet<usize> = chunk
                .iter()
                .filter_map(|s| match s {
                    Site::Head { layer, head, .. } if *layer == l => Some(*head),
                    _ => None,
                })
                .collect();
            if heads.is_empty() {
                continue;
            }
            let src = source.cache.get(HookPoint::AttnZ(l))?;
            let (_, _, nh, dh) = src.dims4()?;
            let src = src.broadcast_as((b, n, nh, dh))?.contiguous()?;
            for h in heads {
                let pos = positions(&|s| match s {
                    Site::Head { layer, head, position } if *layer == l && *head == h => Some(vec![*position]),
                    _ => None,
                });
                spec = spec.edit_head(HookPoint::AttnZ(l), h, pos, Intervention::Replace(src.clone()));
            }
        }
        let logits = model.run(&batch, &spec)?.logits.context("the patched run returned no logits")?;
        let two: Vec<Vec<f32>> = logits.index_select(&idx, 1)?.to_dtype(DType::F32)?.to_vec2()?;
        let ld: Vec<f64> = two.iter().map(|r| r[0] as f64 - r[1] as f64).collect();
        let (clean_ld, corrupt_ld) = (ld[0], ld[1]);
        if ci == 0 {
            out.ld_clean = clean_ld;
            out.ld_corrupt = corrupt_ld;
        }
        let denom = clean_ld - corrupt_ld;
        for &x in &ld[2..] {
            out.ld.push(x);
            out.normalised.push(if denom != 0.0 { (x - corrupt_ld) / denom } else { f64::NAN });
        }
    }
    Ok(out)
}

/// One prompt of a pair.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub id: String,
    pub name: String,
    pub split: String,
    pub prompt: String,
    /// The gold value whose first token is the answer, as the labels scored it (" India").
    pub answer: String,
    pub answer_token: u32,
    pub answer_token_text: String,
    #[serde(skip)]
    pub ids: Vec<u32>,
}

/// A clean (known) and corrupted (unknown) prompt of the same type, template and token length,
/// with the entity on the same positions.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub attribute: String,
    pub clean: Side,
    pub corrupt: Side,
    pub n_tokens: usize,
    /// First and last position of the entity (the same in both prompts).
    pub entity: [i64; 2],
    /// The clean prompt's tokens.
    pub tokens: Vec<String>,
    /// LD of the unedited clean and corrupted prompts when the pair was chosen.
    pub ld_clean: f64,
    pub ld_corrupt: f64,
}

/// Which pairs to look for.
#[derive(Debug, Clone)]
pub struct PairOptions {
    pub splits: Vec<Split>,
    pub types: Option<Vec<EntityType>>,
    pub template: String,
    /// At most this many pairs (the paper: 32).
    pub max_pairs: usize,
    /// Unknown entities tried per known one.
    pub candidates: usize,
    /// A pair is used only if LD_clean − LD_corr reaches this (a smaller gap makes the
    /// normalised metric a ratio of noise).
    pub min_gap: f64,
    /// Prompts per forward pass while choosing.
    pub batch: usize,
    pub seed: u64,
}

/// The pairs found, and how many of each kind of entity were looked at.
#[derive(Debug, Clone, Serialize)]
pub struct Pairing {
    pub pairs: Vec<Pair>,
    /// type → counts.
    pub per_type: BTreeMap<String, PairCounts>,
    pub relations: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PairCounts {
    /// Known entities whose record for the attribute is correct and has a gold value.
    pub known: usize,
    /// Unknown entities with a gold value.
    pub unknown: usize,
    /// Known entities with at least one unknown partner of the same length and entity span.
    pub with_partner: usize,
    /// Candidate pairs whose logit-difference gap was below `min_gap`.
    pub below_gap: usize,
    pub paired: usize,
}

/// The side of an entity: its prompt, token ids and the first token of its gold value for
/// `attribute` (the first value its label record scored). None when the record is missing, has
/// no scored value or (for `need_correct`) was not answered correctly.
fn side(
    model: &Model,
    e: &LabeledEntity,
    attribute: &str,
    template: &str,
    rel: &str,
    need_correct: bool,
) -> Result<Option<(Side, Vec<i64>)>> {
    let Some(rec) = e.label.records.iter().find(|r| r.attribute == attribute) else { return Ok(None) };
    if need_correct && !rec.correct {
        return Ok(None);
    }
    let Some(gold) = rec.likelihood.first() else { return Ok(None) };
    let Some(&token) = model.tokenizer.encode(&gold.value, false, false)?.first() else { return Ok(None) };
    let prompt = fill(template, e.entity_type(), e.name(), rel);
    let ids = model.tokenizer.encode_prompt(&prompt, false)?;
    let span = model.tokenizer.span_positions(&prompt, e.name(), true, false).with_context(|| prompt.clone())?;
    Ok(Some((
        Side {
            id: e.id().to_string(),
            name: e.name().to_string(),
            split: e.split.map(|s| s.as_str().to_string()).unwrap_or_default(),
            prompt,
            answer: gold.value.clone(),
            answer_token: token,
            answer_token_text: model.tokenizer.token(token),
            ids,
        },
        span,
    )))
}

/// Pairs every known entity (of the chosen types and splits) with an unknown one of the same
/// type whose prompt has the same token length and entity positions and whose answer starts
/// with another token; tries up to `candidates` unknown partners (seeded order) and keeps the
/// first whose unedited logit-difference gap reaches `min_gap`. No unknown entity is tried for
/// two known ones.
pub fn find_pairs(model: &Model, labels: &LabelSet, o: &PairOptions) -> Result<Pairing> {
    if o.splits.is_empty() {
        bail!("no split chosen (use train, validation, test)");
    }
    if o.max_pairs == 0 || o.candidates == 0 || o.batch == 0 {
        bail!("pairs, candidates and batch must each be at least 1");
    }
    if !o.min_gap.is_finite() {
        bail!("min_gap must be a finite number, got {}", o.min_gap);
    }
    if !o.template.contains("{name}") {
        bail!("template {:?} has no {{name}}", o.template);
    }
    let explicit = o.types.is_some();
    let types = o.types.clone().unwrap_or_else(|| EntityType::ALL.to_vec());
    let mut notes = Vec::new();
    let mut per_type = BTreeMap::new();
    let mut relations = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (ti, &t) in types.iter().enumerate() {
        let attribute = default_attribute(t);
        let rel = relation(t, attribute)?;
        let of = |class| candidates(labels, t, class, &o.splits);
        let mut counts = PairCounts::default();
        let mut known = Vec::new();
        for e in of(Class::Known) {
            if let Some(s) = side(model, e, attribute, &o.template, rel, true)? {
                known.push(s);
            }
        }
        let mut unknown = Vec::new();
        for e in of(Class::Unknown) {
            if let Some(s) = side(model, e, attribute, &o.template, rel, false)? {
                unknown.push(s);
            }
        }
        counts.known = known.len();
        counts.unknown = unknown.len();
        if known.is_empty() || unknown.is_empty() {
            let what = format!(
                "{t}: {} known entities answering {attribute} correctly and {} unknown ones with a gold {attribute} \
                 in splits {}",
                known.len(),
                unknown.len(),
                o.splits.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
            );
            if explicit {
                bail!("{}: {what}; patching needs both (choose other types or splits)", labels.dir.display());
            }
            notes.push(format!("{what}: type left out"));
            per_type.insert(t.to_string(), counts);
            continue;
        }
        relations.insert(t.to_string(), format!("{attribute}: {rel}"));
        let mut order: Vec<usize> = (0..unknown.len()).collect();
        rng::shuffle(&mut order, &mut SplitMix64::derive(o.seed, TAG_PICK, 100 + ti as u64));
        // Candidates are dealt round by round (one per known entity per round), so every known
        // entity gets a first candidate before any gets a second, and no unknown entity is a
        // candidate twice.
        let mut partners: Vec<Vec<Side>> = vec![Vec::new(); known.len()];
        let mut taken = vec![false; unknown.len()];
        for _ in 0..o.candidates {
            for ((k, kspan), mine) in known.iter().zip(partners.iter_mut()) {
                let fits = |&&i: &&usize| {
                    let (u, uspan) = &unknown[i];
                    !taken[i] && u.ids.len() == k.ids.len() && uspan == kspan && u.answer_token != k.answer_token
                };
                if let Some(&i) = order.iter().find(fits) {
                    taken[i] = true;
                    mine.push(unknown[i].0.clone());
                }
            }
        }
        for ((k, kspan), mine) in known.into_iter().zip(partners) {
            if !mine.is_empty() {
                counts.with_partner += 1;
                groups.push(Group { t, attribute: attribute.to_string(), known: k, span: kspan, partners: mine });
            }
        }
        per_type.insert(t.to_string(), counts);
    }
    if groups.is_empty() {
        bail!(
            "{}: no known entity has an unknown partner of the same type, token length and entity positions",
            labels.dir.display()
        );
    }
    // The unedited logit differences of every candidate pair.
    let answers: Vec<u32> = {
        let mut a: Vec<u32> = groups
            .iter()
            .flat_map(|g| std::iter::once(g.known.answer_token).chain(g.partners.iter().map(|u| u.answer_token)))
            .collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    let col: BTreeMap<u32, usize> = answers.iter().enumerate().map(|(i, &a)| (a, i)).collect();
    let rows: Vec<&Side> = groups.iter().flat_map(|g| std::iter::once(&g.known).chain(g.partners.iter())).collect();
    let idx = Tensor::from_vec(answers.clone(), answers.len(), model.transformer.device())?;
    let mut logits: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(o.batch) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|s| s.ids.clone()).collect();
        let out = model.run(&model.batch_from_ids(&ids)?, &HookSpec::new().logits(LogitsAt::Last))?;
        let l = out.logits.context("no logits")?.index_select(&idx, 1)?.to_dtype(DType::F32)?;
        logits.extend(l.to_vec2::<f32>()?);
    }
    let ld = |row: usize, k: u32, u: u32| logits[row][col[&k]] as f64 - logits[row][col[&u]] as f64;
    let mut pairs = Vec::new();
    let mut row = 0;
    for Group { t, attribute, known: k, span, partners } in groups {
        let krow = row;
        row += 1 + partners.len();
        let counts = per_type.get_mut(t.as_str()).expect("counted above");
        for (j, u) in partners.into_iter().enumerate() {
            let (lc, lu) = (ld(krow, k.answer_token, u.answer_token), ld(krow + 1 + j, k.answer_token, u.answer_token));
            if lc - lu < o.min_gap {
                counts.below_gap += 1;
                continue;
            }
            counts.paired += 1;
            let tokens = k.ids.iter().map(|&i| model.tokenizer.token(i)).collect();
            pairs.push(Pair {
                entity_type: t,
                attribute,
                n_tokens: k.ids.len(),
                entity: [span[0], *span.last().expect("spans are never empty")],
                tokens,
                clean: k,
                corrupt: u,
                ld_clean: lc,
                ld_corrupt: lu,
            });
            break;
        }
    }
    if pairs.is_empty() {
        bail!(
            "{}: no candidate pair reaches a logit-difference gap of {} (lower --min-gap)",
            labels.dir.display(),
            o.min_gap
        );
    }
    // At most max_pairs, spread over the types in proportion (a seeded sample per type).
    if pairs.len() > o.max_pairs {
        let keep = sample(&(0..pairs.len()).collect::<Vec<_>>(), o.max_pairs, o.seed, 999);
        let keep: HashSet<usize> = keep.into_iter().collect();
        pairs = pairs.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, p)| p).collect();
        notes.push(format!("{} pairs sampled from the candidates that qualified", o.max_pairs));
    }
    for c in per_type.values_mut() {
        c.paired = 0;
    }
    for p in &pairs {
        per_type.get_mut(p.entity_type.as_str()).expect("counted").paired += 1;
    }
    Ok(Pairing { pairs, per_type, relations, notes })
}

/// A known entity and the unknown partners it may be paired with.
struct Group {
    t: EntityType,
    attribute: String,
    known: Side,
    /// The entity's positions in the known prompt (every partner's are the same).
    span: Vec<i64>,
    partners: Vec<Side>,
}

/// Pairs of one column of a heatmap: (pair index, that pair's positions in the column).
type Members = Vec<(usize, Vec<usize>)>;

/// Where a position sits relative to the entity, so that prompts of different lengths line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Before the entity (the template's prefix: the same tokens in both prompts).
    Pre(usize),
    EntityFirst,
    /// Any entity token between the first and the last (averaged).
    EntityMiddle,
    EntityLast,
    /// After the entity, counted from the end (1 = the last token).
    FromEnd(usize),
}

impl Role {
    pub fn of(p: usize, entity: [i64; 2], n: usize) -> Role {
        let (first, last) = (entity[0] as usize, entity[1] as usize);
        if p < first {
            Role::Pre(p)
        } else if p == last {
            Role::EntityLast
        } else if p == first {
            Role::EntityFirst
        } else if p < last {
            Role::EntityMiddle
        } else {
            Role::FromEnd(n - p)
        }
    }

    /// Left-to-right order of the prompt.
    fn order(&self) -> (u8, i64) {
        match *self {
            Role::Pre(p) => (0, p as i64),
            Role::EntityFirst => (1, 0),
            Role::EntityMiddle => (2, 0),
            Role::EntityLast => (3, 0),
            Role::FromEnd(k) => (4, -(k as i64)),
        }
    }
}

/// One pair's patching results.
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    pub pair: Pair,
    pub ld_clean: f64,
    pub ld_corrupt: f64,
    /// [layer][position]: normalised metric of patching resid_pre there. Positions before the
    /// first token that differs are 0 without being run (identical in both prompts).
    pub resid: Vec<Vec<f64>>,
    /// [layer][head]: patching one head's output at the last position.
    pub heads: Vec<Vec<f64>>,
    pub first_differing: usize,
}

/// The mean over pairs (with a bootstrap interval) of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub mean: Estimate,
    pub n: usize,
}

/// One heatmap: rows are layers.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub scope: String,
    pub n_pairs: usize,
    pub columns: Vec<String>,
    /// [layer][column]; None where no pair has the column.
    pub cells: Vec<Vec<Option<Cell>>>,
}

#[derive(Debug, Clone)]
pub struct PatchOptions {
    pub model_name: String,
    pub pairs: PairOptions,
    /// Rows per forward pass.
    pub rows: usize,
    pub reps: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatchReport {
    pub model: String,
    pub template: String,
    pub relations: BTreeMap<String, String>,
    pub splits: Vec<String>,
    pub n_layers: usize,
    pub n_heads: usize,
    pub min_gap: f64,
    pub per_type: BTreeMap<String, PairCounts>,
    pub notes: Vec<String>,
    pub results: Vec<PairResult>,
    /// Residual patching by layer × position role: all types, then each type.
    pub resid: Vec<Heatmap>,
    /// Head patching at the last position by layer × head: all types, then each type.
    pub heads: Vec<Heatmap>,
    pub patched_runs: usize,
    pub seconds: BTreeMap<String, f64>,
}

/// Finds the pairs and patches every layer × position of resid_pre (from the first position
/// that differs) and every head at the last position.
pub fn run(model: &Model, labels: &LabelSet, o: &PatchOptions, progress: &dyn Progress) -> Result<PatchReport> {
    if o.rows < 3 {
        bail!("rows must be at least 3");
    }
    if o.reps == 0 {
        bail!("reps must be at least 1");
    }
    let t0 = Instant::now();
    let mut seconds = BTreeMap::new();
    let pairing = find_pairs(model, labels, &o.pairs)?;
    seconds.insert("pairing".into(), t0.elapsed().as_secs_f64());
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    let t1 = Instant::now();
    progress.start("patching", Some(pairing.pairs.len() as u64));
    let mut results = Vec::new();
    let mut patched_runs = 0;
    for pair in &pairing.pairs {
        let (c, u) = (&pair.clean.ids, &pair.corrupt.ids);
        let n = c.len();
        let first = (0..n).find(|&p| c[p] != u[p]).unwrap_or(n);
        let mut sites = Vec::new();
        for l in 0..nl {
            sites.extend((first..n).map(|p| Site::Resid { layer: l, positions: vec![p as i64] }));
        }
        for l in 0..nl {
            sites.extend((0..nh).map(|h| Site::Head { layer: l, head: h, position: -1 }));
        }
        let r = patch(model, c, u, [pair.clean.answer_token, pair.corrupt.answer_token], &sites, o.rows)?;
        patched_runs += sites.len();
        let mut resid = vec![vec![0.0; n]; nl];
        let mut heads = vec![vec![0.0; nh]; nl];
        for (s, &v) in sites.iter().zip(&r.normalised) {
            match s {
                Site::Resid { layer, positions } => resid[*layer][positions[0] as usize] = v,
                Site::Head { layer, head, .. } => heads[*layer][*head] = v,
            }
        }
        results.push(PairResult {
            pair: pair.clone(),
            ld_clean: r.ld_clean,
            ld_corrupt: r.ld_corrupt,
            resid,
            heads,
            first_differing: first,
        });
        progress.advance(1);
    }
    progress.finish();
    seconds.insert("patching".into(), t1.elapsed().as_secs_f64());

    let mut scopes: Vec<(String, Vec<&PairResult>)> = vec![("all types".into(), results.iter().collect())];
    let types: BTreeSet<EntityType> = results.iter().map(|r| r.pair.entity_type).collect();
    if types.len() > 1 {
        for t in types {
            scopes.push((t.to_string(), results.iter().filter(|r| r.pair.entity_type == t).collect()));
        }
    }
    let resid = scopes.iter().map(|(s, rs)| resid_heatmap(s, rs, nl, o.reps, o.seed)).collect();
    let heads = scopes.iter().map(|(s, rs)| head_heatmap(s, rs, nl, nh, o.reps, o.seed)).collect();
    seconds.insert("total".into(), t0.elapsed().as_secs_f64());
    Ok(PatchReport {
        model: o.model_name.clone(),
        template: o.pairs.template.clone(),
        relations: pairing.relations,
        splits: o.pairs.splits.iter().map(|s| s.as_str().to_string()).collect(),
        n_layers: nl,
        n_heads: nh,
        min_gap: o.pairs.min_gap,
        per_type: pairing.per_type,
        notes: pairing.notes,
        results,
        resid,
        heads,
        patched_runs,
        seconds,
    })
}

/// Residual patching lined up by role: per pair, the mean over its positions of each role, then
/// the mean over pairs. Prefix and suffix columns are named by their token when every pair has
/// the same one there.
fn resid_heatmap(scope: &str, rs: &[&PairResult], nl: usize, reps: usize, seed: u64) -> Heatmap {
    let mut roles: BTreeMap<Role, Members> = BTreeMap::new();
    for (k, r) in rs.iter().enumerate() {
        let n = r.pair.n_tokens;
        let mut of_pair: BTreeMap<Role, Vec<usize>> = BTreeMap::new();
        for p in 0..n {
            of_pair.entry(Role::of(p, r.pair.entity, n)).or_default().push(p);
        }
        for (role, ps) in of_pair {
            roles.entry(role).or_default().push((k, ps));
        }
    }
    let mut ordered: Vec<(Role, Members)> = roles.into_iter().collect();
    ordered.sort_by_key(|(role, _)| role.order());
    let label = |role: Role, members: &[(usize, Vec<usize>)]| -> String {
        let token = |k: usize, p: usize| rs[k].pair.tokens.get(p).cloned().unwrap_or_default();
        let shared = |name: String| {
            let t: BTreeSet<String> = members.iter().map(|(k, ps)| token(*k, ps[0])).collect();
            if t.len() == 1 {
                format!("{name} {:?}", t.into_iter().next().unwrap_or_default())
            } else {
                name
            }
        };
        match role {
            Role::Pre(p) => shared(format!("pos {p}")),
            Role::EntityFirst => "entity first".into(),
            Role::EntityMiddle => "entity middle".into(),
            Role::EntityLast => "entity last".into(),
            Role::FromEnd(1) => shared("last".into()),
            Role::FromEnd(k) => shared(format!("end−{}", k - 1)),
        }
    };
    let columns = ordered.iter().map(|(role, m)| label(*role, m)).collect();
    let cells = (0..nl)
        .map(|l| {
            ordered
                .iter()
                .enumerate()
                .map(|(j, (_, members))| {
                    let v: Vec<f64> = members
                        .iter()
                        .map(|(k, ps)| ps.iter().map(|&p| rs[*k].resid[l][p]).sum::<f64>() / ps.len() as f64)
                        .filter(|v| v.is_finite())
                        .collect();
                    (!v.is_empty())
                        .then(|| Cell { mean: mean_ci(&v, reps, seed.wrapping_add((l * 100 + j) as u64)), n: v.len() })
                })
                .collect()
        })
        .collect();
    Heatmap { scope: scope.to_string(), n_pairs: rs.len(), columns, cells }
}

fn head_heatmap(scope: &str, rs: &[&PairResult], nl: usize, nh: usize, reps: usize, seed: u64) -> Heatmap {
    let cells = (0..nl)
        .map(|l| {
            (0..nh)
                .map(|h| {
                    let v: Vec<f64> = rs.iter().map(|r| r.heads[l][h]).filter(|v| v.is_finite()).collect();
                    (!v.is_empty())
                        .then(|| Cell { mean: mean_ci(&v, reps, seed.wrapping_add((l * 100 + h) as u64)), n: v.len() })
                })
                .collect()
        })
        .collect();
    Heatmap { scope: scope.to_string(), n_pairs: rs.len(), columns: (0..nh).map(|h| format!("H{h}")).collect(), cells }
}

/// Writes `patching.json`, `resid.csv`, `heads.csv` (every pair's values) and `report.html`.
pub fn write(r: &PatchReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsio::write_atomic(&dir.join("patching.json"), serde_json::to_string_pretty(r)?.as_bytes())?;
    let mut resid = String::from("pair,type,clean,corrupt,layer,position,role,token,normalised\n");
    let mut heads = String::from("pair,type,clean,corrupt,layer,head,normalised\n");
    for (k, pr) in r.results.iter().enumerate() {
        let p = &pr.pair;
        let (c, u) = (csv_field(&p.clean.name), csv_field(&p.corrupt.name));
        for (l, row) in pr.resid.iter().enumerate() {
            for (pos, v) in row.iter().enumerate() {
                let role = format!("{:?}", Role::of(pos, p.entity, p.n_tokens));
                let tok = csv_field(p.tokens.get(pos).map(String::as_str).unwrap_or(""));
                let _ = writeln!(resid, "{k},{},{c},{u},{l},{pos},{role},{tok},{v}", p.entity_type);
            }
        }
        for (l, row) in pr.heads.iter().enumerate() {
            for (h, v) in row.iter().enumerate() {
                let _ = writeln!(heads, "{k},{},{c},{u},{l},{h},{v}", p.entity_type);
            }
        }
    }
    crate::fsio::write_atomic(&dir.join("resid.csv"), resid.as_bytes())?;
    crate::fsio::write_atomic(&dir.join("heads.csv"), heads.as_bytes())?;
    page(r).write(&dir.join("report.html"))
}

fn means(h: &Heatmap) -> Vec<Vec<f64>> {
    let value = |c: &Option<Cell>| c.as_ref().map(|c| c.mean.value).unwrap_or(f64::NAN);
    h.cells.iter().map(|row| row.iter().map(value).collect()).collect()
}

/// The `top` cells with the largest mean, as table rows.
fn top_cells(h: &Heatmap, top: usize) -> Table {
    let mut all: Vec<(usize, usize, &Cell)> = h
        .cells
        .iter()
        .enumerate()
        .flat_map(|(l, row)| row.iter().enumerate().filter_map(move |(j, c)| c.as_ref().map(|c| (l, j, c))))
        .collect();
    all.sort_by(|a, b| b.2.mean.value.total_cmp(&a.2.mean.value));
    let mut t = Table::new(&["layer", "site", "mean normalised metric [95% CI]", "pairs"]);
    for (l, j, c) in all.into_iter().take(top) {
        t.text_row(&[
            format!("L{l}"),
            h.columns[j].clone(),
            format!("{:.3} [{:.3}, {:.3}]", c.mean.value, c.mean.lo, c.mean.hi),
            c.n.to_string(),
        ]);
    }
    t
}

fn page(r: &PatchReport) -> Page {
    let layers: Vec<String> = (0..r.n_layers).map(|l| format!("L{l}")).collect();
    let counts: Vec<String> = r
        .per_type
        .iter()
        .map(|(t, c)| {
            format!(
                "{t}: {} known, {} unknown usable, {} known with a same-length partner, {} below the gap, {} pairs",
                c.known, c.unknown, c.with_partner, c.below_gap, c.paired
            )
        })
        .collect();
    let mut p = Page::new(&format!("Activation patching — {}", r.model)).meta(Html::text(&format!(
        "prompt {:?}; relations: {}; splits {}; {} pairs; {} patched runs",
        r.template,
        r.relations.iter().map(|(t, rel)| format!("{t} ({rel})")).collect::<Vec<_>>().join(", "),
        r.splits.join(","),
        r.results.len(),
        r.patched_runs
    )));
    p = p.paragraph(
        "Clean = a known entity's prompt, corrupted = an unknown entity's prompt of the same type, template and \
         token length (entity on the same positions). LD = logit[known's answer] − logit[unknown's answer] at \
         the last position (first tokens of the gold values the labels scored); the metric is \
         (LD − LD_corr) / (LD_clean − LD_corr): 0 = corrupted, 1 = clean. Positions before the first token \
         that differs are identical in both runs and are 0 without being run.",
    );
    for line in counts {
        p = p.paragraph(&line);
    }
    p = p.paragraph(&format!("Pairs are used only when LD_clean − LD_corr ≥ {}.", r.min_gap));
    for h in &r.resid {
        p = p
            .heading(&format!("Residual stream (resid_pre) — {} ({} pairs)", h.scope, h.n_pairs))
            .figure(
                &heatmap_svg(&format!("resid_pre patching, {}", h.scope), &layers, &h.columns, &means(h)),
                "Mean normalised metric over pairs, per layer (rows) and position (columns, lined up by their place \
                 relative to the entity; entity middle averages the tokens between its first and last).",
            )
            .table(top_cells(h, 10));
    }
    for h in &r.heads {
        p = p
            .heading(&format!("Heads at the last position — {} ({} pairs)", h.scope, h.n_pairs))
            .figure(
                &heatmap_svg(
                    &format!("head patching (hook_z, last position), {}", h.scope),
                    &layers,
                    &h.columns,
                    &means(h),
                ),
                "Mean normalised metric of patching one head's output at the last position.",
            )
            .table(top_cells(h, 10));
    }
    let mut t = Table::new(&[
        "type",
        "clean (known) → answer",
        "corrupted (unknown) → answer",
        "tokens",
        "LD clean",
        "LD corrupted",
    ]);
    for pr in &r.results {
        let q = &pr.pair;
        t.text_row(&[
            q.entity_type.to_string(),
            format!("{} → {:?}", q.clean.name, q.clean.answer_token_text),
            format!("{} → {:?}", q.corrupt.name, q.corrupt.answer_token_text),
            q.n_tokens.to_string(),
            format!("{:.3}", pr.ld_clean),
            format!("{:.3}", pr.ld_corrupt),
        ]);
    }
    p = p.heading("Pairs").table(t);
    p.notes(&r.notes).timing_footer("patch", &r.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_line_up_prompts_around_the_entity() {
        // <bos> The city ' A B C ' is located in
        let roles: Vec<Role> = (0..11).map(|p| Role::of(p, [4, 6], 11)).collect();
        assert_eq!(roles[..4], [Role::Pre(0), Role::Pre(1), Role::Pre(2), Role::Pre(3)]);
        assert_eq!(roles[4..7], [Role::EntityFirst, Role::EntityMiddle, Role::EntityLast]);
        assert_eq!(roles[7..], [Role::FromEnd(4), Role::FromEnd(3), Role::FromEnd(2), Role::FromEnd(1)]);
        // A one-token entity is its last token.
        assert_eq!(Role::of(4, [4, 4], 8), Role::EntityLast);
        let mut sorted = roles.clone();
        sorted.sort_by_key(|r| r.order());
        assert_eq!(sorted, roles);
    }
}
