//! The runtime figures every sequence-to-sequence folder has: its `model.onnx` converted in f32
//! and int8, with memory, golden parity against tract and candle and freshness of the committed
//! int8 file ([`FileFigures::measure`]), and the greedy answers of the held-out set scored with
//! both files against the copy baseline ([`GreedyScores`]). The families add what only they
//! measure (fusion, incremental decoding, beam search).

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::TaskExample;
use crate::array::Array;
use crate::convert::{self, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::family::{max_abs, stored_params, TaskMetric};
use crate::{host, verify};

/// The figures of a sequence-to-sequence folder's converted `model.onnx`, whatever the family.
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    /// Real-valued weights stored in the f32 file.
    pub params: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// State bytes of the int8 file (KV caches, and the encoder memory of an encoder–decoder).
    pub state_int8: usize,
    /// f32 `.mote` against tract on the golden inputs, max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` against candle's golden logits, max-abs.
    pub f32_vs_candle_max_abs: f32,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
}

/// A folder's `model.onnx` converted in f32 and int8, with its figures.
pub struct Conversion {
    /// The figures of the converted files.
    pub file: FileFigures,
    /// The f32 conversion, for the family's own runtime measurements.
    pub f32: Converted,
    /// The int8 conversion.
    pub int8: Converted,
    /// The options the int8 file was converted with.
    pub int8_options: Options,
    /// The inputs of every golden example, in the ONNX input order.
    pub goldens: Vec<Vec<Array>>,
}

impl FileFigures {
    /// Converts `dir/model.onnx` in f32 and int8 with the family's `options`, runs the f32 file's
    /// `forward` entry on every golden example (`golden/g{k}.{name}.npy` for each of the ONNX
    /// input `names`, from k = 0 until the first one missing) against tract and candle's
    /// `golden/g{k}.logits.npy`, and compares the int8 file with the committed one.
    pub fn measure(dir: &Path, options: fn(&Path, QuantMode) -> Result<Options>, names: &[&str]) -> Result<Conversion> {
        let onnx = dir.join("model.onnx");
        let int8_options = options(dir, QuantMode::Int8)?;
        let f32m = convert::convert(&onnx, &options(dir, QuantMode::F32)?)?;
        let i8m = convert::convert(&onnx, &int8_options)?;
        let (mut vs_tract, mut vs_candle) = (0f32, 0f32);
        let mut goldens = Vec::new();
        for k in 0.. {
            let path = |n: &str| dir.join(format!("golden/g{k}.{n}.npy"));
            if !path(names[0]).exists() {
                break;
            }
            let inputs: Vec<Array> = names.iter().map(|n| Array::read_npy(&path(n))).collect::<Result<_>>()?;
            let want = Array::read_npy(&path("logits"))?.to_f32();
            let got = host::run(&f32m.bytes, "forward", &inputs)?.remove(0).to_f32();
            let tract = verify::tract_reference(&onnx, &inputs)?.remove(0).to_f32();
            vs_tract = vs_tract.max(max_abs(&got, &tract));
            vs_candle = vs_candle.max(max_abs(&got, &want));
            goldens.push(inputs);
        }
        if goldens.is_empty() {
            bail!("{}: no golden inputs", dir.display());
        }
        let committed = std::fs::read(dir.join("model.int8.mote")).unwrap_or_default();
        let (arena_int8, lower_bound_int8) = i8m.arena_and_lower_bound();
        let file = FileFigures {
            params: stored_params(&f32m.bytes)?,
            flash_f32: f32m.bytes.len(),
            flash_int8: i8m.bytes.len(),
            arena_int8,
            lower_bound_int8,
            state_int8: i8m.inspection.state_bytes,
            f32_vs_tract_max_abs: vs_tract,
            f32_vs_candle_max_abs: vs_candle,
            committed_int8_up_to_date: committed == i8m.bytes,
        };
        Ok(Conversion { file, f32: f32m, int8: i8m, int8_options, goldens })
    }
}

/// Greedy answers to the held-out examples, scored with the f32 and the int8 file and against
/// the copy-the-source baseline.
#[derive(Debug, Clone, Serialize)]
pub struct GreedyScores {
    /// Held-out examples scored.
    pub heldout_examples: usize,
    /// Exact match of greedy answers (the whole answer), f32 file.
    pub exact_f32: f64,
    /// Exact match of greedy answers, int8 file.
    pub exact_int8: f64,
    /// Token accuracy, f32 file.
    pub token_f32: f64,
    /// Token accuracy, int8 file.
    pub token_int8: f64,
    /// Copy-the-source baseline, exact match.
    pub baseline_exact: f64,
    /// Copy-the-source baseline, token accuracy.
    pub baseline_token: f64,
    /// Greedy int8 samples `(source or prompt, answer)`.
    pub samples: Vec<(String, String)>,
}

impl GreedyScores {
    /// Scores the greedy answers of the f32 file (`f32`) and of the int8 file (`int8`) to the
    /// held-out examples `held`, and the copy baseline's.
    pub fn new<E: TaskExample>(held: &[E], f32: &[E::Answer], int8: &[E::Answer]) -> Self {
        let (exact_f32, token_f32) = E::score(held, f32);
        let (exact_int8, token_int8) = E::score(held, int8);
        let (baseline_exact, baseline_token) = E::score(held, &super::copies(held));
        Self {
            heldout_examples: held.len(),
            exact_f32,
            exact_int8,
            token_f32,
            token_int8,
            baseline_exact,
            baseline_token,
            samples: super::samples(held, int8),
        }
    }

    /// The report's task metric: held-out exact match of greedy answers (%).
    pub fn metric(&self) -> TaskMetric {
        TaskMetric { name: "exact match %".into(), f32: 100.0 * self.exact_f32, int8: 100.0 * self.exact_int8 }
    }
}

/// Index of the largest value (the first of equals; 0 for an empty slice).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}
