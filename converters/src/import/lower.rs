//! Maps one ONNX node to runtime ops (after constant folding has removed what it could).

use super::attrs;
use crate::ir::{Const, Elem, Graph, IrOp, Node, TId, Tensor};
use anyhow::{anyhow, bail, Result};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;
use tract_onnx::pb::NodeProto;

/// Lowers output `k` of `node` into `g`, writing into the pre-made tensor `out`.
/// Returns the tensor that holds the result (an input, for ops that only relabel).
pub fn lower(g: &mut Graph, node: &NodeProto, name: &str, k: usize, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let op_type = node.op_type.as_str();
    let input = |i: usize| -> Result<TId> {
        inputs.get(i).copied().flatten().ok_or_else(|| anyhow!("node '{name}' ({op_type}): missing input {i}"))
    };
    let rank = |t: TId, g: &Graph| g.tensors[t].shape.len();
    let push = |g: &mut Graph, op: IrOp, ins: Vec<TId>| -> Result<TId> {
        g.nodes.push(Node { name: name.to_string(), onnx_op: op_type.to_string(), op, inputs: ins, output: out });
        Ok(out)
    };
    let rt = IrOp::Rt;
    match op_type {
        "Identity" | "Dropout" => input(0),
        "Cast" | "CastLike" => {
            let x = input(0)?;
            if op_type == "Cast" && attrs::int(node, "to", 1) == 9 {
                // A cast to bool is `x != 0`, which no runtime op computes: only attention-mask
                // fusion consumes it.
                push(g, IrOp::PatternOnly, vec![x])
            } else if g.tensors[x].elem == g.tensors[out].elem {
                Ok(x)
            } else {
                push(g, rt(Op::Unary(UnaryOp::Identity)), vec![x])
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" => {
            let op = match op_type {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                "Div" => BinaryOp::Div,
                "Pow" => BinaryOp::Pow,
                "Max" => BinaryOp::Max,
                _ => BinaryOp::Min,
            };
            if node.input.len() != 2 {
                bail!("node '{name}' ({op_type}): only the two-input form is supported");
            }
            push(g, rt(Op::Binary(op)), vec![input(0)?, input(1)?])
        }
        "Relu" | "Tanh" | "Sigmoid" | "Erf" | "Sqrt" | "Exp" | "Neg" | "Abs" | "Reciprocal" | "Gelu" | "Sin"
        | "Cos" | "Log" | "Softplus" => {
            let op = match op_type {
                "Relu" => UnaryOp::Relu,
                "Tanh" => UnaryOp::Tanh,
                "Sigmoid" => UnaryOp::Sigmoid,
                "Erf" => UnaryOp::Erf,
                "Sqrt" => UnaryOp::Sqrt,
                "Exp" => UnaryOp::Exp,
                "Neg" => UnaryOp::Neg,
                "Abs" => UnaryOp::Abs,
                "Reciprocal" => UnaryOp::Reciprocal,
                "Sin" => UnaryOp::Sin,
                "Cos" => UnaryOp::Cos,
                "Log" => UnaryOp::Log,
                "Softplus" => UnaryOp::Softplus,
                _ if attrs::string(node, "approximate", "none") == "tanh" => UnaryOp::GeluTanh,
                _ => UnaryOp::Gelu,
            };
            push(g, rt(Op::Unary(op)), vec![input(0)?])
        }
        "Softmax" => {
            let x = input(0)?;
            let axis = attrs::axis(node, attrs::int(node, "axis", -1), rank(x, g))?;
            push(g, rt(Op::Softmax { axis: axis as u8 }), vec![x])
        }
        "LayerNormalization" => {
            let x = input(0)?;
            let r = rank(x, g);
            if attrs::axis(node, attrs::int(node, "axis", -1), r)? != r - 1 {
                bail!("node '{name}' (LayerNormalization): only normalising the last axis is supported");
            }
            let eps = attrs::float(node, "epsilon", 1e-5);
            let mut ins = vec![x, input(1)?];
            if let Some(Some(b)) = inputs.get(2) {
                ins.push(*b);
            }
            let has_beta = ins.len() == 3;
            push(g, rt(Op::LayerNorm { eps, has_beta }), ins)
        }
        "MatMul" => {
            let (a, b) = (input(0)?, input(1)?);
            match g.konst(b) {
                Some(c) if rank(b, g) == 2 && rank(a, g) >= 1 => {
                    let (kd, n) = (g.tensors[b].shape[0], g.tensors[b].shape[1]);
                    let w = transpose_2d(&c.to_f32(), kd, n);
                    let wt = g.add_const_f32(&format!("{}.weight_t", g.tensors[b].name), vec![n, kd], w);
                    push(g, rt(Op::MatMul { has_bias: false }), vec![a, wt])
                }
                _ => push(g, rt(Op::BatchMatMul), vec![a, b]),
            }
        }
        "Gemm" => lower_gemm(g, node, name, inputs, out),
        "Conv" => lower_patch_conv(g, node, name, inputs, out),
        "ConvTranspose" => super::conv::lower_conv(g, node, name, inputs, out, true),
        "BatchNormalization" => super::conv::lower_batch_norm(g, node, name, inputs, out),
        "Resize" | "Upsample" => super::conv::lower_resize(g, node, name, inputs, out),
        "InstanceNormalization" => super::norm::lower_instance_norm(g, node, name, inputs, out),
        "GroupNormalization" => super::norm::lower_group_norm(g, node, name, inputs, out),
        "Where" => push(g, IrOp::PatternOnly, vec![input(0)?, input(1)?, input(2)?]),
        "Expand" => push(g, IrOp::PatternOnly, vec![input(0)?]),
        // Only inside a top-1 MoE router (`passes::moe` fuses it or lowers it densely).
        "ReduceMax" | "Equal" => push(g, IrOp::PatternOnly, inputs.iter().flatten().copied().collect()),
        "Gather" => {
            let (data, idx) = (input(0)?, input(1)?);
            let axis = attrs::axis(node, attrs::int(node, "axis", 0), rank(data, g))?;
            push(g, rt(Op::Gather { axis: axis as u8 }), vec![data, idx])
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => push(g, rt(Op::Reshape), vec![input(0)?]),
        "Transpose" => {
            let x = input(0)?;
            let r = rank(x, g);
            let perm = attrs::ints(node, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
            let mut p = [0u8; mote::tensor::MAX_RANK];
            for (i, &v) in perm.iter().enumerate().take(p.len()) {
                p[i] = v as u8;
            }
            push(g, rt(Op::Transpose { perm: p }), vec![x])
        }
        "Concat" => {
            let ins: Vec<TId> = inputs.iter().flatten().copied().collect();
            let axis = attrs::axis(node, attrs::int(node, "axis", 0), rank(out, g))?;
            push(g, rt(Op::Concat { axis: axis as u8 }), ins)
        }
        "Slice" => lower_slice(g, node, name, inputs, out),
        "Split" => lower_split(g, node, name, k, inputs, out),
        "ReduceMean" => {
            let x = input(0)?;
            let axes = match (attrs::ints(node, "axes"), inputs.get(1).copied().flatten()) {
                (Some(a), _) => a,
                (None, Some(t)) => g
                    .konst(t)
                    .map(Const::to_i64)
                    .ok_or_else(|| anyhow!("node '{name}' (ReduceMean): axes must be constant"))?,
                (None, None) => (0..rank(x, g) as i64).collect(),
            };
            let r = rank(x, g);
            let axes = axes.iter().map(|&a| attrs::axis(node, a, r)).collect::<Result<Vec<_>>>()?;
            push(g, IrOp::ReduceMean { axes }, vec![x])
        }
        "ReduceSum" => {
            let x = input(0)?;
            let axes = match (attrs::ints(node, "axes"), inputs.get(1).copied().flatten()) {
                (Some(a), _) => a,
                (None, Some(t)) => g
                    .konst(t)
                    .map(Const::to_i64)
                    .ok_or_else(|| anyhow!("node '{name}' (ReduceSum): axes must be constant"))?,
                (None, None) => (0..rank(x, g) as i64).collect(),
            };
            let [axis] = axes[..] else {
                bail!("node '{name}' (ReduceSum): mote sums over one axis, not {axes:?}");
            };
            let axis = attrs::axis(node, axis, rank(x, g))?;
            push(g, rt(Op::ReduceSum { axis: axis as u8 }), vec![x])
        }
        "Range" => {
            let (start, delta) = (input(0)?, input(2)?);
            let (Some(s), Some(d)) = (g.scalar(start), g.scalar(delta)) else {
                bail!("node '{name}' (Range): start and delta must be constants");
            };
            if g.tensors[out].elem != Elem::Int || g.tensors[out].shape.len() != 1 {
                bail!("node '{name}' (Range): only integer position ranges are supported");
            }
            push(g, rt(Op::Positions { start: s as i32, step: d as i32 }), vec![])
        }
        _ => bail!(
            "unsupported op '{op_type}' at node '{name}': mote has no kernel for it{}",
            if ["Equal", "ConstantOfShape", "Not", "And", "Or", "Less", "Greater"].contains(&op_type) {
                " (it is only supported when its inputs fold to constants under the --dim bounds)"
            } else {
                ""
            }
        ),
    }
}

fn transpose_2d(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

fn lower_gemm(g: &mut Graph, node: &NodeProto, name: &str, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let (a, b) = match (inputs.first().copied().flatten(), inputs.get(1).copied().flatten()) {
        (Some(a), Some(b)) => (a, b),
        _ => bail!("node '{name}' (Gemm): needs two inputs"),
    };
    let a = if attrs::int(node, "transA", 0) != 0 {
        let s = &g.tensors[a].shape;
        if s.len() != 2 {
            bail!("node '{name}' (Gemm): A must be 2-D, got shape {s:?}");
        }
        let t = Tensor {
            name: format!("{}.transposed", g.tensors[a].name),
            shape: vec![s[1], s[0]],
            ..g.tensors[a].clone()
        };
        let t = g.add_tensor(Tensor { konst: None, ..t });
        let mut perm = [0u8; mote::tensor::MAX_RANK];
        perm[0] = 1;
        g.nodes.push(Node {
            name: format!("{name}:transA"),
            onnx_op: "Gemm".into(),
            op: IrOp::Rt(Op::Transpose { perm }),
            inputs: vec![a],
            output: t,
        });
        t
    } else {
        a
    };
    let Some(wc) = g.konst(b).map(Const::to_f32) else {
        bail!("node '{name}' (Gemm): B must be a constant weight");
    };
    let (alpha, beta) = (attrs::float(node, "alpha", 1.0), attrs::float(node, "beta", 1.0));
    let (r0, r1) = (g.tensors[b].shape[0], g.tensors[b].shape[1]);
    let (n, kd, w) =
        if attrs::int(node, "transB", 0) != 0 { (r0, r1, wc) } else { (r1, r0, transpose_2d(&wc, r0, r1)) };
    let w: Vec<f32> = w.iter().map(|v| v * alpha).collect();
    let bname = g.tensors[b].name.clone();
    let wt = g.add_const_f32(&format!("{bname}.weight_nt"), vec![n, kd], w);
    let mut ins = vec![a, wt];
    if let Some(c) = inputs.get(2).copied().flatten() {
        let Some(cv) = g.konst(c).map(Const::to_f32) else {
            bail!("node '{name}' (Gemm): C must be a constant bias");
        };
        let bias: Vec<f32> = match cv.len() {
            1 => vec![cv[0] * beta; n],
            l if l == n => cv.iter().map(|v| v * beta).collect(),
            _ => bail!("node '{name}' (Gemm): bias of {} values for {n} outputs", cv.len()),
        };
        let cname = g.tensors[c].name.clone();
        ins.push(g.add_const_f32(&format!("{cname}.bias"), vec![n], bias));
    }
    let has_bias = ins.len() == 3;
    g.nodes.push(Node {
        name: name.into(),
        onnx_op: "Gemm".into(),
        op: IrOp::Rt(Op::MatMul { has_bias }),
        inputs: ins,
        output: out,
    });
    Ok(out)
}

fn const_ints(g: &Graph, t: Option<TId>, what: &str, name: &str) -> Result<Option<Vec<i64>>> {
    match t {
        None => Ok(None),
        Some(t) => Ok(Some(
            g.konst(t)
                .map(Const::to_i64)
                .ok_or_else(|| anyhow!("node '{name}': {what} must fold to a constant under the --dim bounds"))?,
        )),
    }
}

fn lower_slice(g: &mut Graph, node: &NodeProto, name: &str, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let x = inputs.first().copied().flatten().ok_or_else(|| anyhow!("node '{name}' (Slice): no data"))?;
    let get = |i: usize| inputs.get(i).copied().flatten();
    let (starts, ends) = match (attrs::ints(node, "starts"), attrs::ints(node, "ends")) {
        (Some(s), Some(e)) => (s, e), // opset < 10
        _ => (
            const_ints(g, get(1), "starts", name)?.unwrap_or_default(),
            const_ints(g, get(2), "ends", name)?.unwrap_or_default(),
        ),
    };
    let shape = g.tensors[x].shape.clone();
    let axes = attrs::ints(node, "axes")
        .or(const_ints(g, get(3), "axes", name)?)
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = const_ints(g, get(4), "steps", name)?.unwrap_or_else(|| vec![1; starts.len()]);
    let _ = ends;
    let mut st = [0u32; mote::tensor::MAX_RANK];
    let mut sp = [1i32; mote::tensor::MAX_RANK];
    for (i, &a) in axes.iter().enumerate() {
        let a = attrs::axis(node, a, shape.len())?;
        let dim = shape[a] as i64;
        let step = steps[i];
        let mut s = starts[i];
        if s < 0 {
            s += dim;
        }
        s = if step > 0 { s.clamp(0, dim) } else { s.clamp(0, dim - 1) };
        st[a] = s as u32;
        sp[a] = step as i32;
    }
    g.nodes.push(Node {
        name: name.into(),
        onnx_op: "Slice".into(),
        op: IrOp::Rt(Op::Slice { starts: st, steps: sp }),
        inputs: vec![x],
        output: out,
    });
    Ok(out)
}

fn lower_split(g: &mut Graph, node: &NodeProto, name: &str, k: usize, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let x = inputs.first().copied().flatten().ok_or_else(|| anyhow!("node '{name}' (Split): no data"))?;
    let shape = g.tensors[x].shape.clone();
    let axis = attrs::axis(node, attrs::int(node, "axis", 0), shape.len())?;
    // Output k starts where the outputs before it end; tract gave every output's shape,
    // but only this one's, so recompute the offsets from the split sizes.
    let sizes = match attrs::ints(node, "split").or(const_ints(g, inputs.get(1).copied().flatten(), "split", name)?) {
        Some(s) => s,
        None => {
            let n = node.output.len() as i64;
            vec![(shape[axis] as i64 + n - 1) / n; node.output.len()]
        }
    };
    let start: i64 = sizes.iter().take(k).sum();
    let mut st = [0u32; mote::tensor::MAX_RANK];
    st[axis] = start as u32;
    g.nodes.push(Node {
        name: format!("{name}:{k}"),
        onnx_op: "Split".into(),
        op: IrOp::Rt(Op::Slice { starts: st, steps: [1; mote::tensor::MAX_RANK] }),
        inputs: vec![x],
        output: out,
    });
    Ok(out)
}

/// A convolution whose kernel equals its stride, with no padding, dilation or groups: a
/// ViT-style patch embedding. Lowered as patchify (Reshape, Transpose, Reshape), one MatMul
/// with the flattened kernel, and the transpose back to channels-first:
/// `[B,C,H,W] -> [B,C,h,p,w,q] -> [B,h,w,C,p,q] -> [B,h*w,C*p*q] -> [B,h*w,D] -> [B,D,h*w] -> [B,D,h,w]`.
fn lower_patch_conv(g: &mut Graph, node: &NodeProto, name: &str, inputs: &[Option<TId>], out: TId) -> Result<TId> {
    let (x, w) = match (inputs.first().copied().flatten(), inputs.get(1).copied().flatten()) {
        (Some(x), Some(w)) => (x, w),
        _ => bail!("node '{name}' (Conv): needs an input and a weight"),
    };
    let xs = g.tensors[x].shape.clone();
    let ws = g.tensors[w].shape.clone();
    let general = |g: &mut Graph| super::conv::lower_conv(g, node, name, inputs, out, false);
    let Some(wc) = g.konst(w).map(Const::to_f32) else { return general(g) };
    if xs.len() != 4 || ws.len() != 4 {
        return general(g);
    }
    let (p, q) = (ws[2], ws[3]);
    let kernel = attrs::ints(node, "kernel_shape").unwrap_or_else(|| vec![p as i64, q as i64]);
    let strides = attrs::ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
    let pads = attrs::ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
    let dil = attrs::ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
    let auto_pad = attrs::string(node, "auto_pad", "NOTSET");
    let (b, c, hh, ww) = (xs[0], xs[1], xs[2], xs[3]);
    let patches = attrs::int(node, "group", 1) == 1
        && dil.iter().all(|&d| d == 1)
        && kernel == [p as i64, q as i64]
        && strides == kernel
        && pads.iter().all(|&v| v == 0)
        && (auto_pad == "NOTSET" || auto_pad == "VALID")
        && ws[1] == c
        && hh % p == 0
        && ww % q == 0
        // A model may keep its 1×1 convolutions as `Conv` ops (`pointwise`: flows need f32 there).
        && !(p == 1 && q == 1 && super::pointwise::pointwise_as_conv(&g.metadata));
    if !patches {
        // Any other 2-D convolution runs as the runtime's Conv op.
        return general(g);
    }
    let (d, h, wn, k) = (ws[0], hh / p, ww / q, c * p * q);
    let base = g.tensors[out].name.clone();
    let step = |g: &mut Graph, suffix: &str, op: Op, ins: Vec<TId>, shape: Vec<usize>, dst: Option<TId>| {
        let t = dst.unwrap_or_else(|| {
            g.add_tensor(Tensor { name: format!("{base}.{suffix}"), shape, elem: Elem::Float, konst: None })
        });
        g.nodes.push(Node {
            name: format!("{name}:{suffix}"),
            onnx_op: "Conv".into(),
            op: IrOp::Rt(op),
            inputs: ins,
            output: t,
        });
        t
    };
    let perm = |p: &[u8]| {
        let mut a = [0u8; mote::tensor::MAX_RANK];
        a[..p.len()].copy_from_slice(p);
        a
    };
    let t = step(g, "patches6d", Op::Reshape, vec![x], vec![b, c, h, p, wn, q], None);
    let t =
        step(g, "patches_t", Op::Transpose { perm: perm(&[0, 2, 4, 1, 3, 5]) }, vec![t], vec![b, h, wn, c, p, q], None);
    let t = step(g, "patches", Op::Reshape, vec![t], vec![b, h * wn, k], None);
    let wname = g.tensors[w].name.clone();
    let wt = g.add_const_f32(&format!("{wname}.flat"), vec![d, k], wc);
    let mut ins = vec![t, wt];
    if let Some(bias) = inputs.get(2).copied().flatten() {
        let Some(bv) = g.konst(bias).map(Const::to_f32).filter(|v| v.len() == d) else {
            bail!("node '{name}' (Conv): the bias must be a constant of {d} values");
        };
        let bname = g.tensors[bias].name.clone();
        ins.push(g.add_const_f32(&format!("{bname}.bias"), vec![d], bv));
    }
    let has_bias = ins.len() == 3;
    let t = step(g, "projected", Op::MatMul { has_bias }, ins, vec![b, h * wn, d], None);
    let t = step(g, "channels_first", Op::Transpose { perm: perm(&[0, 2, 1]) }, vec![t], vec![b, d, h * wn], None);
    Ok(step(g, "image", Op::Reshape, vec![t], vec![], Some(out)))
}
