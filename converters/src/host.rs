//! Running `.mote` files on the host with the runtime crate (for `mote run`, verification,
//! calibration and tests).

use crate::array::{Array, Data};
use anyhow::{anyhow, bail, Context, Result};
use mote::{DType, EntryId, Model, Session, TensorId};
use std::path::Path;

/// Reads and validates a `.mote` file, turning runtime errors into readable messages.
pub fn read_model(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Model::parse(&bytes).map_err(|e| anyhow!("{}: invalid .mote file: {e}", path.display()))?;
    Ok(bytes)
}

/// Describes input `k` of `entry` for error messages.
fn describe(model: &Model<'_>, id: TensorId) -> String {
    let t = model.tensor(id).ok();
    format!(
        "'{}' {:?} {}",
        model.tensor_name(id).unwrap_or("?"),
        t.map(|t| t.desc.shape.dims().to_vec()).unwrap_or_default(),
        t.map(|t| t.desc.dtype.name()).unwrap_or("?")
    )
}

/// Copies `inputs` into the session's entry inputs.
pub fn set_inputs(session: &mut Session<'_, '_>, entry: EntryId, inputs: &[Array]) -> Result<()> {
    let model = *session.model();
    let n = model.entry(entry)?.n_inputs as usize;
    if inputs.len() != n {
        bail!("the entry takes {n} input(s), {} given", inputs.len());
    }
    for (k, a) in inputs.iter().enumerate() {
        let id = model.entry_input(entry, k)?;
        let t = model.tensor(id)?;
        let want: Vec<usize> = t.desc.shape.dims().iter().map(|&d| d as usize).collect();
        if a.shape != want {
            bail!("input {k} {} was given shape {:?}", describe(&model, id), a.shape);
        }
        match (&a.data, t.desc.dtype) {
            (Data::I64(v), DType::I32) => {
                let v: Vec<i32> = v
                    .iter()
                    .map(|&x| i32::try_from(x).map_err(|_| anyhow!("input {k}: value {x} does not fit in i32")))
                    .collect::<Result<_>>()?;
                session.set_input_i32(entry, k, &v)?;
            }
            (_, DType::I32) => bail!("input {k} {} needs integers, got floats", describe(&model, id)),
            (_, _) => session.set_input_f32(entry, k, &a.to_f32())?,
        }
    }
    Ok(())
}

/// The inputs of entry `to` picked by tensor name from `inputs`, the inputs of entry `from`
/// (e.g. an `encode` entry's source inputs out of `forward`'s).
pub fn inputs_by_name(model: &Model<'_>, from: EntryId, to: EntryId, inputs: &[Array]) -> Result<Vec<Array>> {
    let names = |e: EntryId| -> Result<Vec<Option<&str>>> {
        (0..model.entry(e)?.n_inputs as usize).map(|k| Ok(model.tensor_name(model.entry_input(e, k)?))).collect()
    };
    let have = names(from)?;
    names(to)?
        .into_iter()
        .map(|want| {
            let k = have.iter().position(|h| h.is_some() && *h == want);
            k.and_then(|k| inputs.get(k).cloned())
                .ok_or_else(|| anyhow!("no input named '{}' to pass on", want.unwrap_or("?")))
        })
        .collect()
}

/// Reads every output of `entry` as f32 arrays.
pub fn outputs(session: &Session<'_, '_>, entry: EntryId) -> Result<Vec<Array>> {
    let model = *session.model();
    let n = model.entry(entry)?.n_outputs as usize;
    (0..n)
        .map(|k| {
            let t = model.tensor(model.entry_output(entry, k)?)?;
            let shape: Vec<usize> = t.desc.shape.dims().iter().map(|&d| d as usize).collect();
            let mut v = vec![0f32; t.desc.shape.numel()];
            session.output_f32(entry, k, &mut v)?;
            Ok(Array::f32(shape, v))
        })
        .collect()
}

/// Buffers sized for a model.
pub struct Memory {
    /// Arena bytes.
    pub arena: Vec<u8>,
    /// State bytes.
    pub state: Vec<u8>,
}

impl Memory {
    /// Exactly what `model` asks for.
    pub fn for_model(model: &Model<'_>) -> Self {
        Memory { arena: vec![0; model.arena_bytes()], state: vec![0; model.state_bytes()] }
    }
}

/// The entry point `name`, or an error listing the model's entry points.
pub fn entry_point(model: &Model<'_>, name: &str) -> Result<EntryId> {
    model.entry_by_name(name).map_err(|_| {
        let names: Vec<&str> =
            (0..model.entry_count() as u32).filter_map(|e| model.entry_name(EntryId(e)).ok()).collect();
        anyhow!("the model has no entry point '{name}' (it has: {})", names.join(", "))
    })
}

/// Runs `entry` of a model once on `inputs`, returning its outputs.
pub fn run(bytes: &[u8], entry: &str, inputs: &[Array]) -> Result<Vec<Array>> {
    run_observed(bytes, entry, inputs, |_, _| {})
}

/// Like [`run`], calling `observe(tensor name, values)` after each op.
pub fn run_observed(
    bytes: &[u8],
    entry: &str,
    inputs: &[Array],
    observe: impl FnMut(&str, &[f32]),
) -> Result<Vec<Array>> {
    run_sequence_observed(bytes, entry, std::slice::from_ref(&inputs.to_vec()), observe)?
        .pop()
        .ok_or_else(|| anyhow!("no outputs"))
}

/// Runs `entry` once per input set, in order, in one session (so state such as
/// Transformer-XL memory carries from one call to the next); returns each call's outputs.
pub fn run_sequence_observed(
    bytes: &[u8],
    entry: &str,
    calls: &[Vec<Array>],
    mut observe: impl FnMut(&str, &[f32]),
) -> Result<Vec<Vec<Array>>> {
    let model = Model::parse(bytes)?;
    let e = entry_point(&model, entry)?;
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let mut values = Vec::new();
    let mut all = Vec::with_capacity(calls.len());
    for inputs in calls {
        set_inputs(&mut session, e, inputs)?;
        session.run_observed(e, |_, id, view| {
            values.clear();
            values.extend((0..view.desc.shape.numel()).map(|i| view.get(i)));
            observe(model.tensor_name(id).unwrap_or(""), &values);
        })?;
        all.push(outputs(&session, e)?);
    }
    Ok(all)
}
