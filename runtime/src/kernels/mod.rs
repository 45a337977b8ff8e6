//! Scalar reference kernels: one per op, the oracle every vectorised variant must match.
//!
//! [`check`] validates an op against its operand descriptions once, at parse time;
//! [`execute`] then runs it without panicking; [`macs`] counts its multiply-accumulates.
//! Kernels read inputs with dequantising loads and write outputs with quantising stores, so
//! `f32`, `f16` and `i8` operands share one code path; the int8 `MatMul` path is integer-only
//! and follows the TFLite int8 spec ([`mat_mult_nt_t_s8`], [`crate::quant`]).
//!
//! ```
//! use mote::kernels::{check, execute, Context};
//! use mote::ops::{BinaryOp, Op};
//! use mote::tensor::{DType, Desc, Out, Quant, Shape, Src, View};
//!
//! let desc = Desc { dtype: DType::F32, shape: Shape::new(&[2]).unwrap(), quant: Quant::NONE };
//! let op = Op::Binary(BinaryOp::Add);
//! check(&op, &[desc, desc], &desc, 0).unwrap();
//!
//! let a: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let b: Vec<u8> = [10f32, 20.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let view = |bytes| Src::View(View { desc, bytes, channel_scales: None });
//! let mut y = [0u8; 8];
//! let mut out = Out { desc, bytes: &mut y };
//! let mut ctx = Context { position: 0, state: &mut [] };
//! execute(&op, &[view(&a[..]), view(&b[..])], &mut out, &mut ctx).unwrap();
//! assert_eq!(f32::from_le_bytes([y[4], y[5], y[6], y[7]]), 22.0);
//! ```

mod activation;
mod attention;
mod conv;
mod elementwise;
mod gather;
mod group_norm;
mod layout;
mod matmul;
mod matmul_s8;
mod moe;
mod norm;
mod positions;
mod reduce;
mod shape;
mod softmax;
mod state;
#[cfg(test)]
mod tests;
mod upsample;

pub use activation::{binary_f32, unary_f32};
pub use attention::BLOCK as ATTENTION_BLOCK;
pub use matmul_s8::mat_mult_nt_t_s8;
pub use moe::{MAX_EXPERTS, MAX_HIDDEN as MAX_EXPERT_HIDDEN};

use crate::error::{Error, Result};
use crate::ops::{Op, MAX_INPUTS};
use crate::tensor::{DType, Desc, Out, Src, View};

/// Run-time context an op may need.
pub struct Context<'s> {
    /// Session position: the number of sequence positions already in the state (KV cache).
    pub position: u32,
    /// The model's state region (KV caches and other persistent tensors).
    pub state: &'s mut [u8],
}

/// Validates dtypes, shapes, arity and parameters of `op` against its operands.
///
/// Called once at parse time. After it returns `Ok`, [`execute`] does not panic for operands
/// with these descriptions (it may still return run-time errors such as
/// [`Error::IndexOutOfRange`] for a token id outside its table, or [`Error::StateFull`]).
/// `state_bytes` is the size of the state region the session will pass in [`Context::state`].
///
/// ```
/// use mote::kernels::check;
/// use mote::ops::Op;
/// use mote::tensor::{DType, Desc, Quant, Shape};
/// let d = |dims: &[u32]| {
///     Desc { dtype: DType::F32, shape: Shape::new(dims).unwrap(), quant: Quant::NONE }
/// };
/// let op = Op::MatMul { has_bias: false };
/// assert!(check(&op, &[d(&[3, 4]), d(&[5, 4])], &d(&[3, 5]), 0).is_ok());
/// assert_eq!(check(&op, &[d(&[3, 4]), d(&[5, 3])], &d(&[3, 5]), 0), Err(mote::Error::BadShape));
/// ```
pub fn check(op: &Op, inputs: &[Desc], output: &Desc, state_bytes: usize) -> Result<()> {
    if inputs.len() > MAX_INPUTS {
        return Err(Error::BadArity);
    }
    for d in inputs.iter().chain(core::iter::once(output)) {
        validate_desc(d)?;
    }
    match *op {
        Op::MatMul { has_bias } => matmul::check(has_bias, inputs, output),
        Op::BatchMatMul => matmul::check_batch(inputs, output),
        Op::Binary(_) => elementwise::check_binary(inputs, output),
        Op::Unary(u) => elementwise::check_unary(u, inputs, output),
        Op::Softmax { axis } => softmax::check(axis, inputs, output),
        Op::ReduceSum { axis } => reduce::check(axis, inputs, output),
        Op::Conv(c) => conv::check(&c, inputs, output),
        Op::Upsample { scale } => upsample::check(scale, inputs, output),
        Op::LayerNorm { has_beta, .. } => norm::check(2 + has_beta as usize, inputs, output),
        Op::RmsNorm { .. } => norm::check(2, inputs, output),
        Op::GroupNorm { eps, groups } => group_norm::check(eps, groups, inputs, output),
        Op::Gather { axis } => gather::check(axis, inputs, output),
        Op::Reshape => layout::check_reshape(inputs, output),
        Op::Transpose { perm } => layout::check_transpose(&perm, inputs, output),
        Op::Concat { axis } => layout::check_concat(axis, inputs, output),
        Op::Slice { starts, steps } => layout::check_slice(&starts, &steps, inputs, output),
        Op::Attention(a) => attention::check(&a, inputs, output, state_bytes),
        Op::Positions { .. } => positions::check(inputs, output),
        Op::LoadState { offset } => state::check_load(offset, inputs, output, state_bytes),
        Op::StoreState { offset } => state::check_store(offset, inputs, output, state_bytes),
        Op::Moe { .. } => moe::check(inputs, output),
    }
}

/// Runs `op`, reading `inputs` and writing `out`.
///
/// `inputs[i]` may be [`Src::InPlace`] only when [`check`] passed, `op.allows_in_place()`,
/// and that input has the output's element size and element count (it then aliases the
/// output's bytes); anything else is [`Error::BadParams`]. Byte buffers shorter than their
/// descriptions are [`Error::SizeMismatch`].
pub fn execute(op: &Op, inputs: &[Src<'_>], out: &mut Out<'_>, ctx: &mut Context<'_>) -> Result<()> {
    if out.bytes.len() < out.desc.byte_len() {
        return Err(Error::SizeMismatch);
    }
    for src in inputs {
        match src {
            Src::View(v) => {
                if v.bytes.len() < v.desc.byte_len() {
                    return Err(Error::SizeMismatch);
                }
            }
            Src::InPlace(d) => {
                let same = d.dtype.size() == out.desc.dtype.size() && d.shape.numel() == out.desc.shape.numel();
                if !op.allows_in_place() || !same {
                    return Err(Error::BadParams);
                }
            }
        }
    }
    match *op {
        Op::MatMul { has_bias } => matmul::run(has_bias, inputs, out),
        Op::BatchMatMul => matmul::run_batch(inputs, out),
        Op::Binary(b) => elementwise::run_binary(b, inputs, out),
        Op::Unary(u) => elementwise::run_unary(u, inputs, out),
        Op::Softmax { axis } => softmax::run(axis, inputs, out),
        Op::ReduceSum { axis } => reduce::run(axis, inputs, out),
        Op::Conv(c) => conv::run(&c, inputs, out),
        Op::Upsample { scale } => upsample::run(scale, inputs, out),
        Op::LayerNorm { eps, has_beta } => norm::run_layer_norm(eps, has_beta, inputs, out),
        Op::RmsNorm { eps } => norm::run_rms_norm(eps, inputs, out),
        Op::GroupNorm { eps, groups } => group_norm::run(eps, groups, inputs, out),
        Op::Gather { axis } => gather::run(axis, inputs, out),
        Op::Reshape => layout::run_reshape(inputs, out),
        Op::Transpose { perm } => layout::run_transpose(&perm, inputs, out),
        Op::Concat { axis } => layout::run_concat(axis, inputs, out),
        Op::Slice { starts, steps } => layout::run_slice(&starts, &steps, inputs, out),
        Op::Attention(a) => attention::run(&a, inputs, out, ctx),
        Op::Positions { start, step } => positions::run(start, step, out, ctx),
        Op::LoadState { offset } => state::run_load(offset, out, ctx),
        Op::StoreState { offset } => state::run_store(offset, inputs, out, ctx),
        Op::Moe { activation, capacity } => moe::run(activation, capacity, inputs, out),
    }
}

/// Multiply-accumulates `op` performs (for reports); never panics, saturates on overflow.
///
/// `MatMul`/`BatchMatMul` count `batch·M·N·K`, `Attention` counts `2·B·H·Sq·Skv·Dh` (with a
/// cache, `Skv` is its capacity), `Moe` counts the router plus one expert per token, element-wise math, softmax and norms count one per output
/// element, and pure data movement counts zero.
///
/// ```
/// use mote::kernels::macs;
/// use mote::ops::Op;
/// use mote::tensor::{DType, Desc, Quant, Shape};
/// let d = |dims: &[u32]| {
///     Desc { dtype: DType::F32, shape: Shape::new(dims).unwrap(), quant: Quant::NONE }
/// };
/// assert_eq!(macs(&Op::MatMul { has_bias: false }, &[d(&[3, 4]), d(&[5, 4])], &d(&[3, 5])), 60);
/// ```
pub fn macs(op: &Op, inputs: &[Desc], output: &Desc) -> u64 {
    let numel = output.shape.numel() as u64;
    match *op {
        Op::MatMul { .. } => matmul::macs(inputs, output),
        Op::BatchMatMul => matmul::macs_batch(inputs, output),
        Op::Attention(a) => attention::macs(&a, inputs),
        Op::Moe { .. } => moe::macs(inputs, output),
        Op::Binary(_) | Op::Unary(_) | Op::Softmax { .. } => numel,
        Op::ReduceSum { .. } => inputs.first().map_or(0, |x| x.shape.numel() as u64),
        Op::Conv(c) => conv::macs(&c, inputs, output),
        Op::Upsample { .. } => 0,
        Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::GroupNorm { .. } => numel,
        Op::Gather { .. } | Op::Reshape | Op::Transpose { .. } => 0,
        Op::Concat { .. } | Op::Slice { .. } | Op::Positions { .. } => 0,
        Op::LoadState { .. } | Op::StoreState { .. } => 0,
    }
}

/// Rejects descriptions whose byte size overflows or whose int8 quantisation is invalid
/// (zero point outside the i8 range, scale not finite and positive).
fn validate_desc(d: &Desc) -> Result<()> {
    let n = shape::product(d.shape.dims())?;
    let bytes = n.checked_mul(d.dtype.size()).ok_or(Error::BadShape)?;
    if bytes > isize::MAX as usize {
        return Err(Error::BadShape);
    }
    if d.dtype == DType::I8 {
        let q = d.quant;
        let zp_ok = (-128..=127).contains(&q.zero_point);
        if !zp_ok || !q.scale.is_finite() || q.scale <= 0.0 {
            return Err(Error::BadDType);
        }
    }
    Ok(())
}

/// `BadArity` unless there are exactly `n` inputs.
fn arity(inputs: &[Desc], n: usize) -> Result<()> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(Error::BadArity)
    }
}

/// `BadDType` unless `ok`.
fn dtype_ok(ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::BadDType)
    }
}

/// `BadShape` unless `ok`.
fn shape_ok(ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::BadShape)
    }
}

/// Dtypes read as real numbers by the math kernels.
fn real_in(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::I8)
}

/// Dtypes the math kernels write.
fn real_out(d: DType) -> bool {
    matches!(d, DType::F32 | DType::I8)
}

/// Whether elements can be copied byte for byte from `a` to `b`.
fn same_repr(a: &Desc, b: &Desc) -> bool {
    a.dtype == b.dtype && (a.dtype != DType::I8 || a.quant == b.quant)
}

/// Whether a data-movement op may convert from `a` to `b` (byte copy or real conversion).
fn convertible(a: &Desc, b: &Desc) -> bool {
    a.dtype == b.dtype || (real_in(a.dtype) && real_out(b.dtype))
}

/// Input `i`, or `BadArity`.
fn input<'b, 'a>(inputs: &'b [Src<'a>], i: usize) -> Result<&'b Src<'a>> {
    inputs.get(i).ok_or(Error::BadArity)
}

/// Input `i` as a separate view (`BadParams` if it aliases the output).
fn view<'b, 'a>(inputs: &'b [Src<'a>], i: usize) -> Result<&'b View<'a>> {
    input(inputs, i)?.view().ok_or(Error::BadParams)
}

/// Copies `n` elements from `src[si..]` to `out[oi..]`, converting dtypes if needed.
fn copy_elems(src: &View<'_>, si: usize, out: &mut Out<'_>, oi: usize, n: usize) {
    if same_repr(&src.desc, &out.desc) {
        let s = src.desc.dtype.size();
        out.bytes[oi * s..(oi + n) * s].copy_from_slice(&src.bytes[si * s..(si + n) * s]);
    } else {
        for j in 0..n {
            out.set(oi + j, src.get(si + j));
        }
    }
}
