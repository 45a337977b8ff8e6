//! The `mote convert` pipeline: import → fuse → (calibrate) → quantise → plan → emit → check.

use crate::array::Array;
use crate::emit::dtypes::{QuantMode, Ranges};
use crate::emit::{self, EntrySpec, PlanSummary};
use crate::import::{Bounds, OnnxModel};
use crate::ir::{Elem, Graph, IrOp};
use crate::report::{self, Inspection};
use crate::{encoder_split, host, passes};
use anyhow::{anyhow, bail, Context, Result};
use mote::ops::MaskMode;
use mote::Op;
use std::path::{Path, PathBuf};

/// Where calibration inputs for int8 come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Calibration {
    /// `.npy` files in a directory, one sample per file (single-input models) or
    /// `<sample>.<input name>.npy` for several inputs.
    Dir(PathBuf),
    /// `n` random samples (token ids in range, floats ~ N(0, 1)).
    Random(usize),
}

/// Options of one conversion.
#[derive(Debug, Clone)]
pub struct Options {
    /// Precision.
    pub quant: QuantMode,
    /// Maxima of the symbolic dims.
    pub bounds: Bounds,
    /// Calibration data (int8 only).
    pub calibration: Option<Calibration>,
    /// Whether to add a `decode_step` entry with a KV cache for causal models.
    pub decode: bool,
    /// Further entry points, each from its own ONNX graph under the same bounds (e.g. a flow's
    /// `inverse` next to its `forward`): `(entry name, path)`. Weights equal to another
    /// entry's are stored once.
    pub extra_entries: Vec<(String, PathBuf)>,
}

/// A finished conversion.
#[derive(Debug)]
pub struct Converted {
    /// The `.mote` bytes.
    pub bytes: Vec<u8>,
    /// Memory plans per entry.
    pub plans: Vec<PlanSummary>,
    /// Per-op report.
    pub inspection: Inspection,
    /// Which symbolic dim is the decoded sequence, if a decode entry was added.
    pub decode_dim: Option<String>,
}

impl Converted {
    /// Arena bytes and the largest entry plan's lower bound.
    pub fn arena_and_lower_bound(&self) -> (usize, usize) {
        (self.inspection.arena_bytes, self.plans.iter().map(|p| p.lower_bound).max().unwrap_or(0))
    }

    /// MACs of one call of `entry` (0 when the file has no such entry).
    pub fn entry_macs(&self, entry: &str) -> u64 {
        self.inspection.entries.iter().find(|e| e.entry == entry).map_or(0, |e| e.macs)
    }
}

fn fused(model: &OnnxModel, bounds: &Bounds) -> Result<Graph> {
    let mut g = model.instantiate(bounds)?;
    passes::run_all(&mut g)?;
    crate::state_io::lift(&mut g)?;
    Ok(g)
}

fn attention_masks(g: &Graph) -> Vec<MaskMode> {
    g.nodes
        .iter()
        .filter_map(|n| match n.op {
            IrOp::Rt(Op::Attention(a)) => Some(a.mask),
            _ => None,
        })
        .collect()
}

/// The symbolic dim an incremental decoder steps along: the one the ONNX metadata
/// `mote.decode` names, else the model's only symbolic dim.
fn decoded_dim(model: &OnnxModel, forward: &Graph) -> Result<Option<String>> {
    match forward.metadata.iter().find(|(k, _)| k == "mote.decode") {
        Some((_, d)) if model.symbols.contains(d) => Ok(Some(d.clone())),
        Some((_, d)) => {
            bail!("metadata mote.decode names '{d}', not a dim of the inputs ({})", model.symbols.join(", "))
        }
        None => Ok((model.symbols.len() == 1).then(|| model.symbols[0].clone())),
    }
}

fn cacheable(m: &MaskMode) -> bool {
    matches!(m, MaskMode::Causal | MaskMode::Prefix)
}

/// Entries for incremental decoding, and the decoded dim, when the model has causal (or
/// prefix-LM) attention along a decoded dim:
/// - decoder-only models: `decode_step` (one token through KV caches), plus `prefill` for
///   prefix-LM models whose metadata names a prompt length (`mote.prefill`);
/// - encoder–decoder models (several dims, `mote.decode` naming the target one): `encode`,
///   which stores the source side in state once, and `decode_step` (see [`encoder_split`]).
fn decode_entries(model: &OnnxModel, bounds: &Bounds, forward: &Graph) -> Result<Option<(Vec<EntrySpec>, String)>> {
    let masks = attention_masks(forward);
    let Some(dim) = decoded_dim(model, forward)? else { return Ok(None) };
    if !masks.iter().any(cacheable) || (model.symbols.len() == 1 && !masks.iter().all(cacheable)) {
        return Ok(None);
    }
    let capacity = bounds[&dim];
    let step = step_graph(model, bounds, &masks, &dim, 1, "decode_step")?;
    if model.symbols.len() == 1 {
        let prefill = forward.metadata.iter().find(|(k, _)| k == "mote.prefill").and_then(|(_, v)| v.parse().ok());
        let mut entries = Vec::new();
        if let Some(len) = prefill.filter(|_| masks.contains(&MaskMode::Prefix)) {
            let graph = step_graph(model, bounds, &masks, &dim, len, "prefill")?;
            entries.push(EntrySpec { name: "prefill".into(), graph, kv_capacity: Some(capacity as u32) });
        }
        entries.push(EntrySpec { name: "decode_step".into(), graph: step, kv_capacity: Some(capacity as u32) });
        return Ok(Some((entries, dim)));
    }
    let targets = model.inputs_with_dim(&dim);
    let target_ids: Vec<_> = step.inputs.iter().copied().filter(|&t| targets.contains(&step.tensors[t].name)).collect();
    let split = encoder_split::split(&step, &target_ids)?;
    for n in &split.decode.nodes {
        if let IrOp::Rt(Op::Attention(a)) = n.op {
            let from_encoder = |k: usize| split.boundary.contains(&split.decode.tensors[n.inputs[k]].name);
            let cross = from_encoder(1) && from_encoder(2);
            if !cacheable(&a.mask) && !cross {
                bail!(
                    "attention '{}' looks back and forth over the decoded dim '{dim}': it cannot run one token at a time",
                    n.name
                );
            }
        }
    }
    let entries = vec![
        EntrySpec { name: "encode".into(), graph: split.encode, kv_capacity: None },
        EntrySpec { name: "decode_step".into(), graph: split.decode, kv_capacity: Some(capacity as u32) },
    ];
    Ok(Some((entries, dim)))
}

/// The graph at `len` positions of the decoded dim, its attention ops taking the full graph's
/// mask modes `masks` (at length 1 a causal mask folds away; the cached op still needs it).
fn step_graph(
    model: &OnnxModel,
    bounds: &Bounds,
    masks: &[MaskMode],
    dim: &str,
    len: usize,
    name: &str,
) -> Result<Graph> {
    let capacity = bounds[dim];
    if len > capacity {
        bail!("the {name} entry needs {len} positions, more than the --dim {dim}={capacity} bound");
    }
    let mut at_len = bounds.clone();
    at_len.insert(dim.to_string(), len);
    let mut g = fused(model, &at_len).with_context(|| format!("building the {name} entry at {dim}={len}"))?;
    if attention_masks(&g).len() != masks.len() {
        bail!("the {name} graph fused {} attention ops, the full graph {}", attention_masks(&g).len(), masks.len());
    }
    let mut modes = masks.iter();
    for n in &mut g.nodes {
        if let IrOp::Rt(Op::Attention(a)) = &mut n.op {
            a.mask = modes.next().copied().unwrap_or(a.mask);
        }
    }
    Ok(g)
}

/// Converts an ONNX model.
pub fn convert(onnx: &Path, opts: &Options) -> Result<Converted> {
    let model = OnnxModel::load(onnx)?;
    let forward = fused(&model, &opts.bounds)?;
    let mut entries = vec![EntrySpec { name: "forward".into(), graph: forward.clone(), kv_capacity: None }];
    let mut decode_dim = None;
    if opts.decode {
        if let Some((more, dim)) = decode_entries(&model, &opts.bounds, &forward)? {
            entries.extend(more);
            decode_dim = Some(dim);
        }
    }
    for (name, path) in &opts.extra_entries {
        entries.push(extra_entry(name, path, &opts.bounds, &entries)?);
    }
    let mut metadata = forward.metadata.clone();
    metadata.push(("mote.dims".into(), format_bounds(&opts.bounds)));
    let f32_model = emit::emit(&entries, QuantMode::F32, None, &metadata)?;
    let out = match opts.quant {
        QuantMode::F32 => f32_model,
        QuantMode::F16 => emit::emit(&entries, QuantMode::F16, None, &metadata)?,
        QuantMode::Int8 => {
            let cal = opts.calibration.as_ref().ok_or_else(|| {
                anyhow!("--quant int8 needs calibration data: pass --calib DIR (of .npy inputs) or --calib-random N")
            })?;
            let mut samples = vec![("forward".to_string(), calibration_samples(cal, &forward)?)];
            for e in entries.iter().filter(|e| opts.extra_entries.iter().any(|(n, _)| *n == e.name)) {
                let random = (0..EXTRA_CALIBRATION_SAMPLES).map(|s| random_inputs(&e.graph, 2000 + s)).collect();
                samples.push((e.name.clone(), random));
            }
            let ranges = calibrate(&f32_model.bytes, &samples)?;
            emit::emit(&entries, QuantMode::Int8, Some(&ranges), &metadata)?
        }
    };
    let parsed = mote::Model::parse(&out.bytes)
        .map_err(|e| anyhow!("internal error: the emitted file does not validate: {e}"))?;
    let inspection = report::inspect(&parsed)?;
    Ok(Converted { bytes: out.bytes, plans: out.plans, inspection, decode_dim })
}

/// Random calibration samples of each extra entry (its floats ~ N(0, 1), e.g. flow latents).
const EXTRA_CALIBRATION_SAMPLES: u64 = 16;

/// An entry point from its own ONNX file. Its tensors are named `<entry>/<tensor>` so that
/// calibration ranges and reports keep it apart from the other entries.
fn extra_entry(name: &str, path: &Path, bounds: &Bounds, so_far: &[EntrySpec]) -> Result<EntrySpec> {
    if name.is_empty() || name.contains(['/', '=']) {
        bail!("entry name '{name}' must be non-empty, without '/' or '='");
    }
    if so_far.iter().any(|e| e.name == name) {
        bail!("entry '{name}' is defined twice");
    }
    let model = OnnxModel::load(path)?;
    let mut graph = fused(&model, bounds).with_context(|| format!("entry '{name}' from {}", path.display()))?;
    for t in &mut graph.tensors {
        t.name = format!("{name}/{}", t.name);
    }
    Ok(EntrySpec { name: name.into(), graph, kv_capacity: None })
}

/// Records the real range of every tensor over the samples of each entry (`(entry, samples)`).
pub fn calibrate(f32_bytes: &[u8], samples: &[(String, Vec<Vec<Array>>)]) -> Result<Ranges> {
    let mut ranges = Ranges::new();
    let mut widen = |name: &str, v: &[f32]| {
        let (lo, hi) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
        let r = ranges.entry(name.to_string()).or_insert((lo, hi));
        *r = (r.0.min(lo), r.1.max(hi));
    };
    let model = mote::Model::parse(f32_bytes)?;
    for (entry, samples) in samples {
        let e = model.entry_by_name(entry)?;
        for sample in samples {
            for (k, a) in sample.iter().enumerate() {
                if let Some(name) = model.entry_input(e, k).ok().and_then(|id| model.tensor_name(id)) {
                    widen(name, &a.to_f32());
                }
            }
        }
        // One session for all samples: persistent state (memory) sees realistic values.
        host::run_sequence_observed(f32_bytes, entry, samples, &mut widen)?;
    }
    Ok(ranges)
}

/// Largest valid index for each integer input: the rows of the table it indexes.
fn index_bound(g: &Graph, input: usize) -> Option<usize> {
    g.nodes.iter().find_map(|n| match n.op {
        IrOp::Rt(Op::Gather { axis }) if n.inputs.get(1) == Some(&input) => {
            g.tensors[n.inputs[0]].shape.get(axis as usize).copied()
        }
        _ => None,
    })
}

/// Random inputs for the forward graph: token ids within their tables, floats ~ N(0, 1).
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Array> {
    let mut rng = mote::rng::Rng::new(seed);
    g.inputs
        .iter()
        .map(|&t| {
            let shape = g.tensors[t].shape.clone();
            let n: usize = shape.iter().product();
            match g.tensors[t].elem {
                Elem::Int => {
                    let hi = index_bound(g, t).unwrap_or(2).max(1) as u32;
                    Array::i64(shape, (0..n).map(|_| (rng.next_u32() % hi) as i64).collect())
                }
                Elem::Float => Array::f32(shape, (0..n).map(|_| rng.gaussian()).collect()),
            }
        })
        .collect()
}

/// Loads or draws calibration samples.
pub fn calibration_samples(cal: &Calibration, g: &Graph) -> Result<Vec<Vec<Array>>> {
    match cal {
        Calibration::Random(n) => Ok((0..*n as u64).map(|s| random_inputs(g, 1000 + s)).collect()),
        Calibration::Dir(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read calibration directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "npy"))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("calibration directory {} holds no .npy files", dir.display());
            }
            if g.inputs.len() == 1 {
                return files.iter().map(|f| Ok(vec![Array::read_npy(f)?])).collect();
            }
            // Several inputs: `<sample>.<input name>.npy`, one file per input of each sample.
            let names: Vec<&str> = g.inputs.iter().map(|&t| g.tensors[t].name.as_str()).collect();
            let mut samples: Vec<String> = files
                .iter()
                .filter_map(|f| f.file_stem()?.to_str()?.split_once('.').map(|(s, _)| s.to_string()))
                .collect();
            samples.dedup();
            if samples.is_empty() {
                bail!("calibration directory {}: a model with several inputs needs <sample>.<input>.npy files (inputs: {})", dir.display(), names.join(", "));
            }
            samples
                .iter()
                .map(|s| {
                    names
                        .iter()
                        .map(|n| {
                            let f = dir.join(format!("{s}.{n}.npy"));
                            Array::read_npy(&f).with_context(|| format!("calibration sample '{s}', input '{n}'"))
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// Parses sizes like `256KiB`, `1MiB`, `4096`, `64k`.
pub fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| anyhow!("'{s}' is not a size (examples: 256KiB, 1MiB, 65536)"))?;
    let mul = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        _ => bail!("'{s}': unknown unit '{unit}' (use B, KiB or MiB)"),
    };
    Ok((v * mul) as usize)
}

/// The 8 ops with the largest `key`, one line each, flagging those above `limit` alone.
fn largest(r: &Inspection, key: impl Fn(&report::OpRow) -> usize, limit: usize) -> String {
    let mut rows: Vec<_> = r.ops.iter().filter(|o| key(o) > 0).collect();
    rows.sort_by_key(|o| std::cmp::Reverse(key(o)));
    rows.iter()
        .take(8)
        .map(|o| {
            let flag = if key(o) > limit { "  <- alone exceeds the budget" } else { "" };
            format!(
                "  [{}] #{:<4} {:<11} {:<32} {:>10}{flag}\n",
                o.entry,
                o.index,
                o.op,
                o.output,
                report::bytes(key(o))
            )
        })
        .collect()
}

/// Checks the model against RAM and flash budgets, explaining per layer what does not fit.
pub fn check_budgets(r: &Inspection, ram: Option<usize>, flash: Option<usize>) -> Result<()> {
    let mut problems = Vec::new();
    if let Some(ram) = ram.filter(|&ram| r.arena_bytes + r.state_bytes > ram) {
        problems.push(format!(
            "RAM budget exceeded: arena {} + state {} = {} > budget {}.\nLargest live sets (op, output, live arena):\n{}",
            report::bytes(r.arena_bytes),
            report::bytes(r.state_bytes),
            report::bytes(r.arena_bytes + r.state_bytes),
            report::bytes(ram),
            largest(r, |o| o.arena_live, ram)
        ));
    }
    if let Some(flash) = flash.filter(|&flash| r.file_bytes > flash) {
        problems.push(format!(
            "flash budget exceeded: model file {} > budget {} (weights {}).\nLargest weight users (op, output, weight bytes):\n{}Try --quant int8 (4x smaller weights than f32) or a smaller model.\n",
            report::bytes(r.file_bytes),
            report::bytes(flash),
            report::bytes(r.weight_bytes),
            largest(r, |o| o.weight_bytes, flash)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// `seq=64,batch=1`: how bounds are stored in the file's `mote.dims` metadata.
pub fn format_bounds(b: &Bounds) -> String {
    b.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Parses [`format_bounds`] output.
pub fn parse_bounds(s: &str) -> Result<Bounds> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("bad dim bound '{p}'"))?;
            Ok((k.to_string(), v.parse()?))
        })
        .collect()
}
