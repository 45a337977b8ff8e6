//! `mote zoo`: train, export and report the model zoo.
//!
//! Every family implements [`ZooFamily`] (train, refresh, evaluate into the family-agnostic
//! [`FamilyFigures`]) and is listed once in [`FAMILIES`]; that is all a new family needs to
//! appear in `mote zoo train|refresh|report`.

mod autoregressive;
mod coupling;
mod ddpm;
mod ddpm2d;
mod encdec;
mod gan;
mod glow;
mod gpt;
mod ldm;
mod mlm;
mod planar;
mod switch;
mod t5;
mod vae;
mod xl;

use crate::family::FamilyFigures;
use crate::report::bytes;
use crate::zoo::MlmFamily;
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
        /// Family to refresh (available: gpt, bert, albert, switch, t5, transformer-xl, encdec, nice, realnvp, maf, iaf, pwn, planar, glow, vae, gan, ddpm2d, ddpm, ldm).
        family: String,
        /// Family folder (default: models/<family>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Distil a family's trained model into few-step students (families that support it:
    /// ddpm2d, ldm, ddpm), then convert, measure and rewrite its card.
    Distill {
        /// Family to distil.
        family: String,
        /// Step count of the last student (every round halves the steps).
        #[arg(long, default_value_t = 1)]
        to: usize,
        /// Optimiser steps per round (default: the family's budget).
        #[arg(long)]
        steps: Option<usize>,
        /// Start from the N-step student an earlier run kept in `<dir>/rounds/` instead of the
        /// teacher (its earlier rounds stay in the report).
        #[arg(long, value_name = "N")]
        resume_from: Option<usize>,
        /// Explicit timesteps of the students with that many steps (a power of two, strictly
        /// decreasing, on their teacher's grid; e.g. `127,119,111,95,79,63,39,15`): their round
        /// learns every teacher step inside each student step and later rounds halve the grid
        /// (default: the family's grid).
        #[arg(long, value_delimiter = ',', value_name = "T,T,…")]
        grid: Option<Vec<isize>>,
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
    /// Family to train (available: gpt, bert, albert, switch, t5, transformer-xl, encdec, nice, realnvp, maf, iaf, pwn, planar, glow, vae, gan, ddpm2d, ddpm, ldm).
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

/// Overrides of a family's default training budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainSettings {
    /// Optimiser steps.
    pub steps: Option<usize>,
    /// Training seed.
    pub seed: Option<u64>,
}

/// A zoo family as `mote zoo` drives it.
pub trait ZooFamily: Sync {
    /// Folder and command-line name, e.g. `gpt`.
    fn name(&self) -> &'static str;
    /// Trains on the procedural data, writes the artefacts and `train_report.json` to `out`,
    /// converts to int8 and writes the card.
    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()>;
    /// Re-converts the committed ONNX model and rewrites the int8 file and the card.
    fn refresh(&self, dir: &Path) -> Result<()>;
    /// Converts and runs the committed artefacts: the family's row of the report.
    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures>;
    /// Distils the trained model in `dir` into students of fewer sampling steps, down to
    /// `settings.to` (only families with an iterative sampler implement it).
    fn distill(&self, dir: &Path, settings: &DistillSettings) -> Result<()> {
        let _ = (dir, settings);
        bail!("family '{}' has no distillation (available: ddpm2d, ldm, ddpm)", self.name())
    }
}

/// What `mote zoo distill` asks of a family.
#[derive(Debug, Clone)]
pub struct DistillSettings {
    /// Step count of the last student.
    pub to: usize,
    /// Optimiser steps per round, overriding the family's budget.
    pub steps: Option<usize>,
    /// The kept student to start from.
    pub resume_from: Option<usize>,
    /// The first student's explicit step grid, overriding the family's.
    pub grid: Option<Vec<isize>>,
}

impl DistillSettings {
    /// The family's distillation options `o` with this request's overrides.
    fn apply(&self, o: crate::zoo::diffusion::DistillOptions) -> crate::zoo::diffusion::DistillOptions {
        let o = match self.steps {
            Some(steps) => o.with_steps(steps),
            None => o,
        };
        let grid = self.grid.clone().unwrap_or_else(|| o.grid.clone());
        crate::zoo::diffusion::DistillOptions { resume_from: self.resume_from, grid, ..o }
    }
}

/// Prints one line per distillation round: its time, loss and the candle sample quality of
/// the student against its teacher at the student's step count.
fn print_rounds(r: &crate::zoo::diffusion::DistillReport) {
    for round in &r.rounds {
        println!(
            "{} steps: {:.0} s, loss {:.4} → {:.4}; candle sample quality student {:.5}, teacher at {} steps {:.5}",
            round.steps,
            round.train_seconds,
            round.loss_first_last.0,
            round.loss_first_last.1,
            round.energy_candle,
            round.steps,
            round.energy_teacher_candle
        );
    }
}

/// The families `mote zoo` knows, in report order.
pub const FAMILIES: [&dyn ZooFamily; 19] = [
    &gpt::Gpt,
    &mlm::Mlm(MlmFamily::Bert),
    &mlm::Mlm(MlmFamily::Albert),
    &switch::Switch,
    &xl::TransformerXl,
    &t5::T5,
    &encdec::EncDec,
    &coupling::Coupling(coupling::CouplingKind::Nice),
    &coupling::Coupling(coupling::CouplingKind::RealNvp),
    &autoregressive::Autoregressive(autoregressive::ArFamily::Maf),
    &autoregressive::Autoregressive(autoregressive::ArFamily::Iaf),
    &autoregressive::Autoregressive(autoregressive::ArFamily::Pwn),
    &vae::Vae,
    &planar::Planar,
    &glow::Glow,
    &gan::Gan,
    &ddpm2d::Ddpm2d,
    &ddpm::Ddpm,
    &ldm::Ldm,
];

/// Runs a `mote zoo` subcommand.
pub fn run(c: ZooCommand) -> Result<()> {
    match c {
        ZooCommand::Train(a) => {
            let fam = family(&a.family)?;
            let out = a.out.unwrap_or_else(|| PathBuf::from("models").join(fam.name()));
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            fam.train(&out, &TrainSettings { steps: a.steps, seed: a.seed })
        }
        ZooCommand::Refresh { family: name, dir } => {
            let fam = family(&name)?;
            fam.refresh(&dir.unwrap_or_else(|| PathBuf::from("models").join(fam.name())))
        }
        ZooCommand::Distill { family: name, to, steps, resume_from, grid, dir } => {
            let fam = family(&name)?;
            fam.distill(
                &dir.unwrap_or_else(|| PathBuf::from("models").join(fam.name())),
                &DistillSettings { to, steps, resume_from, grid },
            )
        }
        ZooCommand::Report { models } => report(&models),
    }
}

fn family(name: &str) -> Result<&'static dyn ZooFamily> {
    match FAMILIES.iter().find(|f| f.name() == name) {
        Some(f) => Ok(*f),
        None => {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.name()).collect();
            bail!("unknown family '{name}' (available: {})", known.join(", "))
        }
    }
}

/// The report table across families: one row each.
pub fn table(rows: &[(&str, &FamilyFigures)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}  {:<15} {:>9} {:>9}",
        "family",
        "params",
        "flash f32",
        "flash i8",
        "arena i8",
        "lower bnd",
        "state",
        "MACs/tok",
        "vs tract",
        "task metric",
        "f32",
        "int8"
    );
    for (name, f) in rows {
        let _ = writeln!(
            s,
            "{:<14} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9.2e}  {:<15} {:>9.4} {:>9.4}",
            name,
            f.params,
            bytes(f.flash_f32),
            bytes(f.flash_int8),
            bytes(f.arena_int8),
            bytes(f.lower_bound_int8),
            bytes(f.state_int8),
            f.macs_per_token,
            f.f32_vs_tract_max_abs,
            f.metric.name,
            f.metric.f32,
            f.metric.int8,
        );
    }
    s
}

fn report(models: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for fam in FAMILIES {
        let dir = models.join(fam.name());
        // One graph (`model.onnx`) or several (a flow's `forward.onnx` + `inverse.onnx`, a VAE's
        // decoder and encoder): any ONNX file means the family was trained.
        let trained = std::fs::read_dir(&dir)
            .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "onnx")))
            .unwrap_or(false);
        if !trained {
            bail!("{} holds no ONNX model: run `mote zoo train {}` first", dir.display(), fam.name());
        }
        eprintln!("converting and running {} ...", dir.display());
        let f = fam.evaluate(&dir)?;
        if !f.committed_int8_up_to_date {
            eprintln!(
                "note: {} differs from a fresh conversion (run `mote zoo refresh {}`)",
                dir.join("model.int8.mote").display(),
                fam.name()
            );
        }
        rows.push((fam.name(), f));
    }
    let rows: Vec<(&str, &FamilyFigures)> = rows.iter().map(|(n, f)| (*n, f)).collect();
    print!("{}", table(&rows));
    println!(
        "\nMACs/tok: one decode_step (decoders), forward / sequence length (encoders), or per point or image \
         (flows, VAE, GAN); vs tract: f32 .mote max-abs on golden inputs; task metric on held-out data with the \
         f32 and the int8 file (gpt, switch: next-char loss, lower is better; bert/albert: accuracy on masked \
         positions, higher is better; transformer-xl: next-char loss with memory carried across 32-char \
         segments; t5, encdec: greedy answers that match exactly, higher is better; flows: test NLL in \
         nats/dim, lower is better; vae: -ELBO nats/image; gan: energy distance of samples, lower is better; \
         ddpm2d: energy distance of the 4-step student's samples, lower is better, MACs per 4-step sample; \
         ddpm: energy distance in local features of the 4-step UNet student's samples, lower is better, MACs per \
         4-step sample; \
         ldm: energy distance in local features of the 4-step student's decoded samples, lower is better, MACs per \
         decoded sample)."
    );
    Ok(())
}
