//! The `mote` command line.

mod commands;
pub mod generate;
mod zoo;

use crate::emit::dtypes::QuantMode;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mote: put modern model families on microcontrollers and edge boards.
#[derive(Debug, Parser)]
#[command(name = "mote", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert an ONNX model into a planned, quantised .mote file (and verify it against tract).
    Convert(commands::ConvertArgs),
    /// Print the per-op report of a .mote file: shapes, MACs, weight bytes, live arena.
    Inspect {
        /// The .mote file.
        model: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a .mote file on the host runtime with .npy inputs.
    Run {
        /// The .mote file.
        model: PathBuf,
        /// Input .npy files, in entry-input order.
        #[arg(long = "input", short = 'i', required = true)]
        inputs: Vec<PathBuf>,
        /// Output .npy path (with several outputs, `_k` is appended before the extension).
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Entry point to run.
        #[arg(long, default_value = "forward")]
        entry: String,
    },
    /// Compare a .mote file with tract running the ONNX model.
    Verify {
        /// The ONNX model.
        onnx: PathBuf,
        /// The .mote file.
        model: PathBuf,
        /// Input .npy files (default: random inputs).
        #[arg(long = "input", short = 'i')]
        inputs: Vec<PathBuf>,
        /// Number of random input sets when no inputs are given.
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
    /// Generate text with a language model's decode_step entry and its KV cache.
    Generate(generate::GenerateArgs),
    /// Build the firmware with a model for a board, run it (QEMU boards) and report sizes and counts.
    Flash(crate::flash::FlashArgs),
    /// Train, export and report the model zoo.
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert(a) => commands::convert(a),
        Command::Inspect { model, json } => commands::inspect(&model, json),
        Command::Run { model, inputs, output, entry } => commands::run(&model, &inputs, &output, &entry),
        Command::Verify { onnx, model, inputs, samples } => commands::verify(&onnx, &model, &inputs, samples),
        Command::Generate(a) => generate::generate(a),
        Command::Flash(a) => crate::flash::run_cli(a),
        Command::Zoo(z) => zoo::run(z),
    }
}

/// Default cosine-similarity floor of the self-check after conversion.
pub fn default_min_cosine(q: QuantMode) -> f32 {
    match q {
        QuantMode::F32 => 0.99999,
        QuantMode::F16 => 0.999,
        QuantMode::Int8 => 0.98,
    }
}
