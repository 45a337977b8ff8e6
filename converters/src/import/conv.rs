//! Lowers ONNX `Conv`, `ConvTranspose`, `BatchNormalization` (inference form) and nearest
//! `Resize` to runtime ops. Patch convolutions (kernel = stride, no padding) keep their MatMul lowering in
//! `lower.rs`, which has an int8 path; every other 2-D convolution becomes the runtime's
//! `Conv` op. Batch-norm becomes a per-channel `Mul` + `Add`, which the `bn_fold` pass folds
//! into the convolution before it when there is one.

use super::attrs;
use crate::ir::{Const, Graph, IrOp, Node, TId};
use anyhow::{anyhow, bail, Result};
use mote::ops::{BinaryOp, Conv};
use mote::Op;
use tract_onnx::pb::NodeProto;

fn small(name: &str, what: &str, v: i64) -> Result<u8> {
    u8::try_from(v).map_err(|_| anyhow!("node '{name}': {what} {v} is outside 0..=255"))
}

fn pair(name: &str, what: &str, v: Option<Vec<i64>>, default: i64) -> Result<[u8; 2]> {
    match v.as_deref() {
        None => Ok([small(name, what, default)?; 2]),
        Some([a, b]) => Ok([small(name, what, *a)?, small(name, what, *b)?]),
        Some(other) => bail!("node '{name}': {what} {other:?} is not 2-D (mote runs 2-D convolutions)"),
    }
}

/// A general 2-D `Conv` (`transposed: false`) or `ConvTranspose` into `out`.
pub fn lower_conv(
    g: &mut Graph,
    node: &NodeProto,
    name: &str,
    inputs: &[Option<TId>],
    out: TId,
    transposed: bool,
) -> Result<TId> {
    let op_type = if transposed { "ConvTranspose" } else { "Conv" };
    let (Some(x), Some(w)) = (inputs.first().copied().flatten(), inputs.get(1).copied().flatten()) else {
        bail!("node '{name}' ({op_type}): needs an input and a weight");
    };
    if g.konst(w).is_none() {
        bail!("unsupported op '{op_type}' at node '{name}': the weight is computed at run time, mote needs a constant");
    }
    if g.tensors[x].shape.len() != 4 || g.tensors[w].shape.len() != 4 {
        bail!("unsupported op '{op_type}' at node '{name}': only 2-D convolutions ([N, C, H, W]) are supported");
    }
    let auto_pad = attrs::string(node, "auto_pad", "NOTSET");
    if !(auto_pad == "NOTSET" || auto_pad == "VALID") {
        bail!("node '{name}' ({op_type}): auto_pad {auto_pad} is not supported; export with explicit pads");
    }
    let pads = match attrs::ints(node, "pads").as_deref() {
        None => [0; 4],
        // ONNX order: (top, left, bottom, right).
        Some([t, l, b, r]) => {
            [small(name, "pad", *t)?, small(name, "pad", *l)?, small(name, "pad", *b)?, small(name, "pad", *r)?]
        }
        Some(p) => bail!("node '{name}' ({op_type}): pads {p:?} are not 2-D"),
    };
    let group = attrs::int(node, "group", 1);
    let conv = Conv {
        transposed,
        has_bias: inputs.get(2).copied().flatten().is_some(),
        stride: pair(name, "stride", attrs::ints(node, "strides"), 1)?,
        dilation: pair(name, "dilation", attrs::ints(node, "dilations"), 1)?,
        pads,
        groups: u16::try_from(group).map_err(|_| anyhow!("node '{name}': group {group} is out of range"))?,
    };
    let mut ins = vec![x, w];
    if let Some(b) = inputs.get(2).copied().flatten() {
        if g.konst(b).is_none() {
            bail!("node '{name}' ({op_type}): the bias must be a constant");
        }
        ins.push(b);
    }
    g.nodes.push(Node {
        name: name.into(),
        onnx_op: op_type.into(),
        op: IrOp::Rt(Op::Conv(conv)),
        inputs: ins,
        output: out,
    });
    Ok(out)
}

/// Inference batch-norm `y = (x − mean) / √(var + ε) · γ + β` over axis 1, as
/// `y = x · s + t` with constants `s = γ / √(var + ε)` and `t = β − mean · s` shaped to
/// broadcast over the trailing axes.
pub fn lower_batch_norm(g: &mut Graph, node: &NodeProto, name: &str, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let get = |i: usize| -> Result<Vec<f32>> {
        let t = inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("node '{name}' (BatchNormalization): missing input {i}"))?;
        g.konst(t)
            .map(Const::to_f32)
            .ok_or_else(|| anyhow!("node '{name}' (BatchNormalization): input {i} must be a constant (inference form)"))
    };
    let x = inputs.first().copied().flatten().ok_or_else(|| anyhow!("node '{name}': missing input"))?;
    let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let eps = attrs::float(node, "epsilon", 1e-5);
    let rank = g.tensors[x].shape.len();
    let c = *g.tensors[x]
        .shape
        .get(1)
        .ok_or_else(|| anyhow!("node '{name}' (BatchNormalization): input of rank {rank}"))?;
    if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != c) {
        bail!("node '{name}' (BatchNormalization): parameters must have {c} values, one per channel");
    }
    let s: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let t: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * s[i]).collect();
    let shape: Vec<usize> = std::iter::once(c).chain(std::iter::repeat_n(1, rank.saturating_sub(2))).collect();
    let base = g.tensors[out].name.clone();
    let s = g.add_const_f32(&format!("{base}.bn_scale"), shape.clone(), s);
    let t = g.add_const_f32(&format!("{base}.bn_shift"), shape, t);
    let scaled =
        g.add_tensor(crate::ir::Tensor { name: format!("{base}.bn_scaled"), konst: None, ..g.tensors[out].clone() });
    let mul = IrOp::Rt(Op::Binary(BinaryOp::Mul));
    let add = IrOp::Rt(Op::Binary(BinaryOp::Add));
    g.nodes.push(Node {
        name: format!("{name}:scale"),
        onnx_op: "BatchNormalization".into(),
        op: mul,
        inputs: vec![x, s],
        output: scaled,
    });
    g.nodes.push(Node {
        name: format!("{name}:shift"),
        onnx_op: "BatchNormalization".into(),
        op: add,
        inputs: vec![scaled, t],
        output: out,
    });
    Ok(out)
}

/// `Resize` (or the older `Upsample`) in nearest mode by whole factors along H and W, in a
/// coordinate mode where that repeats every pixel: `asymmetric` + `floor` (PyTorch's
/// `nn.Upsample(scale_factor=k)`) or `half_pixel` with rounding to nearest.
pub fn lower_resize(g: &mut Graph, node: &NodeProto, name: &str, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let op_type = node.op_type.as_str();
    let x = inputs.first().copied().flatten().ok_or_else(|| anyhow!("node '{name}' ({op_type}): missing input"))?;
    let mode = attrs::string(node, "mode", "nearest");
    if mode != "nearest" {
        bail!("unsupported op '{op_type}' at node '{name}': mode '{mode}' (mote upsamples in nearest mode only)");
    }
    let coords = attrs::string(node, "coordinate_transformation_mode", "half_pixel");
    let rounding = attrs::string(node, "nearest_mode", "round_prefer_floor");
    let repeats = match coords.as_str() {
        "asymmetric" => rounding == "floor",
        "half_pixel" | "pytorch_half_pixel" => rounding.starts_with("round_prefer"),
        _ => false,
    };
    let (xs, ys) = (g.tensors[x].shape.clone(), g.tensors[out].shape.clone());
    let factor = |i: usize| (ys[i] % xs[i] == 0).then(|| ys[i] / xs[i]).and_then(|f| u8::try_from(f).ok());
    let scale = match (xs.len(), ys.len()) {
        (4, 4) if xs[..2] == ys[..2] => factor(2).zip(factor(3)),
        _ => None,
    };
    match scale {
        Some((sh, sw)) if repeats || op_type == "Upsample" => {
            g.nodes.push(Node {
                name: name.into(),
                onnx_op: op_type.into(),
                op: IrOp::Rt(Op::Upsample { scale: [sh, sw] }),
                inputs: vec![x],
                output: out,
            });
            Ok(out)
        }
        _ => bail!(
            "unsupported op '{op_type}' at node '{name}': mote upsamples [N, C, H, W] by whole factors in nearest mode \
             that repeats pixels (asymmetric + floor, or half_pixel); got {xs:?} -> {ys:?}, {coords} + {rounding}"
        ),
    }
}
