//! The labeling run: choose templates, ask every question (resumably), then write labels,
//! splits, controls and the summary.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::chance;
pub use super::config::{mode_dir, RunConfig, TemplateChoice};
use super::dataset::Entity;
use super::decide::{self, EntityLabel};
use super::label::{self, answer, LabelOptions, Mode, QuestionRecord, TemplateTable};
use super::matching::Outcome;
use super::questions::{self, EntityType};
use super::record_log::RecordStore;
use super::rule::{self, Guessable};
use super::summary;
use crate::model::Model;
use crate::progress::Progress;

/// What one attribute's templates scored on the development sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateScore {
    pub chosen: usize,
    pub templates: Vec<String>,
    pub correct: Vec<usize>,
    /// Greedy answers that repeat the entity's name (all its words), per template.
    #[serde(default)]
    pub echoes: Vec<usize>,
    pub asked: usize,
}

/// Whether an answer consists of the entity's name words (and function words) only.
pub fn echoes_name(answer: &str, name: &str) -> bool {
    use super::matching::{is_fragment_word, thefuzz_process};
    let own: Vec<String> = thefuzz_process(name).split_whitespace().map(str::to_string).collect();
    let a: Vec<String> = thefuzz_process(answer).split_whitespace().map(str::to_string).collect();
    a.iter().any(|w| own.contains(w)) && a.iter().all(|w| own.contains(w) || is_fragment_word(w))
}

pub struct RunOutcome {
    pub labels: Vec<EntityLabel>,
    pub asked_now: usize,
    pub already_done: usize,
    pub seconds: f64,
}

/// Picks (or reloads) the base template of every attribute.
pub fn choose_templates(
    model: &Model,
    entities: &[Entity],
    cfg: &RunConfig,
    progress: &dyn Progress,
) -> Result<TemplateTable> {
    if cfg.opts.chat {
        return Ok(TemplateTable::new());
    }
    let path = cfg.out.join("templates.json");
    // Templates already chosen (by an earlier run into the same directory) are kept; only the
    // attributes this run asks about and that have none yet are chosen now.
    let mut scores: BTreeMap<String, TemplateScore> = if path.exists() {
        serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("reading {}", path.display()))?
    } else {
        BTreeMap::new()
    };
    let before = scores.len();
    let guessable = cfg.guessable.clone().unwrap_or_else(|| Guessable::from_entities(entities));
    for t in EntityType::ALL {
        let mut of_type: Vec<&Entity> = entities.iter().filter(|e| e.entity_type == t).collect();
        of_type.sort_by_key(|e| (e.popularity_rank.unwrap_or(u64::MAX), e.id.clone()));
        for spec in questions::attributes_of(t) {
            let key = label::template_key(t, spec.name);
            if scores.contains_key(&key)
                || (cfg.attribute_set() == rule::AttributeSet::Counting && !rule::counts(t, spec.name))
            {
                continue;
            }
            // The most popular entities that have this attribute (the most popular songs, from
            // Billboard, have no album).
            let asked: Vec<&Entity> = of_type
                .iter()
                .copied()
                .filter(|e| !rule::usable_gold(e, spec, &guessable).is_empty())
                .take(cfg.dev_size)
                .collect();
            if cfg.templates == TemplateChoice::Paper || spec.base.len() == 1 || asked.is_empty() {
                scores.insert(
                    key,
                    TemplateScore {
                        chosen: 0,
                        templates: spec.base.iter().map(|s| s.to_string()).collect(),
                        correct: vec![],
                        echoes: vec![],
                        asked: 0,
                    },
                );
                continue;
            }
            let mut correct = Vec::new();
            let mut echoes = Vec::new();
            for ti in 0..spec.base.len() {
                let mut qs =
                    asked.iter().map(|e| label::question(model, e, spec, ti, false)).collect::<Result<Vec<_>>>()?;
                for q in qs.iter_mut() {
                    q.gold = rule::usable_gold(q.entity, spec, &guessable);
                }
                // Judged by the run's own rule in estimate mode (a template whose greedy answer is
                // right can still spread its probability over many phrasings, and the estimate
                // decides "known"); by the greedy answer in the other modes.
                let dev_mode = if cfg.opts.mode == Mode::Estimate { Mode::Estimate } else { Mode::Greedy };
                let dev = LabelOptions { mode: dev_mode, ..cfg.opts.clone() };
                let refs: Vec<&label::Question> = qs.iter().collect();
                let recs = answer(model, &refs, &dev)?;
                correct.push(recs.iter().filter(|r| r.correct).count());
                // An answer that repeats the entity's name, right or wrong.
                echoes.push(
                    recs.iter()
                        .zip(&qs)
                        .filter(|(r, q)| {
                            r.greedy
                                .as_ref()
                                .is_some_and(|g| g.outcome == Outcome::Echo || echoes_name(&g.text, &q.entity.name))
                        })
                        .count(),
                );
            }
            // Most correct answers; among those, fewest echoes of the entity's name; ties go to
            // the earlier template (the paper's first).
            let better =
                |i: usize, b: usize| correct[i] > correct[b] || (correct[i] == correct[b] && echoes[i] < echoes[b]);
            let chosen = (0..correct.len()).fold(0, |best, i| if better(i, best) { i } else { best });
            progress.log(&format!(
                "template {key}: {correct:?} of {} correct, {echoes:?} echoes → #{chosen} {:?}",
                asked.len(),
                spec.base[chosen]
            ));
            scores.insert(
                key,
                TemplateScore {
                    chosen,
                    templates: spec.base.iter().map(|s| s.to_string()).collect(),
                    correct,
                    echoes,
                    asked: asked.len(),
                },
            );
        }
    }
    if scores.len() != before {
        crate::fsio::write_atomic(&path, &serde_json::to_vec_pretty(&scores)?)?;
    }
    Ok(scores.into_iter().map(|(k, s)| (k, s.chosen)).collect())
}

/// Runs (or resumes) labeling and writes every output. `progress` sees one stage, the questions
/// still to ask.
pub fn run(
    model: &Model,
    entities: &[Entity],
    fabricated: &[Entity],
    cfg: &RunConfig,
    progress: &dyn Progress,
) -> Result<RunOutcome> {
    cfg.validate()?;
    let dir = mode_dir(&cfg.out, cfg.opts.mode);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let templates = choose_templates(model, entities, cfg, progress)?;
    let guessable = cfg.guessable.clone().unwrap_or_else(|| Guessable::from_entities(entities));
    crate::fsio::write_atomic(&dir.join("guessable.json"), &serde_json::to_vec_pretty(&guessable)?)?;
    let set = cfg.attribute_set();
    let questions = label::questions_with(model, entities, &templates, cfg.opts.chat, set, &guessable)?;

    let (mut store, mut records) = RecordStore::open::<QuestionRecord>(&dir.join("completions.jsonl"))?;
    let done: HashSet<String> = records.iter().map(|r| label::question_key(&r.entity_id, &r.attribute)).collect();
    let mut todo: Vec<&label::Question> = questions.iter().filter(|q| !done.contains(&q.key())).collect();
    let already_done = questions.len() - todo.len();
    let batches = label::answer_batches(&mut todo, cfg.opts.batch_size);
    progress.log(&format!(
        "labeling {} entities ({} questions, {} already answered, {} to ask) in {} mode → {}",
        entities.len(),
        questions.len(),
        already_done,
        todo.len(),
        cfg.opts.mode.as_str(),
        dir.display()
    ));
    let start = std::time::Instant::now();
    progress.start("questions", Some(todo.len() as u64));
    let mut correct = 0usize;
    for range in batches {
        let (n, j) = (range.len(), range.end);
        let recs = answer(model, &todo[range], &cfg.opts)?;
        store.append(&recs)?;
        correct += recs.iter().filter(|r| r.correct).count();
        records.extend(recs);
        progress.advance(n as u64);
        progress.message(&format!("{:.1}% correct", 100.0 * correct as f64 / (j.max(1)) as f64));
    }
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();

    let rules = decide::Rules { known_min: cfg.known_min, opts: &cfg.opts, attributes: set, guessable: &guessable };
    let (mut labels, incomplete) = decide::label_entities(entities, &records, &rules);
    if incomplete > 0 {
        progress.log(&format!("{incomplete} entities lack answers (records for questions no longer asked?)"));
    }
    let duplicates = decide::dedupe(&mut labels);
    write_jsonl(&dir.join("labels.jsonl"), &labels)?;
    let splits = decide::split(&labels, cfg.split_seed);
    std::fs::write(dir.join("splits.json"), serde_json::to_vec_pretty(&splits)?)?;
    let controls = decide::controls(&model.tokenizer, &labels, &splits, fabricated, cfg.split_seed)?;
    std::fs::write(dir.join("controls.json"), serde_json::to_vec_pretty(&controls)?)?;
    let chance = chance::chance_rates(entities, &labels, &guessable, cfg.split_seed);
    if !chance.is_empty() {
        chance::write(&dir, &chance)?;
    }
    summary::write(&dir, &labels, cfg, &splits, &controls, &chance, duplicates, seconds, todo.len())?;
    summary::compare_modes(&cfg.out)?;
    Ok(RunOutcome { labels, asked_now: todo.len(), already_done, seconds })
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    // Written whole and renamed, so a reader never sees half a file.
    crate::fsio::write_atomic(path, &buf)?;
    Ok(())
}

/// Evenly spaced entities over each type's popularity order, `n` per type: a subset that keeps
/// the whole range from famous to obscure.
pub fn spread_subset(entities: &[Entity], n: usize) -> Vec<Entity> {
    spread_subset_by(entities, |_| n)
}

/// `spread_subset` with a count per type (`n_of(type)`).
pub fn spread_subset_by(entities: &[Entity], n_of: impl Fn(EntityType) -> usize) -> Vec<Entity> {
    let mut out = Vec::new();
    for t in EntityType::ALL {
        let n = n_of(t);
        let mut of: Vec<&Entity> = entities.iter().filter(|e| e.entity_type == t).collect();
        of.sort_by_key(|e| (e.popularity_rank.unwrap_or(u64::MAX), e.id.clone()));
        if of.len() <= n {
            out.extend(of.into_iter().cloned());
            continue;
        }
        let step = of.len() as f64 / n as f64;
        out.extend((0..n).map(|i| of[(i as f64 * step) as usize].clone()));
    }
    out
}
