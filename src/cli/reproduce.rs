//! `knowlens reproduce`: runs the pipeline's stages as child knowlens processes (each resumes its
//! own partial work), skipping the stages whose record says they finished with the same
//! arguments, then writes the claims page.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::reproduce::plan::{self, Dirs, StageRecord};
use knowlens::reproduce::{claims, report, Config};

#[derive(Args)]
pub struct ReproduceArgs {
    /// A TOML config (see src/reproduce/quick.toml); overrides --quick / --full.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Small samples, about half an hour on 2 cores with nothing cached (the default).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The whole dataset and SAEs at every third layer.
    #[arg(long)]
    full: bool,
    /// Where every stage writes; rerunning continues from the finished stages.
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    /// Print the stages and their commands, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rerun these stages (comma-separated names) even if finished.
    #[arg(long, value_delimiter = ',')]
    redo: Vec<String>,
    /// Stop after this stage (e.g. `sae-eval`: the SAE suite only, store, training and
    /// evaluation); the claims page is written only by a run that goes to the end.
    #[arg(long)]
    until: Option<String>,
}

pub fn run(a: ReproduceArgs) -> Result<()> {
    let (config, preset) = match &a.config {
        Some(p) => (Config::load(p)?, p.display().to_string()),
        None if a.full => (Config::preset("full")?, "full".to_string()),
        None => (Config::preset("quick")?, "quick".to_string()),
    };
    let out = &a.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The config a run was started with stays with it.
    knowlens::fsio::write_atomic(&out.join("config.toml"), toml::to_string(&config)?.as_bytes())?;
    let stages = plan::stages(&config, out);
    if let Some(bad) = a.redo.iter().find(|r| !stages.iter().any(|s| s.name == r.as_str())) {
        let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
        bail!("--redo {bad:?}: no such stage (stages: {})", names.join(", "));
    }
    if let Some(u) = &a.until {
        if !stages.iter().any(|s| s.name == u.as_str()) {
            let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
            bail!("--until {u:?}: no such stage in this config (stages: {})", names.join(", "));
        }
    }
    // Every stage runs the same executable as this process, even if a rebuild replaced the file
    // meanwhile: on Linux /proc/self/exe still opens the running binary.
    let proc_exe = PathBuf::from("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe
    } else {
        std::env::current_exe().context("locating the knowlens executable")?
    };
    let t_all = Instant::now();
    for (i, stage) in stages.iter().enumerate() {
        let head = format!("[{}/{}] {}", i + 1, stages.len(), stage.name);
        if a.dry_run {
            println!("{head}: knowlens {}", stage.args.join(" "));
            continue;
        }
        let args = plan::resolve(&stage.args, out).with_context(|| format!("stage {}", stage.name))?;
        let recorded = plan::relative_args(&args, out);
        if let Some(rec) = StageRecord::read(out, stage.name) {
            let same = rec.args == recorded || plan::absolute_args(&rec.args, out) == args;
            if same && !a.redo.iter().any(|r| r == stage.name) {
                eprintln!("{head}: done earlier ({:.0} s), skipped", rec.seconds);
                if a.until.as_deref() == Some(stage.name) {
                    eprintln!("stopped after stage {} (--until)", stage.name);
                    return Ok(());
                }
                continue;
            }
            eprintln!("{head}: its settings changed since it last finished; running it again");
        }
        eprintln!("{head}: {} — knowlens {}", stage.about, args.join(" "));
        let t0 = Instant::now();
        let mut cmd = Command::new(&exe);
        cmd.args(&args).stdin(Stdio::null()).stderr(Stdio::inherit());
        cmd.stdout(if stage.json_output { Stdio::piped() } else { Stdio::inherit() });
        let child = cmd.spawn().with_context(|| format!("starting stage {}", stage.name))?;
        let output = child.wait_with_output().with_context(|| format!("waiting for stage {}", stage.name))?;
        if !output.status.success() {
            bail!(
                "stage {} failed ({}); fix the cause and rerun the same command: finished stages are kept",
                stage.name,
                output.status
            );
        }
        let json = if stage.json_output {
            let text = String::from_utf8_lossy(&output.stdout);
            std::io::stdout().write_all(text.as_bytes()).ok();
            let last = text.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
            Some(
                serde_json::from_str(last)
                    .with_context(|| format!("stage {}: its JSON output does not parse", stage.name))?,
            )
        } else {
            None
        };
        let seconds = t0.elapsed().as_secs_f64();
        StageRecord { name: stage.name.to_string(), args: recorded, seconds, output: json }.write(out)?;
        eprintln!("{head}: finished in {seconds:.0} s (pipeline {:.0} s so far)", t_all.elapsed().as_secs_f64());
        if a.until.as_deref() == Some(stage.name) {
            eprintln!("stopped after stage {} (--until); rerun without --until to continue", stage.name);
            return Ok(());
        }
    }
    if a.dry_run || a.until.is_some() {
        return Ok(());
    }
    let dirs = Dirs::new(out, &config);
    let claims = claims::all(&dirs)?;
    let info = run_info(&config, &format!("knowlens reproduce ({preset})"));
    report::write(out, &dirs, &stages, &claims, &info)?;
    for c in &claims {
        println!("{:<24} {:<18} {}", c.id, c.verdict.as_str(), c.evidence);
    }
    println!("wrote {}", out.join("report.html").display());
    Ok(())
}

/// The models (file and pinned sha256 when they are presets), the SAEs, today's date and the
/// commit the binary runs from (`git` in the working directory; "unknown" outside a checkout).
fn run_info(config: &knowlens::reproduce::Config, title: &str) -> report::RunInfo {
    let model = |role: &str, name: &str| match knowlens::fetch::preset(name) {
        Some(p) => (role.to_string(), name.to_string(), p.file_name.to_string(), p.sha256.to_string()),
        None => (role.to_string(), name.to_string(), name.to_string(), "not pinned".to_string()),
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match (git(&["rev-parse", "--short", "HEAD"]), git(&["status", "--porcelain", "--untracked-files=no"]))
    {
        (Some(c), Some(d)) if !d.is_empty() => format!("{c} (with uncommitted changes)"),
        (Some(c), _) => c,
        _ => "commit unknown".into(),
    };
    let date =
        git(&["log", "-1", "--format=%cs"]).map_or_else(|| "date unknown".into(), |d| format!("commit date {d}"));
    report::RunInfo {
        title: title.to_string(),
        models: vec![model("base", &config.base.model), model("chat", &config.chat.model)],
        saes: format!(
            "trained here ({} k {} width {} at layers {:?}, {} tokens)",
            config.saes.arch, config.saes.k, config.saes.width, config.saes.layers, config.saes.tokens
        ),
        date,
        commit,
    }
}
