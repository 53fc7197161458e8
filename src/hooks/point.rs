//! Hook point names, spelled exactly as TransformerLens spells them.
//!
//! A `HookPoint` is a place in the forward pass where an activation can be captured or edited.
//! `Display` and `FromStr` convert to and from the TransformerLens strings
//! (`blocks.3.hook_resid_pre`, `blocks.3.attn.hook_pattern`, ...), so scripts, caches on disk
//! and SAE configs all use the names researchers already know.

use std::fmt;
use std::str::FromStr;

/// Where an activation lives. Shapes are given for a batch of `b` rows and `s` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed` [b, s, d]: token embeddings (already multiplied by sqrt(d) for Gemma).
    Embed,
    /// `blocks.{l}.hook_resid_pre` [b, s, d]: the residual stream entering block l.
    ResidPre(usize),
    /// `blocks.{l}.attn.hook_attn_scores` [b, head, query, key]: attention scores before the
    /// softmax, scaled, soft-capped (Gemma 2) and masked (-inf where a key is not visible), as
    /// TransformerLens takes them.
    AttnScores(usize),
    /// `blocks.{l}.attn.hook_pattern` [b, head, query, key]: attention probabilities.
    AttnPattern(usize),
    /// `blocks.{l}.attn.hook_z` [b, s, head, d_head]: per-head attention output before o_proj.
    AttnZ(usize),
    /// `blocks.{l}.hook_attn_out` [b, s, d]: attention output (after Gemma's post-attention norm).
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid` [b, s, d]: resid_pre + attn_out.
    ResidMid(usize),
    /// `blocks.{l}.hook_mlp_out` [b, s, d]: MLP output (after Gemma's post-feed-forward norm).
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post` [b, s, d]: the residual stream leaving block l.
    ResidPost(usize),
    /// `ln_final.hook_normalized` [b, s, d]: the final norm's output, the unembedding's input.
    LnFinal,
}

/// Every per-block hook kind, in the order the forward pass reaches them.
pub const BLOCK_HOOKS: [&str; 8] = [
    "hook_resid_pre",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "hook_mlp_out",
    "hook_resid_post",
];

impl HookPoint {
    /// The block this hook belongs to; `None` for `hook_embed` and `ln_final`.
    pub fn layer(&self) -> Option<usize> {
        match *self {
            HookPoint::Embed | HookPoint::LnFinal => None,
            HookPoint::ResidPre(l)
            | HookPoint::AttnScores(l)
            | HookPoint::AttnPattern(l)
            | HookPoint::AttnZ(l)
            | HookPoint::AttnOut(l)
            | HookPoint::ResidMid(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
        }
    }

    /// How many blocks must run before this hook has been reached.
    /// Used to stop the forward pass early when nothing later is needed.
    pub fn blocks_needed(&self, n_layers: usize) -> usize {
        match *self {
            HookPoint::Embed => 0,
            HookPoint::ResidPre(l) => l,
            HookPoint::LnFinal => n_layers,
            other => other.layer().map(|l| l + 1).unwrap_or(n_layers),
        }
    }

    /// The axis that indexes token positions (the query axis for attention patterns).
    pub fn position_axis(&self) -> usize {
        match self {
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => 2,
            _ => 1,
        }
    }

    /// The axis that indexes attention heads, for hooks that have one.
    pub fn head_axis(&self) -> Option<usize> {
        match self {
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => Some(1),
            HookPoint::AttnZ(_) => Some(2),
            _ => None,
        }
    }

    /// Whether the activation is [b, head, query, key] (scores and patterns): its key axis is
    /// also a position axis.
    pub fn is_attention_map(&self) -> bool {
        matches!(self, HookPoint::AttnScores(_) | HookPoint::AttnPattern(_))
    }

    /// Every hook point of a model with `n_layers` blocks, in forward order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed];
        for l in 0..n_layers {
            v.extend([
                HookPoint::ResidPre(l),
                HookPoint::AttnScores(l),
                HookPoint::AttnPattern(l),
                HookPoint::AttnZ(l),
                HookPoint::AttnOut(l),
                HookPoint::ResidMid(l),
                HookPoint::MlpOut(l),
                HookPoint::ResidPost(l),
            ]);
        }
        v.push(HookPoint::LnFinal);
        v
    }

    /// Checks that the hook exists in a model with `n_layers` blocks.
    pub fn check_layer(&self, n_layers: usize) -> anyhow::Result<()> {
        if let Some(l) = self.layer() {
            if l >= n_layers {
                anyhow::bail!("hook '{self}': the model has {n_layers} blocks (0..={})", n_layers - 1);
            }
        }
        Ok(())
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HookPoint::Embed => write!(f, "hook_embed"),
            HookPoint::LnFinal => write!(f, "ln_final.hook_normalized"),
            HookPoint::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookPoint::AttnScores(l) => write!(f, "blocks.{l}.attn.hook_attn_scores"),
            HookPoint::AttnPattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
            HookPoint::AttnZ(l) => write!(f, "blocks.{l}.attn.hook_z"),
            HookPoint::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookPoint::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            HookPoint::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookPoint::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let unknown = || {
            anyhow::anyhow!(
                "unknown hook point '{s}': expected hook_embed, ln_final.hook_normalized or \
                 blocks.<layer>.<{}>",
                BLOCK_HOOKS.join("|")
            )
        };
        match s {
            "hook_embed" => return Ok(HookPoint::Embed),
            "ln_final.hook_normalized" => return Ok(HookPoint::LnFinal),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, name) = rest.split_once('.').ok_or_else(unknown)?;
        let l: usize = layer.parse().map_err(|_| unknown())?;
        Ok(match name {
            "hook_resid_pre" => HookPoint::ResidPre(l),
            "attn.hook_attn_scores" => HookPoint::AttnScores(l),
            "attn.hook_pattern" => HookPoint::AttnPattern(l),
            "attn.hook_z" => HookPoint::AttnZ(l),
            "hook_attn_out" => HookPoint::AttnOut(l),
            "hook_resid_mid" => HookPoint::ResidMid(l),
            "hook_mlp_out" => HookPoint::MlpOut(l),
            "hook_resid_post" => HookPoint::ResidPost(l),
            _ => return Err(unknown()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_hook_round_trips_through_its_name() {
        for h in HookPoint::all(4) {
            assert_eq!(h.to_string().parse::<HookPoint>().unwrap(), h);
        }
    }

    #[test]
    fn unknown_names_are_rejected_with_the_name() {
        let err = "blocks.3.hook_resid".parse::<HookPoint>().unwrap_err().to_string();
        assert!(err.contains("blocks.3.hook_resid"), "{err}");
        assert!("blocks.x.hook_resid_pre".parse::<HookPoint>().is_err());
        assert!("".parse::<HookPoint>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,40}") {
            let _ = s.parse::<HookPoint>();
        }
    }
}
