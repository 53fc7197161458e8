//! The stages of `knowlens reproduce`, each one knowlens command with its arguments, and the
//! record a finished stage leaves (`OUT/stages/NAME.json`): a rerun skips a stage whose record
//! holds the same arguments, and reruns one whose arguments changed (the commands resume their
//! own partial work: labels, activation stores and SAE training keep what was done).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::Config;

/// An argument that a finished stage's JSON output fills in (`"{corpus}"`: the corpus directory
/// that `knowlens corpus --json` printed).
pub const CORPUS_DIR: &str = "{corpus}";

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: &'static str,
    /// One line for the progress display.
    pub about: &'static str,
    pub args: Vec<String>,
    /// The command prints one JSON object on stdout that later stages read.
    pub json_output: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub args: Vec<String>,
    pub seconds: f64,
    #[serde(default)]
    pub output: Option<serde_json::Value>,
}

impl StageRecord {
    pub fn path(out: &Path, name: &str) -> PathBuf {
        out.join("stages").join(format!("{name}.json"))
    }

    /// The record of a finished stage, if there is one (a damaged record counts as unfinished).
    pub fn read(out: &Path, name: &str) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(out, name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let p = Self::path(out, &self.name);
        std::fs::create_dir_all(p.parent().expect("stages dir"))
            .with_context(|| format!("creating {}", out.join("stages").display()))?;
        crate::fsio::write_atomic(&p, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// `args` with the output directory written as `$OUT`, as stage records keep them: a run's
/// directory can be moved or copied and still resume, since a stage's settings compare equal
/// wherever its outputs now live. Comma-separated lists (`--sae A,B`) are rewritten item by item.
pub fn relative_args(args: &[String], out: &Path) -> Vec<String> {
    let prefix = out.display().to_string();
    let one = |a: &str| match a.strip_prefix(&prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with(std::path::MAIN_SEPARATOR) => format!("$OUT{rest}"),
        _ => a.to_string(),
    };
    args.iter().map(|a| a.split(',').map(one).collect::<Vec<_>>().join(",")).collect()
}

/// Stage-record `args` with `$OUT` written out as `out`: records written before lists were
/// rewritten item by item (only their first item said `$OUT`) compare equal to today's.
pub fn absolute_args(args: &[String], out: &Path) -> Vec<String> {
    let prefix = out.display().to_string();
    let one = |a: &str| match a.strip_prefix("$OUT") {
        Some(rest) => format!("{prefix}{rest}"),
        None => a.to_string(),
    };
    args.iter().map(|a| a.split(',').map(one).collect::<Vec<_>>().join(",")).collect()
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The paper's layer L reads the residual stream entering block L, which knowlens's SAEs train
/// on as `blocks.{L-1}.hook_resid_post` (the same tensor).
pub fn sae_hooks(c: &Config) -> Vec<String> {
    hooks_of(&c.saes.layers)
}

fn hooks_of(layers: &[usize]) -> Vec<String> {
    layers.iter().map(|l| format!("blocks.{}.hook_resid_post", l - 1)).collect()
}

/// The hooks the activation store holds: every layer with an SAE of either width.
pub fn store_hooks(c: &Config) -> Vec<String> {
    let mut layers: Vec<usize> = c.saes.layers.iter().chain(&c.saes.wide_layers).copied().collect();
    layers.sort_unstable();
    layers.dedup();
    hooks_of(&layers)
}

/// Every SAE directory the stages write: the depth sweep, then the wide ones.
pub fn all_sae_dirs(c: &Config, d: &Dirs) -> Vec<PathBuf> {
    let sweep = sae_hooks(c).into_iter().map(|h| d.saes.join(h));
    sweep.chain(hooks_of(&c.saes.wide_layers).into_iter().map(|h| d.saes_wide.join(h))).collect()
}

/// Output directories of the stages, under `out`.
pub struct Dirs {
    pub labels_base: PathBuf,
    pub labels_chat: PathBuf,
    pub store: PathBuf,
    pub saes: PathBuf,
    pub saes_wide: PathBuf,
    pub discover_base: PathBuf,
    pub discover_chat: PathBuf,
    pub steer: PathBuf,
    pub steer_base: PathBuf,
    pub attention: PathBuf,
    pub patch: PathBuf,
    pub uncertainty: PathBuf,
}

impl Dirs {
    pub fn new(out: &Path, c: &Config) -> Self {
        Self {
            labels_base: out.join("labels-base").join(&c.base.label_mode),
            labels_chat: out.join("labels-chat").join("greedy"),
            store: out.join("store"),
            saes: out.join("saes"),
            saes_wide: out.join("saes-wide"),
            discover_base: out.join("discover-base"),
            discover_chat: out.join("discover-chat"),
            steer: out.join("steer"),
            steer_base: out.join("steer-base"),
            attention: out.join("attention"),
            patch: out.join("patch"),
            uncertainty: out.join("uncertainty"),
        }
    }
}

pub fn stages(c: &Config, out: &Path) -> Vec<Stage> {
    let d = Dirs::new(out, c);
    let lr_args = |lr: Option<f64>| lr.map(|lr| vec![s("--lr"), s(lr)]).unwrap_or_default();
    let hooks = sae_hooks(c).join(",");
    let sae_dirs: Vec<String> = sae_hooks(c).iter().map(|h| p(&d.saes.join(h))).collect();
    let types = if c.chat.types.is_empty() { Vec::new() } else { vec![s("--types"), c.chat.types.join(",")] };
    let per_type = |n: usize| if n == 0 { Vec::new() } else { vec![s("--per-type"), s(n)] };
    let mut v = vec![
        Stage {
            name: "fetch-base",
            about: "fetch the base model",
            args: vec![s("fetch"), s("--model"), c.base.model.clone()],
            json_output: false,
        },
        Stage {
            name: "fetch-chat",
            about: "fetch the chat model",
            args: vec![s("fetch"), s("--model"), c.chat.model.clone()],
            json_output: false,
        },
    ];
    let mut label = vec![
        s("label"),
        s("--model"),
        c.base.model.clone(),
        s("--mode"),
        c.base.label_mode.clone(),
        s("--known-min"),
        s(c.base.known_min),
        s("--out"),
        p(&out.join("labels-base")),
    ];
    label.extend(per_type(c.base.per_type));
    if !c.base.types.is_empty() {
        label.extend([s("--types"), c.base.types.join(",")]);
    }
    if !c.base.per_type_of.is_empty() {
        let of: Vec<String> = c.base.per_type_of.iter().map(|(t, n)| format!("{t}={n}")).collect();
        label.extend([s("--per-type-of"), of.join(",")]);
    }
    v.push(Stage {
        name: "label-base",
        about: "label entities known / unknown (base model)",
        args: label,
        json_output: false,
    });
    v.push(Stage {
        name: "corpus",
        about: "build the SAE corpus without validation or test entities",
        args: vec![
            s("corpus"),
            s("--model"),
            c.base.model.clone(),
            // Sentences about the entities are part of the corpus; those of the base labels'
            // validation and test splits are left out (no held-out entity is seen in training).
            s("--entities"),
            s("data/entities/v2/player.jsonl"),
            s("data/entities/v2/movie.jsonl"),
            s("data/entities/v2/city.jsonl"),
            s("data/entities/v2/song.jsonl"),
            s("--exclude-splits"),
            p(&d.labels_base.join("splits.json")),
            s("--json"),
        ],
        json_output: true,
    });
    v.push(Stage {
        name: "sae-cache",
        about: "store the residual stream's activations",
        args: vec![
            s("sae"),
            s("cache"),
            s("--model"),
            c.base.model.clone(),
            s("--hooks"),
            store_hooks(c).join(","),
            s("--corpus"),
            s(CORPUS_DIR),
            s("--tokens"),
            s(c.saes.tokens),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.store),
        ],
        json_output: false,
    });
    // Both widths train from the same store with the same recipe; only hooks, size and output differ.
    let train = |hooks: String, epochs: usize, k: usize, width: usize, lr: Option<f64>, out: &Path| -> Vec<String> {
        let mut args = vec![
            s("sae"),
            s("train"),
            s("--model"),
            c.base.model.clone(),
            s("--hooks"),
            hooks,
            s("--store"),
            p(&d.store),
            s("--epochs"),
            s(epochs),
            s("--arch"),
            c.saes.arch.clone(),
            s("--k"),
            s(k),
            s("--width"),
            s(width),
            s("--per-dim-scale"),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(out),
        ];
        args.extend(lr_args(lr));
        if let Some(b) = c.saes.batch_size {
            args.extend([s("--batch-size"), s(b)]);
        }
        args
    };
    v.push(Stage {
        name: "sae-train",
        about: "train the SAEs from the store",
        args: train(hooks, c.saes.epochs, c.saes.k, c.saes.width, c.saes.lr, &d.saes),
        json_output: false,
    });
    if !c.saes.wide_layers.is_empty() {
        v.push(Stage {
            name: "sae-train-wide",
            about: "train the wide SAEs from the same store",
            args: train(
                hooks_of(&c.saes.wide_layers).join(","),
                c.saes.wide_epochs.unwrap_or(c.saes.epochs),
                c.saes.wide_k.unwrap_or(c.saes.k),
                c.saes.wide_width,
                c.saes.wide_lr.or(c.saes.lr),
                &d.saes_wide,
            ),
            json_output: false,
        });
    }
    if c.saes.eval_tokens > 0 {
        let dirs: Vec<String> = all_sae_dirs(c, &d).iter().map(|x| p(x)).collect();
        let mut args = vec![
            s("sae"),
            s("eval"),
            s("--model"),
            c.base.model.clone(),
            s("--sae"),
            dirs.join(","),
            s("--corpus"),
            s(CORPUS_DIR),
            s("--tokens"),
            s(c.saes.eval_tokens),
            s("--mean-ablation"),
            s("--out"),
            p(&d.saes.join("eval.json")),
            s("--table"),
            p(&d.saes.join("eval.md")),
        ];
        if c.saes.eval_downstream_tokens > 0 {
            args.extend([s("--downstream-tokens"), s(c.saes.eval_downstream_tokens)]);
        }
        if c.saes.eval_ablation_tokens > 0 {
            args.extend([s("--ablation-tokens"), s(c.saes.eval_ablation_tokens)]);
        }
        v.push(Stage {
            name: "sae-eval",
            about: "evaluate every SAE on held-out corpus text (one table)",
            args,
            json_output: false,
        });
    }
    v.push(Stage {
        name: "discover-base",
        about: "find the entity-recognition latents (base model)",
        args: vec![
            s("discover"),
            s("--model"),
            c.base.model.clone(),
            s("--labels"),
            p(&d.labels_base),
            s("--sae"),
            sae_dirs.join(","),
            s("--corpus"),
            s(CORPUS_DIR),
            s("--corpus-tokens"),
            s(c.discover.corpus_tokens),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.discover_base),
        ],
        json_output: false,
    });
    // The paper's §6 on the base model's own greedy answers (a committed label set: the
    // estimate-mode labels above hold likelihoods, not answers). Without one, the stage is left
    // out and its claim says why.
    let greedy = c.uncertainty_labels();
    if Path::new(&greedy).is_dir() {
        let args = vec![
            s("uncertainty"),
            s("--model"),
            c.base.model.clone(),
            s("--labels"),
            greedy,
            s("--sae"),
            sae_dirs.join(","),
            s("--corpus"),
            s(CORPUS_DIR),
            s("--per-type"),
            s(c.uncertainty.per_type),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.uncertainty),
        ];
        v.push(Stage {
            name: "uncertainty",
            about: "latents that tell in advance the answer will be wrong (base model, §6)",
            args,
            json_output: false,
        });
    }
    v.push(Stage {
        name: "attention",
        about: "attention from the final token to the entity, and under steering (base model)",
        args: vec![
            s("attention"),
            s("--model"),
            c.base.model.clone(),
            s("--labels"),
            p(&d.labels_base),
            s("--detectors"),
            p(&d.discover_base.join("detectors.json")),
            // The head is chosen on train and validation entities and tested on test ones:
            // enough of each class per type in every split.
            s("--per-type"),
            s(100),
            s("--coef"),
            s("0.05,0.1,0.25"),
            s("--random"),
            s(c.steer.gaussian + c.steer.random_latents),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.attention),
        ],
        json_output: false,
    });
    v.push(Stage {
        name: "patch",
        about: "activation patching from known into unknown prompts (base model)",
        args: vec![
            s("patch"),
            s("--model"),
            c.base.model.clone(),
            s("--labels"),
            p(&d.labels_base),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.patch),
        ],
        json_output: false,
    });
    // The paper's refusal experiment on the base model (issue item 2): a few-shot preamble with
    // "I don't know" answers makes declining possible; directions from the base discovery.
    let coefs: Vec<String> = c.steer.coefs.iter().map(|x| x.to_string()).collect();
    let base_coefs: Vec<String> = if c.base.steer_coefs.is_empty() {
        coefs.clone()
    } else {
        c.base.steer_coefs.iter().map(|x| x.to_string()).collect()
    };
    let base_types =
        if c.base.steer_types.is_empty() { Vec::new() } else { vec![s("--types"), c.base.steer_types.join(",")] };
    v.push(Stage {
        name: "steer-base",
        about: "steer refusals through a few-shot prompt (base model)",
        args: vec![
            s("steer"),
            s("--model"),
            c.base.model.clone(),
            s("--prompt"),
            s("few_shot"),
            s("--labels"),
            p(&d.labels_base),
            s("--detectors"),
            p(&d.discover_base.join("detectors.json")),
            s("--per-type"),
            s(c.steer.per_type),
            s("--select-per-type"),
            s(c.steer.select_per_type.unwrap_or(c.steer.per_type)),
            s("--coefs"),
            base_coefs.join(","),
            s("--gaussian"),
            s(c.steer.gaussian),
            s("--random-latents"),
            s(c.steer.random_latents),
            s("--max-tokens"),
            s(16),
            // The paper's third intervention on the base model too: the unknown direction
            // projected out of the weights.
            s("--orthogonalize"),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.steer_base),
        ]
        .into_iter()
        .chain(base_types)
        .collect(),
        json_output: false,
    });
    let mut label_chat = vec![
        s("label"),
        s("--model"),
        c.chat.model.clone(),
        s("--chat"),
        s("--mode"),
        s("greedy"),
        s("--attributes"),
        s("counting"),
        s("--known-min"),
        s(c.chat.known_min),
        s("--out"),
        p(&out.join("labels-chat")),
    ];
    label_chat.extend(per_type(c.chat.per_type));
    // Only the types the chat experiments use: labelling the others costs as much and is never read.
    label_chat.extend(types.clone());
    v.push(Stage {
        name: "label-chat",
        about: "label entities from the chat model's own answers",
        args: label_chat,
        json_output: false,
    });
    v.push(Stage {
        name: "discover-chat",
        about: "probe and difference-of-means directions (chat model)",
        args: vec![
            s("discover"),
            s("--model"),
            c.chat.model.clone(),
            s("--labels"),
            p(&d.labels_chat),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.discover_chat),
        ]
        .into_iter()
        .chain(types.clone())
        .collect(),
        json_output: false,
    });
    v.push(Stage {
        name: "steer",
        about: "steer refusals and the yes/no answer (chat model)",
        args: vec![
            s("steer"),
            s("--model"),
            c.chat.model.clone(),
            s("--labels"),
            p(&d.labels_chat),
            s("--detectors"),
            p(&d.discover_chat.join("detectors.json")),
            s("--per-type"),
            s(c.steer.per_type),
            s("--select-per-type"),
            s(c.steer.select_per_type.unwrap_or(c.steer.per_type)),
            s("--coefs"),
            coefs.join(","),
            s("--gaussian"),
            s(c.steer.gaussian),
            s("--random-latents"),
            s(c.steer.random_latents),
            s("--orthogonalize"),
            s("--seed"),
            s(c.seed),
            s("--out"),
            p(&d.steer),
        ]
        .into_iter()
        .chain(types)
        .collect(),
        json_output: false,
    });
    v
}

/// `args` with the placeholders filled from finished stages' outputs.
pub fn resolve(args: &[String], out: &Path) -> Result<Vec<String>> {
    args.iter()
        .map(|a| {
            if a == CORPUS_DIR {
                let rec = StageRecord::read(out, "corpus").context("the corpus stage has not finished")?;
                let dir = rec
                    .output
                    .as_ref()
                    .and_then(|o| o.get("dir"))
                    .and_then(|d| d.as_str())
                    .context("the corpus stage's record names no directory")?;
                Ok(dir.to_string())
            } else {
                Ok(a.clone())
            }
        })
        .collect()
}
