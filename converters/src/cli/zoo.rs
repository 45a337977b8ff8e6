//! `mote zoo`: train, export and report the model zoo.

use crate::emit::dtypes::QuantMode;
use crate::family::{self, GptFigures};
use crate::report::bytes;
use crate::zoo::{self, GptTrainOptions};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Zoo subcommands.
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// Train a family on its procedural data, export ONNX, convert to int8 and write its card.
    Train(TrainArgs),
    /// Re-convert a family's committed ONNX model and rewrite its int8 file and card
    /// (after a converter change; no retraining).
    Refresh {
        /// Family to refresh (available: gpt).
        family: String,
        /// Family folder (default: models/<family>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Convert the committed zoo models, run them, and print the report table.
    Report {
        /// Folder holding one sub-folder per family.
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
}

/// Arguments of `mote zoo train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Family to train (available: gpt).
    pub family: String,
    /// Output folder (default: models/<family>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Optimiser steps (default: the zoo budget).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Training seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The families `mote zoo` knows.
pub const FAMILIES: [&str; 1] = ["gpt"];

pub fn run(c: ZooCommand) -> Result<()> {
    match c {
        ZooCommand::Train(a) => train(a),
        ZooCommand::Refresh { family, dir } => {
            check_family(&family)?;
            let dir = dir.unwrap_or_else(|| PathBuf::from("models").join(&family));
            let path = dir.join("train_report.json");
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let report: zoo::GptReport =
                serde_json::from_str(&text).with_context(|| format!("{} is not a training report", path.display()))?;
            publish(&dir, &report)
        }
        ZooCommand::Report { models } => report(&models),
    }
}

fn check_family(family: &str) -> Result<()> {
    if !FAMILIES.contains(&family) {
        bail!("unknown family '{family}' (available: {})", FAMILIES.join(", "));
    }
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    check_family(&a.family)?;
    let out = a.out.unwrap_or_else(|| PathBuf::from("models").join(&a.family));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut opts = GptTrainOptions::default();
    if let Some(s) = a.steps {
        opts.steps = s;
    }
    if let Some(s) = a.seed {
        opts.seed = s;
    }
    let report = zoo::train_gpt(&out, &opts)?;
    std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
    println!("trained: held-out loss {:.3} nats/char (unigram {:.3})", report.heldout_loss, report.unigram_loss);
    publish(&out, &report)
}

/// Converts the family's ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, report: &zoo::GptReport) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &family::gpt_options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_gpt(dir)?;
    zoo::write_gpt_card(dir, report, &card_section(&figures))?;
    print!("{}", table(&[("gpt", &figures)]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &GptFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(s, "Measured by `mote zoo report` (host runtime, scalar reference kernels).\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let rows: [(&str, String); 12] = [
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        ("int8 arena (peak) / lower bound", format!("{} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8))),
        ("KV-cache state (int8)", bytes(f.state_int8)),
        ("MACs per generated token", f.macs_per_token.to_string()),
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        ("held-out loss f32 / int8 (nats/char)", format!("{:.4} / {:.4}", f.loss_f32, f.loss_int8)),
        (
            "int8 vs f32 next-token agreement",
            format!("{:.2}% over {} positions", 100.0 * f.top1_agreement, f.heldout_positions),
        ),
        ("decode_step vs forward, f32 max-abs", format!("{:.1e}", f.decode_vs_forward_f32)),
        (
            "decode_step vs forward, int8",
            if f.decode_vs_forward_int8 == 0.0 {
                "bit-exact".into()
            } else {
                format!("{:.1e}", f.decode_vs_forward_int8)
            },
        ),
        ("arena / lower bound (forward, f32 / int8)", format!("{:.3} / {:.3}", f.plan_ratio_f32, f.plan_ratio_int8)),
        ("params", f.params.to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s, "\nGreedy generations of `model.int8.mote` on the runtime (`mote generate`):\n");
    for (p, t) in &f.samples {
        let _ = writeln!(s, "- `{p}` → `{}`", t.replace('\n', "⏎"));
    }
    s
}

/// The report table across families.
pub fn table(rows: &[(&str, &GptFigures)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<7} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>7} {:>8}",
        "family",
        "params",
        "flash f32",
        "flash i8",
        "arena i8",
        "lower bnd",
        "state",
        "MACs/tok",
        "vs tract",
        "loss f32",
        "loss i8",
        "top-1",
        "decode"
    );
    for (name, f) in rows {
        let _ = writeln!(
            s,
            "{:<7} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>10.2e} {:>9.4} {:>9.4} {:>6.2}% {:>8}",
            name,
            f.params,
            bytes(f.flash_f32),
            bytes(f.flash_int8),
            bytes(f.arena_int8),
            bytes(f.lower_bound_int8),
            bytes(f.state_int8),
            f.macs_per_token,
            f.f32_vs_tract_max_abs,
            f.loss_f32,
            f.loss_int8,
            100.0 * f.top1_agreement,
            if f.decode_vs_forward_int8 == 0.0 { "exact" } else { "DRIFT" },
        );
    }
    s
}

fn report(models: &Path) -> Result<()> {
    let mut figures = Vec::new();
    for fam in FAMILIES {
        let dir = models.join(fam);
        if !dir.join("model.onnx").exists() {
            bail!("{} has no model.onnx: run `mote zoo train {fam}` first", dir.display());
        }
        eprintln!("converting and running {} ...", dir.display());
        let f = family::evaluate_gpt(&dir)?;
        if !f.committed_int8_up_to_date {
            eprintln!(
                "note: {} differs from a fresh conversion (re-run `mote zoo train {fam}` or convert it again)",
                dir.join("model.int8.mote").display()
            );
        }
        figures.push((fam, f));
    }
    let rows: Vec<(&str, &GptFigures)> = figures.iter().map(|(n, f)| (*n, f)).collect();
    print!("{}", table(&rows));
    println!("\nloss in nats/char on held-out windows; top-1 = int8 vs f32 next-token agreement; decode = KV-cached decode_step vs full forward (int8).");
    Ok(())
}
