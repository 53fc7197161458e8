//! Per-latent dashboards in the spirit of Neuronpedia's feature pages and SAEDashboard, rendered
//! to one self-contained HTML file (inline CSS and SVG, no scripts, nothing fetched).
//!
//! For each latent: its top-activating contexts (a window of ±`window` tokens around the token
//! where the latent peaks in a sequence, at most one window per sequence so that the examples are
//! not ten neighbours of one hot spot; each token's background is proportional to the latent's
//! activation there, the value in a tooltip), a histogram of its non-zero activations with
//! log-scale counts and its activation density, and the tokens its decoder direction promotes
//! and suppresses through the unembedding.
//!
//! # Logit effects
//!
//! Neuronpedia lists `W_dec[j] · W_U`. Between the residual stream and `W_U` sits the final
//! RMSNorm, whose weight rescales every dimension (strongly so in Gemma); TransformerLens's
//! default `fold_ln` multiplies that weight into `W_U`. By default (`fold_final_norm`) the
//! dashboard does the same, `(W_dec[j] ⊙ w_norm) · W_U`, which is the direction's direct effect
//! on the logits up to the norm's positive per-token scale; turning it off gives the literal
//! `W_dec[j] · W_U`. TransformerLens's `center_unembed` shifts each latent's logits by a constant
//! and changes no ranking, so it is left out; so is Gemma 2's final softcap (monotonic). Gemma's
//! unembedding is its tied embedding. SAEs on `attn.hook_z` get no logit table (their decoder
//! rows live before W_O), nor does folding apply to an SAE on `ln_final.hook_normalized`.
//!
//! Like the evaluation (`sae::eval`), BOS, EOS and padding are never counted: they get no
//! examples or histogram entries, though they may appear in a context window.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;

use super::eval::{counted_mask, hook_rows, special_ids};
use super::Sae;
use crate::batch::Batch;
use crate::hooks::{HookPoint, HookSpec};
use crate::model::Model;
use crate::report::chart::log_histogram_svg;
use crate::report::html::{escape, figure, token_strip, token_text, Html, Page, StripToken, Table};

/// Which latents get a dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum LatentSelection {
    /// These latents, in this order.
    List(Vec<usize>),
    /// The n latents that fire on the most tokens (costs one extra pass over the text).
    MostFrequent(usize),
}

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Top-activating contexts per latent.
    pub n_examples: usize,
    /// Tokens shown on each side of the peak token.
    pub window: usize,
    /// Promoted and suppressed tokens listed.
    pub n_logits: usize,
    pub histogram_bins: usize,
    /// Multiply the final norm's weight into the unembedding, as TransformerLens's `fold_ln`.
    pub fold_final_norm: bool,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self { batch_size: 8, n_examples: 10, window: 8, n_logits: 10, histogram_bins: 40, fold_final_norm: true }
    }
}

/// Everything the HTML shows; also serializable, e.g. for a JSON export.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboards {
    pub sae: String,
    pub hook: String,
    pub model: String,
    pub d_in: usize,
    pub d_sae: usize,
    pub n_sequences: usize,
    /// Tokens counted (no padding, BOS or EOS).
    pub n_tokens: usize,
    /// How the logit tables were computed, in words.
    pub logits_method: String,
    pub latents: Vec<LatentDashboard>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatentDashboard {
    pub latent: usize,
    /// Counted tokens on which it fired (> 0).
    pub n_fired: usize,
    /// n_fired / n_tokens.
    pub density: f64,
    pub max_activation: f32,
    /// Mean over the tokens where it fired.
    pub mean_activation: f32,
    pub examples: Vec<ContextWindow>,
    pub histogram: Histogram,
    pub promoted: Vec<LogitEntry>,
    pub suppressed: Vec<LogitEntry>,
}

/// A window of tokens around a latent's peak in one sequence.
#[derive(Debug, Clone, Serialize)]
pub struct ContextWindow {
    /// Index of the sequence among those given.
    pub sequence: usize,
    /// Position of the peak token in its sequence.
    pub position: usize,
    pub ids: Vec<u32>,
    /// Each token's text (decoded), same length as ids.
    pub tokens: Vec<String>,
    pub activations: Vec<f32>,
    /// Index of the peak token within the window.
    pub center: usize,
    pub max_activation: f32,
}

/// Non-zero activations in `counts.len()` equal bins between 0 and `max`.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub max: f32,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogitEntry {
    pub id: u32,
    pub token: String,
    pub value: f32,
}

/// Runs the model over `seqs` and gathers the dashboard data of the selected latents.
pub fn collect(
    model: &Model,
    sae: &Sae,
    seqs: &[Vec<u32>],
    selection: &LatentSelection,
    cfg: &DashboardConfig,
) -> Result<Dashboards> {
    sae.check_model(model)?;
    if seqs.is_empty() {
        bail!("no sequences to build dashboards from");
    }
    if cfg.batch_size == 0 || cfg.histogram_bins == 0 {
        bail!("batch_size and histogram_bins must be at least 1");
    }
    let special = special_ids(model);
    let latents: Vec<usize> = match selection {
        LatentSelection::List(l) => {
            if l.is_empty() {
                bail!("no latents selected");
            }
            if let Some(bad) = l.iter().find(|&&j| j >= sae.d_sae()) {
                bail!(
                    "latent {bad} does not exist: SAE {} has {} latents (0..={})",
                    sae.source.display(),
                    sae.d_sae(),
                    sae.d_sae() - 1
                );
            }
            l.clone()
        }
        LatentSelection::MostFrequent(n) => {
            let mut counts = vec![0u64; sae.d_sae()];
            for_each_batch(model, sae, seqs, cfg.batch_size, &special, |_, _, keep, f| {
                let idx = Tensor::from_slice(keep, keep.len(), f.device())?;
                let fired = f.index_select(&idx, 0)?.gt(0f32)?.to_dtype(DType::F32)?.sum(0)?.to_vec1::<f32>()?;
                counts.iter_mut().zip(fired).for_each(|(c, v)| *c += v as u64);
                Ok(())
            })?;
            let mut order: Vec<usize> = (0..sae.d_sae()).collect();
            order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
            order.truncate((*n).max(1));
            order
        }
    };

    let k = latents.len();
    let mut stats: Vec<LatentStats> = (0..k).map(|_| LatentStats::default()).collect();
    let lat_idx =
        Tensor::from_vec(latents.iter().map(|&j| j as u32).collect::<Vec<_>>(), k, model.transformer.device())?;
    let mut n_tokens = 0usize;
    for_each_batch(model, sae, seqs, cfg.batch_size, &special, |first, batch, keep, f| {
        n_tokens += keep.len();
        let s = batch.seq_len;
        let sel = f.index_select(&lat_idx, 1)?.to_vec2::<f32>()?; // [b·s][k]
        let counted: Vec<bool> = {
            let mut c = vec![false; batch.rows() * s];
            keep.iter().for_each(|&i| c[i as usize] = true);
            c
        };
        for (j, st) in stats.iter_mut().enumerate() {
            for r in 0..batch.rows() {
                let mut peak: Option<(usize, f32)> = None;
                for t in batch.pad[r]..s {
                    let v = sel[r * s + t][j];
                    if !counted[r * s + t] || v <= 0.0 {
                        continue;
                    }
                    st.values.push(v);
                    if peak.is_none_or(|(_, p)| v > p) {
                        peak = Some((t, v));
                    }
                }
                let Some((t, v)) = peak else { continue };
                if st.top.len() == cfg.n_examples && st.top.last().is_some_and(|w| w.max_activation >= v) {
                    continue;
                }
                let lo = t.saturating_sub(cfg.window).max(batch.pad[r]);
                let hi = (t + cfg.window).min(s - 1);
                st.top.push(ContextWindow {
                    sequence: first + r,
                    position: t - batch.pad[r],
                    ids: batch.ids[r][lo..=hi].to_vec(),
                    tokens: Vec::new(),
                    activations: (lo..=hi).map(|u| sel[r * s + u][j]).collect(),
                    center: t - lo,
                    max_activation: v,
                });
                st.top.sort_by(|a, b| b.max_activation.total_cmp(&a.max_activation));
                st.top.truncate(cfg.n_examples);
            }
        }
        Ok(())
    })?;
    if n_tokens == 0 {
        bail!("no tokens to build dashboards from: every token is padding, BOS or EOS");
    }

    let (logit_tables, logits_method) = logit_effects(model, sae, &lat_idx, cfg)?;
    let text = |id: u32| display_token(model, id);
    let mut tables = logit_tables.into_iter();
    let mut out = Vec::with_capacity(k);
    for (j, st) in latents.iter().zip(stats) {
        let max = st.values.iter().copied().fold(0f32, f32::max);
        let mut counts = vec![0u64; cfg.histogram_bins];
        for &v in &st.values {
            let b = ((v / max) * cfg.histogram_bins as f32) as usize;
            counts[b.min(cfg.histogram_bins - 1)] += 1;
        }
        let n_fired = st.values.len();
        let mean =
            if n_fired > 0 { (st.values.iter().map(|&v| v as f64).sum::<f64>() / n_fired as f64) as f32 } else { 0.0 };
        let examples = st
            .top
            .into_iter()
            .map(|mut w| {
                w.tokens = w.ids.iter().map(|&id| text(id)).collect();
                w
            })
            .collect();
        let (promoted, suppressed) = tables.next().unwrap_or_default();
        out.push(LatentDashboard {
            latent: *j,
            n_fired,
            density: n_fired as f64 / n_tokens as f64,
            max_activation: max,
            mean_activation: mean,
            examples,
            histogram: Histogram { max, counts },
            promoted,
            suppressed,
        });
    }
    Ok(Dashboards {
        sae: sae.source.display().to_string(),
        hook: sae.hook.to_string(),
        model: model.source.display().to_string(),
        d_in: sae.d_in(),
        d_sae: sae.d_sae(),
        n_sequences: seqs.len(),
        n_tokens,
        logits_method,
        latents: out,
    })
}

#[derive(Default)]
struct LatentStats {
    /// Every non-zero activation at a counted token.
    values: Vec<f32>,
    /// Best windows so far, highest first.
    top: Vec<ContextWindow>,
}

/// Calls `f(first_sequence, batch, counted_cells, latents [b·s, d_sae])` batch by batch; the
/// forward pass stops at the SAE's hook.
fn for_each_batch(
    model: &Model,
    sae: &Sae,
    seqs: &[Vec<u32>],
    batch_size: usize,
    special: &[u32],
    mut f: impl FnMut(usize, &Batch, &[u32], &Tensor) -> Result<()>,
) -> Result<()> {
    for (i, rows) in seqs.chunks(batch_size).enumerate() {
        let first = i * batch_size;
        let ctx = || format!("sequences {first}..{}", first + rows.len());
        let batch = model.batch_from_ids(rows).with_context(ctx)?;
        let keep = counted_mask(&batch, special);
        let keep: Vec<u32> = (0..keep.len() as u32).filter(|&c| keep[c as usize]).collect();
        if keep.is_empty() {
            continue;
        }
        let out = model.run(&batch, &HookSpec::new().capture([sae.hook])).with_context(ctx)?;
        let latents = sae.encode(&hook_rows(out.cache.get(sae.hook)?, sae.d_in())?)?;
        f(first, &batch, &keep, &latents).with_context(ctx)?;
    }
    Ok(())
}

type LogitTable = (Vec<LogitEntry>, Vec<LogitEntry>);

/// Promoted and suppressed tokens of each selected decoder row, and how they were computed.
fn logit_effects(
    model: &Model,
    sae: &Sae,
    lat_idx: &Tensor,
    cfg: &DashboardConfig,
) -> Result<(Vec<LogitTable>, String)> {
    if matches!(sae.hook, HookPoint::AttnZ(_)) || sae.d_in() != model.cfg().d_model {
        return Ok((Vec::new(), "none: the SAE's decoder rows are not residual-stream directions".into()));
    }
    let mut w = sae.w_dec().index_select(lat_idx, 0)?; // [k, d]
    let fold = cfg.fold_final_norm && sae.hook != HookPoint::LnFinal;
    if fold {
        w = w.broadcast_mul(model.transformer.final_norm_weight())?;
    }
    let method = if fold {
        "(W_dec[j] ⊙ w_final_norm) · W_U (the final norm's weight folded in, as TransformerLens's fold_ln)"
    } else {
        "W_dec[j] · W_U (as Neuronpedia lists it)"
    };
    let logits = model.transformer.unembed_linear(&w)?.to_vec2::<f32>()?;
    let n = cfg.n_logits;
    let entry = |(id, value): (usize, f32)| LogitEntry { id: id as u32, token: display_token(model, id as u32), value };
    let tables = logits
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_unstable_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top = order.iter().take(n).map(|&i| entry((i, row[i]))).collect();
            let bottom = order.iter().rev().take(n).map(|&i| entry((i, row[i]))).collect();
            (top, bottom)
        })
        .collect();
    Ok((tables, method.to_string()))
}

/// A token as text: decoded on its own (so `▁`/`Ġ` become spaces), the vocabulary string
/// (e.g. `<0xE2>`) when that gives nothing or only part of a UTF-8 character.
fn display_token(model: &Model, id: u32) -> String {
    match model.tokenizer.decode(&[id]) {
        Ok(s) if !s.is_empty() && !s.contains('\u{FFFD}') => s,
        _ => model.tokenizer.token(id),
    }
}

// ------------------------------------------------------------------------------------------------
// HTML: laid out here, rendered by `report::html` (escaping, stylesheet, page) and
// `report::chart` (the histogram).

/// Writes `render_html(d)` to `path` (atomically).
pub fn write_html(d: &Dashboards, path: &Path) -> Result<()> {
    page(d).write(path)
}

/// The dashboards as one self-contained HTML page.
pub fn render_html(d: &Dashboards) -> String {
    page(d).render()
}

fn page(d: &Dashboards) -> Page {
    let meta = Html::raw(format!(
        "SAE <code>{}</code> at <code>{}</code> · d_in {} · d_sae {} · model <code>{}</code> · {} tokens in {} sequences \
         (BOS, EOS and padding not counted)",
        escape(&d.sae),
        escape(&d.hook),
        d.d_in,
        d.d_sae,
        escape(&d.model),
        d.n_tokens,
        d.n_sequences
    ));
    let mut index = Table::new(&["latent", "density", "max act", "top promoted tokens"]).class("index");
    for l in &d.latents {
        let toks: Vec<String> =
            l.promoted.iter().take(5).map(|e| format!("<code>{}</code>", token_text(&e.token))).collect();
        index.row(vec![
            Html::raw(format!("<a href=\"#latent-{0}\">#{0}</a>", l.latent)),
            Html::text(&percent(l.density)),
            Html::text(&format!("{:.3}", l.max_activation)),
            Html::raw(toks.join(" ")),
        ]);
    }
    let mut page = Page::new(&format!("SAE latent dashboards · {}", d.hook)).meta(meta).table(index);
    for l in &d.latents {
        page = page.section("latent", &format!("latent-{}", l.latent), latent_html(l));
    }
    page.footer(Html::raw(format!(
        "Logit effects: {}. Contexts: ±window tokens around each sequence's peak, at most one per sequence; \
         background ∝ activation / the latent's max; hover a token for its value. Generated by knowlens.",
        escape(&d.logits_method)
    )))
}

fn percent(x: f64) -> String {
    if x == 0.0 {
        "0%".into()
    } else if x < 0.0001 {
        format!("{:.2e}%", x * 100.0)
    } else {
        format!("{:.3}%", x * 100.0)
    }
}

/// One latent's dashboard (density, logit effects, top contexts) as a page section; also used
/// by the discovery report for its top latents.
pub fn latent_html(l: &LatentDashboard) -> Html {
    let mut h = Html::raw(format!(
        "<h2>Latent #{0}</h2><div class=\"stats\">density <b>{1}</b> ({2} tokens) · max activation <b>{3:.3}</b> · \
         mean when active <b>{4:.3}</b></div>",
        l.latent,
        percent(l.density),
        l.n_fired,
        l.max_activation,
        l.mean_activation
    ));
    let mut left = Html::raw("<h3>Activation density</h3>");
    let title = format!("tokens (log scale) · density {}", percent(l.density));
    left.push(figure(
        &log_histogram_svg(&l.histogram.counts, l.histogram.max as f64, "activation", &title, "tokens"),
        "",
    ));
    left.push(Html::raw("<h3>Logit effects</h3>"));
    if l.promoted.is_empty() && l.suppressed.is_empty() {
        left.push(Html::raw("<div class=\"none\">not available for this hook</div>"));
    } else {
        let mut pair = Html::default();
        for (class, title, entries) in
            [("signed pos", "promoted", &l.promoted), ("signed neg", "suppressed", &l.suppressed)]
        {
            let mut t = Table::new(&[]).class(class);
            t.row(vec![Html::raw(format!("<span class=\"none\">{title}</span>"))]);
            for e in entries {
                t.row(vec![Html::token(&e.token, &format!("id {}", e.id)), Html::text(&format!("{:+.3}", e.value))]);
            }
            pair.push(t.to_html());
        }
        left.push(Html::wrap("div", "pair", pair));
    }
    let mut right = Html::raw("<h3>Top activations</h3>");
    if l.examples.is_empty() {
        right.push(Html::raw("<div class=\"none\">never fired on these tokens</div>"));
    }
    let scale = l.max_activation.max(f32::MIN_POSITIVE);
    for ex in &l.examples {
        let mut row = Html::raw(format!(
            "<span class=\"val\" title=\"sequence {} position {}\">{:.3}</span>",
            ex.sequence, ex.position, ex.max_activation
        ));
        row.push(token_strip(ex.tokens.iter().zip(&ex.activations).enumerate().map(|(i, (tok, &a))| StripToken {
            text: tok,
            weight: a / scale,
            peak: i == ex.center,
            tooltip: format!("{tok:?} · id {} · {a:.3}", ex.ids[i]),
        })));
        right.push(Html::wrap("div", "ex", row));
    }
    let mut grid = Html::wrap("div", "", left);
    grid.push(Html::wrap("div", "", right));
    h.push(Html::wrap("div", "grid", grid));
    h
}
