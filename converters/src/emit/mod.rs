//! Emits planned, quantised entry-point graphs as one `.mote` file.

pub mod dtypes;
pub mod weights;

use crate::ir::{Const, Elem, Graph, IrOp, Node, TId, Tensor};
use crate::plan::{self, BufferRequest};
use anyhow::{anyhow, bail, Result};
use dtypes::{QuantMode, Ranges, Storage};
use mote::format::{TensorSpec, Writer, ALIGN, STATE_HEADER};
use mote::ops::{KvCache, MaskMode};
use mote::{DType, Desc, Op, Shape, TensorId};
use std::collections::HashMap;
use weights::Encoded;

/// One entry point to emit.
#[derive(Debug, Clone)]
pub struct EntrySpec {
    /// Entry name (`forward`, `decode_step`).
    pub name: String,
    /// Its graph at concrete shapes.
    pub graph: Graph,
    /// For incremental decoding: KV-cache capacity in positions. Causal and prefix-LM attention
    /// ops then cache keys/values in the state region and the entry advances the session
    /// position.
    pub kv_capacity: Option<u32>,
}

/// The memory plan of one entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanSummary {
    /// Entry name.
    pub entry: String,
    /// Planned arena bytes.
    pub arena: usize,
    /// Most bytes live at once (no plan can do better).
    pub lower_bound: usize,
    /// Ops that run in place.
    pub in_place: usize,
    /// The arena the same plan would need with no op running in place (what in-place
    /// execution saves, e.g. in flows' coupling layers).
    pub arena_without_in_place: usize,
}

/// A written model.
pub struct Emitted {
    /// File bytes.
    pub bytes: Vec<u8>,
    /// One plan per entry.
    pub plans: Vec<PlanSummary>,
}

fn shape_of(t: &Tensor) -> Result<Shape> {
    let d: Vec<u32> = t.shape.iter().map(|&x| x as u32).collect();
    Shape::new(&d).map_err(|_| anyhow!("tensor '{}' has rank {} (mote supports up to 6)", t.name, t.shape.len()))
}

/// Everything that makes two weight tensors identical: bytes, dims, dtype, scales, quantisation.
type WeightKey = (Vec<u8>, Vec<u32>, u8, Vec<u8>, u32, i32);

/// Weight tensors, deduplicated by content so shared weights are stored once.
#[derive(Default)]
struct WeightPool {
    seen: HashMap<WeightKey, TensorId>,
}

impl WeightPool {
    fn add(&mut self, w: &mut Writer, name: &str, e: &Encoded) -> TensorId {
        let scales: Vec<u8> =
            e.channel_scales.iter().flat_map(|(_, s)| s.iter().flat_map(|x| x.to_le_bytes())).collect();
        let key = (
            e.bytes.clone(),
            e.desc.shape.dims().to_vec(),
            e.desc.dtype as u8,
            scales,
            e.desc.quant.scale.to_bits(),
            e.desc.quant.zero_point,
        );
        *self.seen.entry(key).or_insert_with(|| {
            w.tensor(&TensorSpec {
                desc: e.desc,
                name: Some(name),
                arena_offset: None,
                data: Some(&e.bytes),
                channel_scales: e.channel_scales.as_ref().map(|(a, s)| (*a, s.as_slice())),
            })
        })
    }
}

/// Inserts int8 conversions in front of MatMuls whose activation is stored wider.
fn insert_int8_converts(g: &mut Graph, st: &mut HashMap<TId, Storage>, ranges: Option<&Ranges>) -> Result<()> {
    let mut i = 0;
    while i < g.nodes.len() {
        if let IrOp::Rt(Op::MatMul { .. }) = g.nodes[i].op {
            let a = g.nodes[i].inputs[0];
            if st.get(&a).map(|s| s.dtype) != Some(DType::I8) {
                let src = &g.tensors[a];
                let r = ranges
                    .and_then(|r| r.get(&src.name))
                    .ok_or_else(|| anyhow!("no calibration range for '{}'", src.name))?;
                let q = g.add_tensor(Tensor { name: format!("{}.q8", src.name), konst: None, ..src.clone() });
                st.insert(q, Storage { dtype: DType::I8, quant: dtypes::activation_quant(r.0, r.1) });
                let node = Node {
                    name: format!("{}.quantize", g.nodes[i].name),
                    onnx_op: "QuantizeLinear".into(),
                    op: IrOp::Rt(Op::Unary(mote::ops::UnaryOp::Identity)),
                    inputs: vec![a],
                    output: q,
                };
                g.nodes[i].inputs[0] = q;
                g.nodes.insert(i, node);
                i += 1;
            }
        }
        i += 1;
    }
    Ok(())
}

/// Writes `entries` into one file with quantisation `mode` (int8 needs `ranges`).
pub fn emit(
    entries: &[EntrySpec],
    mode: QuantMode,
    ranges: Option<&Ranges>,
    metadata: &[(String, String)],
) -> Result<Emitted> {
    let mut w = Writer::new();
    let mut pool = WeightPool::default();
    let mut plans = Vec::new();
    let mut state_bytes = 0usize;
    let mut slots: HashMap<String, u32> = HashMap::new();
    let mut kv_slots: HashMap<u32, (usize, usize, usize)> = HashMap::new();
    let mut slot_storage: HashMap<String, Storage> = HashMap::new();
    let mut arena = 0usize;
    for spec in entries {
        let mut g = spec.graph.clone();
        let mut st = dtypes::assign(&g, mode, ranges, &slot_storage)?;
        if mode == QuantMode::Int8 {
            insert_int8_converts(&mut g, &mut st, ranges)?;
        }
        for n in g.nodes.iter().filter(|n| matches!(n.op, IrOp::Rt(Op::StoreState { .. }))) {
            if let Some(name) = crate::state_io::slot_name(&g, n) {
                slot_storage.entry(name).or_insert(st[&n.output]);
            }
        }
        let (offsets, p) = plan_entry(&g, &st)?;
        arena = arena.max(p.arena);
        let mut ids: HashMap<TId, TensorId> = HashMap::new();
        let mut placed: Vec<(TId, usize)> = offsets.into_iter().collect();
        placed.sort_unstable(); // tensor records in graph order, so the file is reproducible
        for (t, off) in placed {
            let s = st[&t];
            let desc = Desc { dtype: s.dtype, shape: shape_of(&g.tensors[t])?, quant: s.quant };
            ids.insert(
                t,
                w.tensor(&TensorSpec {
                    desc,
                    name: Some(&g.tensors[t].name),
                    arena_offset: Some(off as u32),
                    data: None,
                    channel_scales: None,
                }),
            );
        }
        let first = w.op_count();
        let mut layer = 0;
        for n in &g.nodes {
            let IrOp::Rt(mut op) = n.op.clone() else {
                bail!("node '{}' ({}) has no runtime op", n.name, n.onnx_op);
            };
            let mut inputs = Vec::new();
            for (k, &t) in n.inputs.iter().enumerate() {
                let id = match ids.get(&t) {
                    Some(&id) => id,
                    None => weight_input(&mut w, &mut pool, &g, n, k, &st, mode)?,
                };
                inputs.push(id);
            }
            if let (Op::MatMul { .. }, QuantMode::Int8) = (&op, mode) {
                if st[&n.output].dtype == DType::I8 {
                    let e = requant_for(&g, n, &st)?;
                    inputs.push(pool.add(&mut w, &format!("{}.requant", n.name), &e));
                }
            }
            if let Op::LoadState { offset } | Op::StoreState { offset } = &mut op {
                let name = crate::state_io::slot_name(&g, n).unwrap_or_else(|| n.name.clone());
                let bytes = (g.tensors[n.output].numel() * st[&n.output].dtype.size()).div_ceil(ALIGN) * ALIGN;
                *offset = *slots.entry(name.clone()).or_insert_with(|| {
                    let at = STATE_HEADER.max(state_bytes);
                    w.state_slot(&name, at as u32, bytes as u32);
                    state_bytes = at + bytes;
                    at as u32
                });
            }
            // Only self-attention over the decoded sequence is cached; cross-attention reads
            // the encoder's keys and values whole at every step.
            let cached = match (&mut op, spec.kv_capacity) {
                (Op::Attention(a), Some(c)) if matches!(a.mask, MaskMode::Causal | MaskMode::Prefix) => Some((a, c)),
                _ => None,
            };
            if let Some((a, capacity)) = cached {
                let width = a.heads as usize * a.head_dim as usize;
                let elem = st[&n.inputs[1]].dtype.size();
                let bytes = (capacity as usize * width * elem).div_ceil(ALIGN) * ALIGN;
                // Entries with caches (`prefill`, `decode_step`) share them, layer by layer.
                let (k_offset, v_offset, b) = *kv_slots.entry(layer).or_insert_with(|| {
                    let k_offset = STATE_HEADER.max(state_bytes);
                    let v_offset = k_offset + bytes;
                    w.state_slot(&format!("layer{layer}.k_cache"), k_offset as u32, bytes as u32);
                    w.state_slot(&format!("layer{layer}.v_cache"), v_offset as u32, bytes as u32);
                    state_bytes = v_offset + bytes;
                    (k_offset, v_offset, bytes)
                });
                if b != bytes {
                    bail!("entry '{}': layer {layer}'s KV cache differs in size from another entry's", spec.name);
                }
                a.cache = Some(KvCache { k_offset: k_offset as u32, v_offset: v_offset as u32, capacity });
                layer += 1;
            }
            w.op(&op, &inputs, ids[&n.output]);
        }
        let io = |ts: &[TId]| -> Result<Vec<TensorId>> {
            ts.iter()
                .map(|t| {
                    ids.get(t).copied().ok_or_else(|| {
                        anyhow!("entry '{}': input or output '{}' is a constant", spec.name, g.tensors[*t].name)
                    })
                })
                .collect()
        };
        let advance = spec.kv_capacity.map(|_| g.tensors[g.inputs[0]].shape.get(1).copied().unwrap_or(1) as u32);
        w.entry(&spec.name, first..w.op_count(), &io(&g.inputs)?, &io(&g.outputs)?, advance);
        plans.push(PlanSummary { entry: spec.name.clone(), ..p });
    }
    if let Some(bytes) = sampler_state_bytes(entries, metadata) {
        let at = STATE_HEADER.max(state_bytes);
        w.state_slot(mote::diffusion::SAMPLER_SLOT, at as u32, bytes as u32);
        state_bytes = at + bytes;
    }
    for (k, v) in metadata {
        if k == mote::diffusion::SCHEDULE_KEY {
            let schedule = schedule_tensor(&mut w, v)?;
            if let Some((_, grid)) = metadata.iter().find(|(k, _)| k == mote::diffusion::GRID_KEY) {
                check_grid(&schedule, grid)?;
            }
        } else {
            w.metadata(k, v);
        }
    }
    w.metadata("mote.quant", &format!("{mode:?}").to_lowercase());
    w.arena_bytes = arena as u32;
    w.state_bytes = state_bytes as u32;
    Ok(Emitted { bytes: w.finish(), plans })
}

/// Stores a diffusion schedule (the metadata's comma-separated ᾱ_t) as the f32 weight tensor
/// the runtime reads in place, after checking it as the runtime will; returns its bytes.
fn schedule_tensor(w: &mut Writer, text: &str) -> Result<Vec<u8>> {
    let key = mote::diffusion::SCHEDULE_KEY;
    let values = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<f32>().map_err(|_| anyhow!("metadata {key}: '{p}' is not a number")))
        .collect::<Result<Vec<f32>>>()?;
    let e = weights::f32s(&[values.len()], &values);
    mote::diffusion::Schedule::from_le_bytes(&e.bytes).map_err(|_| {
        anyhow!(
            "metadata {key}: a schedule needs 1 to {} values of ᾱ in (0, 1]; got {}",
            mote::diffusion::MAX_TIMESTEPS,
            values.len()
        )
    })?;
    // Written outside the weight pool: a graph constant with the same bytes keeps its own name.
    w.tensor(&TensorSpec {
        desc: e.desc,
        name: Some(mote::diffusion::SCHEDULE_TENSOR),
        arena_offset: None,
        data: Some(&e.bytes),
        channel_scales: None,
    });
    Ok(e.bytes)
}

/// Checks the explicit timestep grid of the metadata against the schedule (`bytes`, as
/// [`schedule_tensor`] stored it) as the runtime will read it.
fn check_grid(bytes: &[u8], grid: &str) -> Result<()> {
    let s = mote::diffusion::Schedule::from_le_bytes(bytes).map_err(|e| anyhow!("schedule: {e}"))?;
    s.with_grid(grid).map(|_| ()).map_err(|_| {
        anyhow!(
            "metadata {}: '{grid}' is not 1 to {} strictly decreasing timesteps below {}",
            mote::diffusion::GRID_KEY,
            mote::diffusion::MAX_GRID_STEPS,
            s.len()
        )
    })
}

/// Bytes of the diffusion sampler's state slot, for a model whose metadata carries a noise
/// schedule: [`mote::diffusion::SAMPLER_STATE_VALUES`] f32 values per value of the denoiser's
/// (`denoise`, else `forward`) first input.
fn sampler_state_bytes(entries: &[EntrySpec], metadata: &[(String, String)]) -> Option<usize> {
    metadata.iter().find(|(k, _)| k == mote::diffusion::SCHEDULE_KEY)?;
    let spec = ["denoise", "forward"].iter().find_map(|name| entries.iter().find(|e| e.name == *name))?;
    let x = spec.graph.tensors[*spec.graph.inputs.first()?].numel();
    Some((mote::diffusion::SAMPLER_STATE_VALUES * 4 * x).div_ceil(ALIGN) * ALIGN)
}

/// Plans the arena of one entry; returns tensor offsets and a summary.
fn plan_entry(g: &Graph, st: &HashMap<TId, Storage>) -> Result<(HashMap<TId, usize>, PlanSummary)> {
    let acts: Vec<TId> = (0..g.tensors.len())
        .filter(|&t| g.tensors[t].konst.is_none() && (g.inputs.contains(&t) || g.nodes.iter().any(|n| n.output == t)))
        .collect();
    let index: HashMap<TId, usize> = acts.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let mut reqs: Vec<BufferRequest> = acts
        .iter()
        .map(|&t| BufferRequest {
            size: g.tensors[t].numel() * st[&t].dtype.size(),
            first_use: 0,
            last_use: 0,
            inplace_of: None,
        })
        .collect();
    for (step, n) in g.nodes.iter().enumerate() {
        reqs[index[&n.output]].first_use = step;
        reqs[index[&n.output]].last_use = reqs[index[&n.output]].last_use.max(step);
        for t in &n.inputs {
            if let Some(&i) = index.get(t) {
                reqs[i].last_use = reqs[i].last_use.max(step);
            }
        }
    }
    for t in &g.outputs {
        reqs[index[t]].last_use = usize::MAX;
    }
    for (step, n) in g.nodes.iter().enumerate() {
        let IrOp::Rt(op) = &n.op else { continue };
        if !op.allows_in_place() {
            continue;
        }
        let candidate = n.inputs.iter().find(|t| {
            index.get(t).is_some_and(|&i| reqs[i].last_use == step && reqs[i].size == reqs[index[&n.output]].size)
                && !g.inputs.contains(t)
                && g.tensors[**t].shape.iter().product::<usize>() == g.tensors[n.output].numel()
        });
        if let Some(t) = candidate {
            reqs[index[&n.output]].inplace_of = Some(index[t]);
        }
    }
    let p = plan::plan(&reqs, ALIGN);
    plan::verify(&reqs, &p).map_err(|e| anyhow!("internal error: memory plan failed verification: {e}"))?;
    let separate: Vec<BufferRequest> = reqs.iter().map(|r| BufferRequest { inplace_of: None, ..r.clone() }).collect();
    let arena_without_in_place = plan::plan(&separate, ALIGN).arena_size;
    let offsets = acts.iter().enumerate().map(|(i, &t)| (t, p.offsets[i])).collect();
    Ok((
        offsets,
        PlanSummary {
            entry: String::new(),
            arena: p.arena_size,
            lower_bound: p.lower_bound,
            in_place: p.inplace_merged,
            arena_without_in_place,
        },
    ))
}

/// Encodes constant input `k` of node `n` according to its role and the quantisation mode.
fn weight_input(
    w: &mut Writer,
    pool: &mut WeightPool,
    g: &Graph,
    n: &Node,
    k: usize,
    st: &HashMap<TId, Storage>,
    mode: QuantMode,
) -> Result<TensorId> {
    let t = &g.tensors[n.inputs[k]];
    let c = t
        .konst
        .as_ref()
        .ok_or_else(|| anyhow!("node '{}': input '{}' is neither computed nor constant", n.name, t.name))?;
    let dims = &t.shape;
    let e = match (&n.op, k, mode) {
        _ if t.elem == Elem::Int => {
            let v: Vec<i32> = c.to_i64().iter().map(|&x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32).collect();
            weights::i32s(dims, &v)
        }
        (IrOp::Rt(Op::MatMul { .. }), 1, QuantMode::F16) | (IrOp::Rt(Op::Gather { .. }), 0, QuantMode::F16) => {
            weights::f16s(dims, &c.to_f32())
        }
        // Top-1 MoE expert matrices: f16 (the kernel's math is f32; it takes no int8 weights).
        (IrOp::Rt(Op::Moe { .. }), 3 | 5, QuantMode::F16 | QuantMode::Int8) => weights::f16s(dims, &c.to_f32()),
        (IrOp::Rt(Op::MatMul { .. }), 1, QuantMode::Int8) => weights::i8_per_channel(dims, &c.to_f32()),
        // Convolution kernels: f16 (the kernel's math is f32; it takes no int8 weights yet).
        (IrOp::Rt(Op::Conv(_)), 1, QuantMode::F16 | QuantMode::Int8) => weights::f16s(dims, &c.to_f32()),
        (IrOp::Rt(Op::MatMul { .. }), 2, QuantMode::Int8) => {
            let wt = &g.tensors[n.inputs[1]];
            let scales = weight_scales(wt)?;
            weights::int8_bias(&c.to_f32(), st[&n.inputs[0]].quant.scale, &scales)
        }
        (IrOp::Rt(Op::Gather { .. }), 0, QuantMode::Int8) => weights::i8_per_tensor(dims, &c.to_f32()),
        _ => weights::f32s(dims, &c.to_f32()),
    };
    if let Ok(shape) = shape_of(t) {
        debug_assert_eq!(shape.dims(), e.desc.shape.dims());
    }
    Ok(pool.add(w, &t.name, &e))
}

fn weight_scales(wt: &Tensor) -> Result<Vec<f32>> {
    let v =
        wt.konst.as_ref().map(Const::to_f32).ok_or_else(|| anyhow!("MatMul weight '{}' is not constant", wt.name))?;
    Ok(weights::i8_per_channel(&wt.shape, &v).channel_scales.map(|(_, s)| s).unwrap_or_default())
}

/// The requantisation table of an int8 MatMul with an int8 output.
fn requant_for(g: &Graph, n: &Node, st: &HashMap<TId, Storage>) -> Result<Encoded> {
    let scales = weight_scales(&g.tensors[n.inputs[1]])?;
    Ok(weights::requant_table(st[&n.inputs[0]].quant.scale, &scales, st[&n.output].quant.scale))
}
