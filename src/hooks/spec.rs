//! What a caller asks of one forward pass: which activations to keep, which to edit, and where
//! logits are wanted. A `HookSpec` is a plain value passed into `forward`; the model holds no hook
//! state, so nothing leaks from one run into the next (TransformerLens's "main footgun").

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use super::HookPoint;
pub use crate::batch::Positions;

/// An edit computed from the activation itself, for what the built-in interventions cannot say
/// (e.g. clamping one SAE latent: `sae::LatentEdit`). `edit` receives the whole activation
/// ([b, s, ...]) and returns a tensor of the same shape; only the selected positions (and head)
/// of the result are kept.
pub trait ActivationEdit: Send + Sync {
    fn edit(&self, x: &Tensor) -> anyhow::Result<Tensor>;
    /// A short description for errors and logs.
    fn describe(&self) -> String;
}

/// An edit of one activation at the selected positions.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// `x + scale * vector`; `vector` has the activation's trailing shape (e.g. [d_model]).
    Add { vector: Tensor, scale: f64 },
    /// Replace by `value`: either the whole activation's shape (patching from another run's
    /// cache of the same batch) or its trailing shape (the same value at every position).
    Replace(Tensor),
    /// Zero ablation.
    Zero,
    /// Multiply by a constant.
    Scale(f64),
    /// Remove the component along `direction` (normalised here): `x - (x·d̂) d̂`.
    ProjectOut(Tensor),
    /// Attention knockout, at `blocks.l.attn.hook_attn_scores` only: the selected queries may
    /// not attend to these key positions (their scores become -inf before the softmax, so the
    /// rest renormalises). Key positions count within each row's own tokens, like `Positions`.
    MaskKeys(Positions),
    /// Any edit computed from the activation (see `ActivationEdit`).
    Custom(Arc<dyn ActivationEdit>),
}

impl fmt::Debug for dyn ActivationEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActivationEdit({})", self.describe())
    }
}

/// One intervention at one hook point and some positions (and, at per-head hooks, one head).
#[derive(Debug, Clone)]
pub struct Edit {
    pub hook: HookPoint,
    pub positions: Positions,
    /// Only this head, at hooks with a head axis (`attn.hook_z`, `attn.hook_pattern`,
    /// `attn.hook_attn_scores`); `None` edits every head.
    pub head: Option<usize>,
    pub op: Intervention,
}

/// Where to compute logits. The unembedding is the most expensive matmul of a small model
/// with a large vocabulary, so it runs only at the positions asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LogitsAt {
    /// No logits: the forward pass stops after the deepest captured or edited hook.
    #[default]
    None,
    /// The last token of each row: [b, vocab].
    Last,
    /// Every position: [b, s, vocab].
    All,
    /// Chosen positions (e.g. the entity's last token), the same number k in every row:
    /// [b, k, vocab], in the order given.
    At(Positions),
    /// Only the index of the largest logit at the last token of each row, in
    /// `ForwardOutput::greedy`: greedy decoding's next token, picked inside the packed
    /// unembedding kernel without writing the [b, vocab] logits (see `model/unembed.rs`).
    GreedyLast,
}

/// Everything a forward pass should capture, edit and return.
#[derive(Debug, Clone, Default)]
pub struct HookSpec {
    pub capture: BTreeSet<HookPoint>,
    pub edits: Vec<Edit>,
    pub logits: LogitsAt,
}

impl HookSpec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Capture these hook points.
    pub fn capture<I: IntoIterator<Item = HookPoint>>(mut self, hooks: I) -> Self {
        self.capture.extend(hooks);
        self
    }

    pub fn edit(mut self, hook: HookPoint, positions: Positions, op: Intervention) -> Self {
        self.edits.push(Edit { hook, positions, head: None, op });
        self
    }

    /// An edit of one head only, at a hook with a head axis: per-head patching
    /// (`Replace` at `attn.hook_z`), head ablation (`Zero` / `Scale`), knockout of one head's
    /// attention (`MaskKeys` at `attn.hook_attn_scores`).
    pub fn edit_head(mut self, hook: HookPoint, head: usize, positions: Positions, op: Intervention) -> Self {
        self.edits.push(Edit { hook, positions, head: Some(head), op });
        self
    }

    pub fn logits(mut self, at: LogitsAt) -> Self {
        self.logits = at;
        self
    }

    /// The number of blocks that must run: everything up to the deepest hook used, or the
    /// whole model when logits are wanted.
    pub fn blocks_needed(&self, n_layers: usize) -> usize {
        if self.logits != LogitsAt::None {
            return n_layers;
        }
        self.capture
            .iter()
            .chain(self.edits.iter().map(|e| &e.hook))
            .map(|h| h.blocks_needed(n_layers))
            .max()
            .unwrap_or(0)
    }

    /// Whether the final norm must run.
    pub fn needs_final_norm(&self) -> bool {
        self.logits != LogitsAt::None
            || self.capture.contains(&HookPoint::LnFinal)
            || self.edits.iter().any(|e| e.hook == HookPoint::LnFinal)
    }

    /// Checks hooks against the model's depth and head count, and each edit against its hook.
    pub fn check(&self, n_layers: usize, n_heads: usize) -> anyhow::Result<()> {
        for h in self.capture.iter().chain(self.edits.iter().map(|e| &e.hook)) {
            h.check_layer(n_layers)?;
        }
        for e in &self.edits {
            if let Some(head) = e.head {
                if e.hook.head_axis().is_none() {
                    anyhow::bail!("edit of head {head} at {}: this hook has no head axis (use attn.hook_z, attn.hook_pattern or attn.hook_attn_scores)", e.hook);
                }
                if head >= n_heads {
                    anyhow::bail!(
                        "edit of head {head} at {}: the model has {n_heads} heads (0..={})",
                        e.hook,
                        n_heads - 1
                    );
                }
            }
            if matches!(e.op, Intervention::MaskKeys(_)) && !matches!(e.hook, HookPoint::AttnScores(_)) {
                anyhow::bail!(
                    "MaskKeys at {}: attention knockout applies at blocks.<l>.attn.hook_attn_scores only",
                    e.hook
                );
            }
        }
        Ok(())
    }
}
