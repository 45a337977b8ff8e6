//! Per-op reports read back from a `.mote` file: shapes, MACs, weight bytes, live arena bytes.

use anyhow::Result;
use mote::format::{EntryId, Storage};
use mote::kernels;
use mote::Model;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write;

/// One op of one entry point.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    /// Entry point.
    pub entry: String,
    /// Op index within the file.
    pub index: usize,
    /// Op name.
    pub op: String,
    /// Output tensor name.
    pub output: String,
    /// Input shapes with dtypes.
    pub inputs: Vec<String>,
    /// Output shape with dtype.
    pub output_shape: String,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Weight bytes first used by this op (shared weights count once).
    pub weight_bytes: usize,
    /// Arena bytes live while this op runs.
    pub arena_live: usize,
}

/// Totals for one entry point.
#[derive(Debug, Clone, Serialize)]
pub struct EntryTotals {
    /// Entry point.
    pub entry: String,
    /// Ops.
    pub ops: usize,
    /// MACs per run.
    pub macs: u64,
    /// Most arena bytes live at once: the lower bound for any plan.
    pub peak_live: usize,
}

/// Everything `mote inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// File bytes (flash).
    pub file_bytes: usize,
    /// Weight section bytes.
    pub weight_bytes: usize,
    /// Arena bytes the model asks for.
    pub arena_bytes: usize,
    /// State bytes (KV caches).
    pub state_bytes: usize,
    /// Metadata key/values.
    pub metadata: Vec<(String, String)>,
    /// Per-op rows.
    pub ops: Vec<OpRow>,
    /// Per-entry totals.
    pub entries: Vec<EntryTotals>,
    /// What the converter wants the user to know (the `mote.note` metadata), e.g. attention
    /// that runs unfused and why.
    pub notes: Vec<String>,
    /// Diffusion models: the schedule, parameterisation, step counts and sampler state.
    pub diffusion: Option<String>,
}

fn fmt_desc(d: &mote::Desc) -> String {
    format!("{}{:?}", d.dtype.name(), d.shape.dims())
}

/// Builds the report of a parsed model.
pub fn inspect(model: &Model<'_>) -> Result<Inspection> {
    let mut rows = Vec::new();
    let mut entries = Vec::new();
    let mut weights_seen = HashSet::new();
    for e in 0..model.entry_count() as u32 {
        let info = model.entry(EntryId(e))?;
        let name = model.entry_name(EntryId(e))?.to_string();
        let ops: Vec<usize> = (info.first_op as usize..(info.first_op + info.n_ops) as usize).collect();
        // Liveness of arena tensors within this entry, in op steps.
        let mut first = std::collections::HashMap::new();
        let mut last = std::collections::HashMap::new();
        for k in 0..info.n_inputs as usize {
            first.insert(model.entry_input(EntryId(e), k)?.0, 0usize);
        }
        for (step, &i) in ops.iter().enumerate() {
            let op = model.op(i)?;
            for k in 0..op.n_inputs {
                last.insert(model.op_input(&op, k)?.0, step);
            }
            let out = model.op_output(&op)?.0;
            first.entry(out).or_insert(step);
            last.entry(out).or_insert(step);
        }
        for k in 0..info.n_outputs as usize {
            last.insert(model.entry_output(EntryId(e), k)?.0, usize::MAX);
        }
        let mut totals = EntryTotals { entry: name.clone(), ops: ops.len(), macs: 0, peak_live: 0 };
        for (step, &i) in ops.iter().enumerate() {
            let op = model.op(i)?;
            let out_id = model.op_output(&op)?;
            let out = model.tensor(out_id)?;
            let mut descs = Vec::new();
            let mut wbytes = 0;
            for k in 0..op.n_inputs {
                let id = model.op_input(&op, k)?;
                let t = model.tensor(id)?;
                descs.push(t.desc);
                if t.storage == Storage::Weights && weights_seen.insert(id.0) {
                    wbytes += t.byte_len as usize;
                }
            }
            let live: usize = first
                .iter()
                .filter(|(t, &f)| f <= step && last.get(*t).copied().unwrap_or(f) >= step)
                .filter_map(|(t, _)| model.tensor(mote::TensorId(*t)).ok())
                .filter(|t| t.storage == Storage::Arena)
                .map(|t| (t.byte_len as usize).div_ceil(16) * 16)
                .sum::<usize>();
            // In-place ops share one buffer: count it once.
            let shared: usize = (0..op.n_inputs)
                .filter_map(|k| model.tensor(model.op_input(&op, k).ok()?).ok())
                .filter(|t| {
                    t.storage == Storage::Arena && t.range() == out.range() && first.get(&out_id.0) == Some(&step)
                })
                .map(|t| (t.byte_len as usize).div_ceil(16) * 16)
                .sum();
            let live = live - shared.min(live);
            let macs = kernels::macs(&op.op, &descs, &out.desc);
            totals.macs += macs;
            totals.peak_live = totals.peak_live.max(live);
            rows.push(OpRow {
                entry: name.clone(),
                index: i,
                op: op.op.name().to_string(),
                output: model.tensor_name(out_id).unwrap_or("").to_string(),
                inputs: descs.iter().map(fmt_desc).collect(),
                output_shape: fmt_desc(&out.desc),
                macs,
                weight_bytes: wbytes,
                arena_live: live,
            });
        }
        entries.push(totals);
    }
    let metadata: Vec<(String, String)> = (0..model.metadata_count())
        .filter_map(|i| model.metadata_entry(i).ok())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let notes = metadata.iter().filter(|(k, _)| k == crate::passes::NOTE_KEY).map(|(_, v)| v.clone()).collect();
    Ok(Inspection {
        file_bytes: model.bytes().len(),
        weight_bytes: model.weight_bytes(),
        arena_bytes: model.arena_bytes(),
        state_bytes: model.state_bytes(),
        metadata,
        ops: rows,
        entries,
        notes,
        diffusion: diffusion_summary(model),
    })
}

/// One line on a diffusion model's sampling setup (None for other models).
fn diffusion_summary(model: &Model<'_>) -> Option<String> {
    use mote::diffusion::{Schedule, NULL_CLASS_KEY, PREDICTION_KEY, SAMPLER_SLOT};
    let s = Schedule::of_model(model).ok()?;
    let conditioning = match model.metadata(NULL_CLASS_KEY) {
        Some(null) => format!("class-conditional (null class {null})"),
        None => "unconditional".to_string(),
    };
    let slot = (0..model.state_slot_count())
        .filter_map(|i| model.state_slot(i).ok())
        .find(|slot| model.string(slot.name).ok() == Some(SAMPLER_SLOT))
        .map_or(0, |slot| slot.len as usize);
    Some(format!(
        "{} timesteps (ᾱ {:.4} → {:.3e}), predicts {}, samples with {} steps, {conditioning}; sampler state {}",
        s.len(),
        s.alpha_bar(0),
        s.alpha_bar(s.len() as isize - 1),
        model.metadata(PREDICTION_KEY).unwrap_or("epsilon"),
        s.step_counts(),
        bytes(slot)
    ))
}

/// Human-readable byte counts.
pub fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// The report as a text table.
pub fn render(r: &Inspection) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4}  {:<12} {:<11} {:<34} {:<16} {:>10} {:>10} {:>10}",
        "#", "entry", "op", "output", "shape", "MACs", "weights", "arena live"
    );
    for row in &r.ops {
        let out: String = row.output.chars().take(34).collect();
        let _ = writeln!(
            s,
            "{:>4}  {:<12} {:<11} {:<34} {:<16} {:>10} {:>10} {:>10}",
            row.index,
            row.entry,
            row.op,
            out,
            row.output_shape,
            row.macs,
            bytes(row.weight_bytes),
            bytes(row.arena_live)
        );
    }
    let _ = writeln!(s);
    for e in &r.entries {
        let _ = writeln!(
            s,
            "entry {:<12} {:>4} ops  {:>12} MACs  peak live {:>10} (lower bound)",
            e.entry,
            e.ops,
            e.macs,
            bytes(e.peak_live)
        );
    }
    let _ = writeln!(
        s,
        "file {}  (weights {})   arena {}   state {}",
        bytes(r.file_bytes),
        bytes(r.weight_bytes),
        bytes(r.arena_bytes),
        bytes(r.state_bytes)
    );
    if let Some(d) = &r.diffusion {
        let _ = writeln!(s, "diffusion: {d}");
    }
    for note in &r.notes {
        let _ = writeln!(s, "note: {note}");
    }
    s
}
