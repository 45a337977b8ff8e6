//! The files training writes next to the model: `model.onnx`, the golden examples with candle's
//! logits (`golden/g{i}.{input}.npy`, `golden/g{i}.logits.npy`), checked against tract as they
//! are written, and the calibration inputs (`calib/s{i}.{input}.npy`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::array::Array;

/// Empties `golden/` and `calib/` in `out` and writes `onnx` as `model.onnx`; returns its path.
pub fn start(out: &Path, onnx: &[u8]) -> Result<PathBuf> {
    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let path = out.join("model.onnx");
    std::fs::write(&path, onnx)?;
    Ok(path)
}

/// Writes each of `inputs` as `{stem}.{name}.npy` in `out`, `names` giving the input names in
/// order.
pub fn write_inputs(out: &Path, stem: &str, names: &[&str], inputs: &[Array]) -> Result<()> {
    for (a, n) in inputs.iter().zip(names) {
        a.write_npy(&out.join(format!("{stem}.{n}.npy")))?;
    }
    Ok(())
}

/// Writes golden example `i` (its `inputs` and candle's `logits`) and runs the ONNX model at
/// `model` in tract on the inputs; returns the max-abs difference of tract's logits from
/// candle's.
pub fn write_golden(
    out: &Path,
    model: &Path,
    i: usize,
    names: &[&str],
    inputs: &[Array],
    logits: &Array,
) -> Result<f32> {
    write_inputs(out, &format!("golden/g{i}"), names, inputs)?;
    logits.write_npy(&out.join(format!("golden/g{i}.logits.npy")))?;
    let got = crate::verify::tract_reference(model, inputs)?.remove(0).to_f32();
    Ok(crate::family::max_abs(&logits.to_f32(), &got))
}

/// Writes calibration example `i` (its `inputs`).
pub fn write_calib(out: &Path, i: usize, names: &[&str], inputs: &[Array]) -> Result<()> {
    write_inputs(out, &format!("calib/s{i}"), names, inputs)
}
