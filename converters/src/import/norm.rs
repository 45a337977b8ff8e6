//! Lowers ONNX `InstanceNormalization` and `GroupNormalization` to the runtime's `GroupNorm`.
//!
//! - `InstanceNormalization(x [N, C, ..], scale [C], B [C])` is GroupNorm with one group per
//!   channel. PyTorch's TorchScript exporter writes `nn.GroupNorm` as Reshape `[N, G, -1]` →
//!   InstanceNormalization(ones, zeros) → Reshape back → Mul γ → Add β; `passes::group_norm`
//!   fuses that chain into one GroupNorm over `x`.
//! - `GroupNormalization(x, scale, bias)` with `num_groups`: before opset 21 `scale`/`bias` are
//!   per group (`[G]`), from opset 21 per channel (`[C]`). The two forms coincide when G = C and
//!   are told apart by the parameters' length otherwise; per-group constants are repeated over
//!   each group's channels.

use super::attrs;
use crate::ir::{Const, Graph, IrOp, Node, TId};
use anyhow::{anyhow, bail, Result};
use mote::Op;
use tract_onnx::pb::NodeProto;

/// `x [N, C, ..]`'s channel count, or an error naming the node.
fn channels(g: &Graph, op_type: &str, name: &str, x: TId) -> Result<usize> {
    let shape = &g.tensors[x].shape;
    match shape.get(1) {
        Some(&c) if c > 0 => Ok(c),
        _ => bail!(
            "unsupported op '{op_type}' at node '{name}': the input {shape:?} has no channel axis (need [N, C, ..])"
        ),
    }
}

/// The op's epsilon, refusing what the runtime would reject.
fn epsilon(node: &NodeProto, op_type: &str, name: &str) -> Result<f32> {
    let eps = attrs::float(node, "epsilon", 1e-5);
    if !eps.is_finite() || eps < 0.0 {
        bail!("node '{name}' ({op_type}): epsilon {eps} must be finite and not negative");
    }
    Ok(eps)
}

fn push(g: &mut Graph, node: &NodeProto, name: &str, op: Op, inputs: Vec<TId>, out: TId) -> TId {
    g.nodes.push(Node { name: name.into(), onnx_op: node.op_type.clone(), op: IrOp::Rt(op), inputs, output: out });
    out
}

/// `InstanceNormalization`: GroupNorm with `groups = C` and the per-channel scale and bias.
pub fn lower_instance_norm(
    g: &mut Graph,
    node: &NodeProto,
    name: &str,
    inputs: &[Option<TId>],
    out: TId,
) -> Result<TId> {
    let op_type = "InstanceNormalization";
    let get = |i: usize| {
        inputs.get(i).copied().flatten().ok_or_else(|| anyhow!("node '{name}' ({op_type}): missing input {i}"))
    };
    let (x, scale, bias) = (get(0)?, get(1)?, get(2)?);
    let c = channels(g, op_type, name, x)?;
    if g.tensors[x].shape.len() < 3 {
        bail!("unsupported op '{op_type}' at node '{name}': the input must be [N, C, D1, ..] (rank 3 or more)");
    }
    for (what, t) in [("scale", scale), ("B", bias)] {
        if g.tensors[t].shape != [c] {
            bail!(
                "node '{name}' ({op_type}): {what} has shape {:?}, expected [{c}] (one value per channel)",
                g.tensors[t].shape
            );
        }
    }
    let groups = u16::try_from(c)
        .map_err(|_| anyhow!("node '{name}' ({op_type}): {c} channels are more than mote's 65535 groups"))?;
    let eps = epsilon(node, op_type, name)?;
    Ok(push(g, node, name, Op::GroupNorm { eps, groups }, vec![x, scale, bias], out))
}

/// `GroupNormalization` (opset 18 per-group or opset 21 per-channel parameters).
pub fn lower_group_norm(g: &mut Graph, node: &NodeProto, name: &str, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let op_type = "GroupNormalization";
    let get = |i: usize| {
        inputs.get(i).copied().flatten().ok_or_else(|| anyhow!("node '{name}' ({op_type}): missing input {i}"))
    };
    let (x, scale, bias) = (get(0)?, get(1)?, get(2)?);
    let c = channels(g, op_type, name, x)?;
    let groups = attrs::int(node, "num_groups", 0);
    if groups <= 0 || !c.is_multiple_of(groups as usize) {
        bail!("node '{name}' ({op_type}): {c} channels do not split into num_groups = {groups} equal groups");
    }
    let groups = groups as usize;
    let groups16 =
        u16::try_from(groups).map_err(|_| anyhow!("node '{name}' ({op_type}): {groups} groups are more than 65535"))?;
    let eps = epsilon(node, op_type, name)?;
    let mut params = Vec::new();
    for (what, t) in [("scale", scale), ("bias", bias)] {
        let len = g.tensors[t].numel();
        let shape = g.tensors[t].shape.clone();
        params.push(match (len, g.konst(t)) {
            (l, _) if l == c && shape.len() == 1 => t,
            (l, Some(v)) if l == groups && shape.len() == 1 => {
                // Opset 18: one value per group, the same for each of its channels.
                let per_group = Const::to_f32(v);
                let expanded: Vec<f32> = (0..c).map(|ch| per_group[ch / (c / groups)]).collect();
                let tname = format!("{}.per_channel", g.tensors[t].name);
                g.add_const_f32(&tname, vec![c], expanded)
            }
            (l, None) if l == groups => {
                bail!("node '{name}' ({op_type}): per-group {what} must be a constant (mote repeats it per channel)")
            }
            _ => bail!(
                "node '{name}' ({op_type}): {what} has shape {shape:?}; expected [{groups}] (opset 18, per group) or [{c}] \
                 (opset 21, per channel)"
            ),
        });
    }
    Ok(push(g, node, name, Op::GroupNorm { eps, groups: groups16 }, vec![x, params[0], params[1]], out))
}
