//! What a caller asks of one forward pass: which activations to keep, which to edit, and where
//! logits are wanted. A `HookSpec` is a plain value passed into `forward`; the model holds no hook
//! state, so nothing leaks from one run into the next (TransformerLens's "main footgun").

use std::collections::BTreeSet;

use candle_core::Tensor;

use super::HookPoint;

/// Token positions, counted within each row's own tokens (0 is the row's first token, usually
/// BOS), whatever left padding the batch added. Negative values count from the row's end:
/// -1 is the last token.
#[derive(Debug, Clone, PartialEq)]
pub enum Positions {
    /// Every position of every row (padding included; padding is ignored by later layers).
    All,
    /// The last token of each row.
    Last,
    /// The same positions in every row.
    Each(Vec<i64>),
    /// Positions chosen per row, e.g. the last token of the entity name in each prompt.
    Rows(Vec<Vec<i64>>),
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
}

/// One intervention at one hook point and some positions.
#[derive(Debug, Clone)]
pub struct Edit {
    pub hook: HookPoint,
    pub positions: Positions,
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
        self.edits.push(Edit { hook, positions, op });
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

    pub fn check(&self, n_layers: usize) -> anyhow::Result<()> {
        for h in self.capture.iter().chain(self.edits.iter().map(|e| &e.hook)) {
            h.check_layer(n_layers)?;
        }
        Ok(())
    }
}
