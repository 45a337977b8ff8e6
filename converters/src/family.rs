//! Evaluates a zoo family's committed artefacts through the converter and the runtime:
//! the figures behind `mote zoo report`, the model cards and the acceptance tests.

use crate::array::{Array, Data};
use crate::cli::generate::complete;
use crate::convert::{self, Calibration, Options};
use crate::emit::dtypes::QuantMode;
use crate::eval::{self, LmEval};
use crate::import::{Bounds, OnnxModel};
use crate::{host, verify};
use anyhow::{anyhow, Context, Result};
use mote::generate::Sampler;
use serde::Serialize;
use std::path::Path;

/// The [`FamilyFigures`] row of a figures struct `$f` that has the common memory, parity and
/// freshness fields, given its MACs per token and its task metric.
macro_rules! family_row {
    ($f:expr, $macs:expr, $metric:expr) => {
        $crate::family::FamilyFigures {
            params: $f.params,
            flash_f32: $f.flash_f32,
            flash_int8: $f.flash_int8,
            arena_int8: $f.arena_int8,
            lower_bound_int8: $f.lower_bound_int8,
            state_int8: $f.state_int8,
            macs_per_token: $macs,
            f32_vs_tract_max_abs: $f.f32_vs_tract_max_abs,
            metric: $metric,
            committed_int8_up_to_date: $f.committed_int8_up_to_date,
        }
    };
}

pub mod autoregressive;
pub mod coupling;
pub mod ddpm;
pub mod ddpm2d;
pub mod encdec;
pub mod gan;
pub mod glow;
pub mod ldm;
pub mod m4;
pub mod mlm;
pub mod planar;
pub mod switch;
pub mod t5;
pub mod two_way;
pub mod vae;
pub mod xl;

pub use autoregressive::{ar_flow_options, evaluate_ar_flow, ArFlowFigures};
pub use coupling::{evaluate_flow, FlowFigures};
pub use ddpm2d::{ddpm2d_options, evaluate_ddpm2d, evaluate_ddpm2d_student, Ddpm2dDir, DiffusionFigures};
pub use encdec::{encdec_options, evaluate_encdec, EncdecFigures};
pub use gan::{evaluate_gan, gan_options, GanFigures};
pub use glow::{evaluate_glow, glow_options, GlowFigures};
pub use mlm::{evaluate_mlm, mlm_options, MlmFigures};
pub use planar::{evaluate_planar, planar_options};
pub use switch::{evaluate_switch, SwitchFigures};
pub use t5::{evaluate_t5, t5_options, T5Figures};
pub use two_way::{flow_options, TwoWayConversion, TwoWayFile};
pub use vae::{evaluate_vae, vae_options, VaeFigures};
pub use xl::{evaluate_xl, XlFigures};

/// One row of `mote zoo report`: the figures every family has, whatever its task.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyFigures {
    /// Real-valued weights stored in the f32 file (shared weights count once).
    pub params: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// State bytes of the int8 file (KV caches, memories).
    pub state_int8: usize,
    /// MACs per token (one `decode_step` for decoders, `forward` / sequence length otherwise).
    pub macs_per_token: u64,
    /// f32 `.mote` against tract on the golden inputs, max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// The family's task metric, f32 and int8.
    pub metric: TaskMetric,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
}

/// A task metric measured on the runtime with the f32 and the int8 file.
#[derive(Debug, Clone, Serialize)]
pub struct TaskMetric {
    /// Short name for the table header, e.g. `loss nats/char` or `MLM acc %`.
    pub name: String,
    /// Value with the f32 file.
    pub f32: f64,
    /// Value with the int8 file.
    pub int8: f64,
}

/// Memory figures of a (f32, int8) conversion pair.
fn memory_figures(f32m: &convert::Converted, i8m: &convert::Converted) -> (usize, usize, usize, usize, usize) {
    (
        f32m.bytes.len(),
        i8m.bytes.len(),
        i8m.arena_and_lower_bound().0,
        i8m.arena_and_lower_bound().1,
        i8m.inspection.state_bytes,
    )
}

/// Everything measured about the GPT family.
#[derive(Debug, Clone, Serialize)]
pub struct GptFigures {
    /// Trainable parameters (weights in the ONNX file).
    pub params: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// Planned/lower-bound ratio of the f32 forward plan.
    pub plan_ratio_f32: f64,
    /// Planned/lower-bound ratio of the int8 forward plan.
    pub plan_ratio_int8: f64,
    /// KV-cache state bytes (int8).
    pub state_int8: usize,
    /// MACs of one `decode_step` (one token with a full cache bound).
    pub macs_per_token: u64,
    /// f32 `.mote` against tract on the golden inputs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` against the training framework's golden outputs.
    pub f32_vs_candle_max_abs: f32,
    /// Held-out positions scored.
    pub heldout_positions: usize,
    /// Held-out loss of the f32 `.mote` (nats/char).
    pub loss_f32: f64,
    /// Held-out loss of the int8 `.mote`.
    pub loss_int8: f64,
    /// Next-token argmax agreement of int8 with f32.
    pub top1_agreement: f64,
    /// Incremental decoding vs the full pass, f32 (max-abs over all positions).
    pub decode_vs_forward_f32: f32,
    /// Incremental decoding vs the full pass, int8 (max-abs; 0 means bit-exact).
    pub decode_vs_forward_int8: f32,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
    /// Greedy generations of the int8 model on the host runtime.
    pub samples: Vec<(String, String)>,
}

impl GptFigures {
    /// The report row: task metric = held-out next-char loss.
    pub fn summary(&self) -> FamilyFigures {
        family_row!(
            self,
            self.macs_per_token,
            TaskMetric { name: "loss nats/char".into(), f32: self.loss_f32, int8: self.loss_int8 }
        )
    }
}

/// Context length the zoo model was trained for.
pub(crate) fn bounds_of(onnx: &OnnxModel) -> Result<Bounds> {
    let max: usize = onnx
        .metadata()
        .iter()
        .find(|(k, _)| k == "mote.max_seq")
        .ok_or_else(|| anyhow!("model has no mote.max_seq metadata"))?
        .1
        .parse()?;
    Ok(onnx.symbols.iter().map(|s| (s.clone(), max)).collect())
}

/// Options for converting the zoo model in `dir`: symbols bounded by its `mote.max_seq`,
/// calibration from `calib/`, decode entries when `decode`.
pub(crate) fn zoo_options(dir: &Path, quant: QuantMode, decode: bool) -> Result<Options> {
    let bounds = bounds_of(&OnnxModel::load(&dir.join("model.onnx"))?)?;
    Ok(Options {
        quant,
        bounds,
        calibration: Some(Calibration::Dir(dir.join("calib"))),
        decode,
        extra_entries: Vec::new(),
    })
}

/// Options for converting a zoo GPT.
pub fn gpt_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    zoo_options(dir, quant, true)
}

pub(crate) fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Max-abs difference between `forward` logits and token-by-token `decode_step` logits.
pub fn decode_vs_forward(bytes: &[u8], tokens: &[i64]) -> Result<f32> {
    let full = host::run(bytes, "forward", &[Array::i64(vec![1, tokens.len()], tokens.to_vec())])?.remove(0).to_f32();
    let model = mote::Model::parse(bytes)?;
    let e = model.entry_by_name("decode_step")?;
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let vocab = full.len() / tokens.len();
    let mut step = vec![0f32; vocab];
    let mut worst = 0f32;
    for (p, &t) in tokens.iter().enumerate() {
        s.set_input_i32(e, 0, &[t as i32])?;
        s.run(e)?;
        s.output_f32(e, 0, &mut step)?;
        worst = worst.max(max_abs(&step, &full[p * vocab..(p + 1) * vocab]));
    }
    Ok(worst)
}

/// Real-valued weights stored in a model (constants folded away by conversion, such as a
/// causal mask, do not count).
pub fn stored_params(bytes: &[u8]) -> Result<usize> {
    let m = mote::Model::parse(bytes)?;
    let mut n = 0;
    for i in 0..m.tensor_count() as u32 {
        let t = m.tensor(mote::TensorId(i))?;
        if t.storage == mote::format::Storage::Weights && t.desc.dtype != mote::DType::I32 {
            n += t.desc.shape.numel();
        }
    }
    Ok(n)
}

/// Prompts the card and report generate from.
pub const PROMPTS: [&str; 3] = ["the cat ", "two dogs that ", "23+19="];

/// `forward` of the converted f32 `.mote` (`f32_bytes`) against tract on `onnx` and against
/// the golden logits of a causal LM in `dir` (`golden/{input,output}_k.npy`). Returns
/// (max-abs vs tract, max-abs vs golden, tokens of the first golden input).
pub(crate) fn golden_parity(onnx: &Path, f32_bytes: &[u8], dir: &Path) -> Result<(f32, f32, Vec<i64>)> {
    let (mut vs_tract, mut vs_candle) = (0f32, 0f32);
    let mut first_golden = None;
    for k in 0.. {
        let (x, y) = (dir.join(format!("golden/input_{k}.npy")), dir.join(format!("golden/output_{k}.npy")));
        if !x.exists() {
            break;
        }
        let x = Array::read_npy(&x)?;
        let want = Array::read_npy(&y)?.to_f32();
        let got = host::run(f32_bytes, "forward", std::slice::from_ref(&x))?.remove(0).to_f32();
        let tract = verify::tract_reference(onnx, std::slice::from_ref(&x))?.remove(0).to_f32();
        vs_tract = vs_tract.max(max_abs(&got, &tract));
        vs_candle = vs_candle.max(max_abs(&got, &want));
        first_golden.get_or_insert(x);
    }
    let golden = first_golden.ok_or_else(|| anyhow!("{}: no golden inputs", dir.display()))?;
    let Data::I64(golden_tokens) = golden.data else { return Err(anyhow!("golden input must be integer tokens")) };
    Ok((vs_tract, vs_candle, golden_tokens))
}

/// Greedy generations of a converted causal LM on the host runtime, one per [`PROMPTS`].
/// Like training, a prompt starts a new line; the sample ends at the next one.
pub(crate) fn host_samples(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let mut samples = Vec::new();
    for p in PROMPTS {
        let text = complete(bytes, &format!("\n{p}"), 48, &mut Sampler::greedy(), |_| {})?;
        samples.push((p.to_string(), text.split('\n').next().unwrap_or("").to_string()));
    }
    Ok(samples)
}

/// Measures the GPT family in `dir` (`models/gpt`).
pub fn evaluate_gpt(dir: &Path) -> Result<GptFigures> {
    let onnx = dir.join("model.onnx");
    let f32m = convert::convert(&onnx, &gpt_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&onnx, &gpt_options(dir, QuantMode::Int8)?)?;
    let params = stored_params(&f32m.bytes)?;

    let (vs_tract, vs_candle, golden_tokens) = golden_parity(&onnx, &f32m.bytes, dir)?;

    let heldout = Array::read_npy(&dir.join("heldout.npy")).context("held-out windows")?;
    let e32: LmEval = eval::lm_eval(&f32m.bytes, &heldout)?;
    let e8: LmEval = eval::lm_eval(&i8m.bytes, &heldout)?;

    let committed = std::fs::read(dir.join("model.int8.mote")).unwrap_or_default();
    let samples = host_samples(&i8m.bytes)?;
    let forward_plan = |c: &convert::Converted| {
        c.plans
            .iter()
            .find(|p| p.entry == "forward")
            .map(|p| p.arena as f64 / p.lower_bound.max(1) as f64)
            .unwrap_or(0.0)
    };
    let (flash_f32, flash_int8, arena_int8, lower_bound_int8, state_int8) = memory_figures(&f32m, &i8m);
    Ok(GptFigures {
        params,
        flash_f32,
        flash_int8,
        arena_int8,
        lower_bound_int8,
        plan_ratio_f32: forward_plan(&f32m),
        plan_ratio_int8: forward_plan(&i8m),
        state_int8,
        macs_per_token: i8m.entry_macs("decode_step"),
        f32_vs_tract_max_abs: vs_tract,
        f32_vs_candle_max_abs: vs_candle,
        heldout_positions: e32.positions,
        loss_f32: e32.loss,
        loss_int8: e8.loss,
        top1_agreement: eval::top1_agreement(&e8, &e32),
        decode_vs_forward_f32: decode_vs_forward(&f32m.bytes, &golden_tokens)?,
        decode_vs_forward_int8: decode_vs_forward(&i8m.bytes, &golden_tokens)?,
        committed_int8_up_to_date: committed == i8m.bytes,
        samples,
    })
}

/// The batch bound a zoo ONNX file was exported with: its `mote.max_batch` metadata.
pub(crate) fn max_batch_of(onnx: &Path) -> Result<usize> {
    let model = OnnxModel::load(onnx)?;
    let v = model.metadata().iter().find(|(k, _)| k == "mote.max_batch").map(|(_, v)| v.clone());
    Ok(v.ok_or_else(|| anyhow!("{} has no mote.max_batch metadata", onnx.display()))?.parse()?)
}

/// The diffusion step counts a converted file lists in its metadata (empty: any).
pub(crate) fn listed_steps(c: &convert::Converted) -> Vec<usize> {
    c.inspection
        .metadata
        .iter()
        .find(|(k, _)| k == mote::diffusion::STEPS_KEY)
        .map(|(_, v)| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default()
}
