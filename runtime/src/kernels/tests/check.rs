//! `check` rejects malformed operands with the right error.

use std::vec;
use std::vec::Vec;

use crate::error::Error;
use crate::kernels::check;
use crate::ops::{Attention, BinaryOp, KvCache, MaskMode, Op, PositionBias, UnaryOp};
use crate::tensor::{DType, Desc, Quant, Shape};

fn d(dtype: DType, dims: &[u32]) -> Desc {
    Desc { dtype, shape: Shape::new(dims).unwrap(), quant: Quant::NONE }
}

fn f(dims: &[u32]) -> Desc {
    d(DType::F32, dims)
}

fn attention(heads: u16, head_dim: u16, mask: MaskMode, cache: Option<KvCache>) -> Op {
    Op::Attention(Attention { heads, head_dim, mask, key_mask: false, bias: PositionBias::None, scale: 0.5, cache })
}

fn with_key_mask(op: Op) -> Op {
    let Op::Attention(a) = op else { unreachable!() };
    Op::Attention(Attention { key_mask: true, ..a })
}

#[test]
fn arity_is_checked_for_every_op() {
    let x = f(&[2, 2]);
    let cases: Vec<(Op, Vec<Desc>)> = vec![
        (Op::MatMul { has_bias: false }, vec![x]),
        (Op::BatchMatMul, vec![x, x, x]),
        (Op::Binary(BinaryOp::Add), vec![x, x, x]),
        (Op::Unary(UnaryOp::Relu), vec![]),
        (Op::Softmax { axis: 0 }, vec![x, x]),
        (Op::LayerNorm { eps: 1e-5, has_beta: false }, vec![x, f(&[2]), f(&[2])]),
        (Op::RmsNorm { eps: 1e-5 }, vec![x]),
        (Op::Gather { axis: 0 }, vec![x, d(DType::I32, &[1]), x]),
        (Op::Reshape, vec![x, x]),
        (Op::Transpose { perm: [1, 0, 0, 0, 0, 0] }, vec![]),
        (Op::Concat { axis: 0 }, vec![x; 17]),
        (Op::Slice { starts: [0; 6], steps: [1; 6] }, vec![]),
        (attention(1, 2, MaskMode::None, None), vec![f(&[1, 1, 2]); 2]),
        (attention(1, 2, MaskMode::None, None), vec![f(&[1, 1, 2]); 5]),
        (Op::Positions { start: 0, step: 1 }, vec![x]),
    ];
    for (op, inputs) in cases {
        assert_eq!(check(&op, &inputs, &x, 0), Err(Error::BadArity), "{op:?}");
    }
}

#[test]
fn invalid_descs_are_rejected_for_any_op() {
    let huge = f(&[u32::MAX, u32::MAX, u32::MAX]);
    let op = Op::Unary(UnaryOp::Relu);
    assert_eq!(check(&op, &[huge], &huge, 0), Err(Error::BadShape));
    let mut q = d(DType::I8, &[2]);
    for quant in [(0.0, 0), (-1.0, 0), (f32::NAN, 0), (f32::INFINITY, 0), (1.0, 128), (1.0, i32::MIN)] {
        q.quant = Quant { scale: quant.0, zero_point: quant.1 };
        assert_eq!(check(&op, &[q], &f(&[2]), 0), Err(Error::BadDType), "{quant:?}");
    }
}

#[test]
fn attention_parameters_and_shapes() {
    let x = f(&[1, 4, 8]);
    let ok = attention(2, 4, MaskMode::Causal, None);
    assert_eq!(check(&ok, &[x, x, x], &x, 0), Ok(()));
    // head_dim over the stack accumulator, zero heads, zero head_dim.
    let big = f(&[1, 4, 257]);
    let op = attention(1, 257, MaskMode::None, None);
    assert_eq!(check(&op, &[big, big, big], &big, 0), Err(Error::BadParams));
    assert_eq!(check(&attention(0, 4, MaskMode::None, None), &[x, x, x], &x, 0), Err(Error::BadParams));
    assert_eq!(check(&attention(8, 0, MaskMode::None, None), &[x, x, x], &x, 0), Err(Error::BadParams));
    // Last dim must be heads * head_dim; rank 3; v like k; out like q.
    assert_eq!(check(&attention(2, 3, MaskMode::None, None), &[x, x, x], &x, 0), Err(Error::BadShape));
    let r2 = f(&[4, 8]);
    assert_eq!(check(&ok, &[r2, r2, r2], &r2, 0), Err(Error::BadShape));
    let kv = f(&[1, 6, 8]);
    assert_eq!(check(&attention(2, 4, MaskMode::None, None), &[x, kv, x], &x, 0), Err(Error::BadShape));
    // Causal without a cache aligns queries with the last keys: Sq <= Skv.
    assert_eq!(check(&ok, &[x, kv, kv], &x, 0), Ok(()));
    let (q6, k4) = (f(&[1, 6, 8]), f(&[1, 4, 8]));
    assert_eq!(check(&ok, &[q6, k4, k4], &q6, 0), Err(Error::BadShape));
    // Key mask is [B, Skv], and only present when the op says so.
    let none = with_key_mask(attention(2, 4, MaskMode::None, None));
    assert_eq!(check(&none, &[x, kv, kv, f(&[1, 6])], &x, 0), Ok(()));
    assert_eq!(check(&none, &[x, kv, kv, f(&[1, 4])], &x, 0), Err(Error::BadShape));
    assert_eq!(check(&none, &[x, kv, kv], &x, 0), Err(Error::BadArity));
    // Prefix lengths are [B].
    let prefix = attention(2, 4, MaskMode::Prefix, None);
    assert_eq!(check(&prefix, &[x, x, x, d(DType::I32, &[1])], &x, 0), Ok(()));
    assert_eq!(check(&prefix, &[x, x, x, d(DType::I32, &[2])], &x, 0), Err(Error::BadShape));
    // Batch must agree.
    let kb = f(&[2, 6, 8]);
    assert_eq!(check(&none, &[x, kb, kb, f(&[2, 6])], &x, 0), Err(Error::BadShape));
    let i = d(DType::I32, &[1, 4, 8]);
    assert_eq!(check(&ok, &[i, x, x], &x, 0), Err(Error::BadDType));
}

#[test]
fn attention_cache_placement() {
    let x = f(&[1, 2, 8]); // 8 f32 per row = 32 bytes; capacity 4 -> 128 bytes per region
    let with = |k_offset, v_offset, capacity| {
        attention(2, 4, MaskMode::Causal, Some(KvCache { k_offset, v_offset, capacity }))
    };
    assert_eq!(check(&with(0, 128, 4), &[x, x, x], &x, 256), Ok(()));
    assert_eq!(check(&with(0, 128, 4), &[x, x, x], &x, 255), Err(Error::BadParams));
    assert_eq!(check(&with(0, 127, 4), &[x, x, x], &x, 1000), Err(Error::BadParams));
    assert_eq!(check(&with(200, 100, 4), &[x, x, x], &x, 1000), Err(Error::BadParams));
    assert_eq!(check(&with(u32::MAX, 0, 4), &[x, x, x], &x, 1000), Err(Error::BadParams));
    assert_eq!(check(&with(0, 128, 0), &[x, x, x], &x, 256), Err(Error::BadParams));
    assert_eq!(check(&with(0, 128, 1), &[x, x, x], &x, 256), Err(Error::BadParams));
    let huge_cap = with(0, 0, u32::MAX);
    assert!(check(&huge_cap, &[x, x, x], &x, usize::MAX).is_err());
    // Batch 1 only, new k rows == query rows, equal k/v dtypes, mask over the capacity.
    let b2 = f(&[2, 2, 8]);
    assert_eq!(check(&with(0, 128, 4), &[b2, b2, b2], &b2, 256), Err(Error::BadShape));
    let k3 = f(&[1, 3, 8]);
    assert_eq!(check(&with(0, 128, 4), &[x, k3, k3], &x, 256), Err(Error::BadShape));
    let mut vq = d(DType::I8, &[1, 2, 8]);
    vq.quant = Quant { scale: 0.1, zero_point: 0 };
    assert_eq!(check(&with(0, 128, 4), &[x, x, vq], &x, 256), Err(Error::BadDType));
    let masked = |k, v, c| with_key_mask(with(k, v, c));
    assert_eq!(check(&masked(0, 128, 4), &[x, x, x, f(&[1, 4])], &x, 256), Ok(()));
    assert_eq!(check(&masked(0, 128, 4), &[x, x, x, f(&[1, 2])], &x, 256), Err(Error::BadShape));
}

#[test]
fn matmul_k_mismatch_and_batch_matmul_rank() {
    let mm = Op::MatMul { has_bias: false };
    assert_eq!(check(&mm, &[f(&[2, 3]), f(&[4, 2])], &f(&[2, 4]), 0), Err(Error::BadShape));
    assert_eq!(check(&mm, &[f(&[2, 3]), f(&[4, 3, 1])], &f(&[2, 4]), 0), Err(Error::BadShape));
    let bmm = Op::BatchMatMul;
    assert_eq!(check(&bmm, &[f(&[3]), f(&[3, 2])], &f(&[2]), 0), Err(Error::BadShape));
    assert_eq!(check(&bmm, &[f(&[2, 3]), f(&[2, 2])], &f(&[2, 2]), 0), Err(Error::BadShape));
}

#[test]
fn execute_validates_buffers_it_is_given() {
    use crate::kernels::{execute, Context};
    use crate::tensor::{Out, Src, View};
    let x = f(&[4]);
    let op = Op::Unary(UnaryOp::Neg);
    let short = [0u8; 15];
    let mut y = [0u8; 16];
    let mut ctx = Context { position: 0, state: &mut [] };
    let src = Src::View(View { desc: x, bytes: &short, channel_scales: None });
    let r = execute(&op, &[src], &mut Out { desc: x, bytes: &mut y }, &mut ctx);
    assert_eq!(r, Err(Error::SizeMismatch));
    let full = [0u8; 16];
    let src = Src::View(View { desc: x, bytes: &full, channel_scales: None });
    let r = execute(&op, &[src], &mut Out { desc: x, bytes: &mut y[..8] }, &mut ctx);
    assert_eq!(r, Err(Error::SizeMismatch));
    assert_eq!(execute(&op, &[], &mut Out { desc: x, bytes: &mut y }, &mut ctx), Err(Error::BadArity));
    // A state region smaller than the one `check` was told about.
    let q = f(&[1, 1, 8]);
    let cache = KvCache { k_offset: 0, v_offset: 32, capacity: 1 };
    let op = attention(2, 4, MaskMode::Causal, Some(cache));
    assert_eq!(check(&op, &[q, q, q], &q, 64), Ok(()));
    let src = Src::View(View { desc: q, bytes: &[0u8; 32], channel_scales: None });
    let mut y = [0u8; 32];
    let mut state = [0u8; 40];
    let mut ctx = Context { position: 0, state: &mut state };
    let r = execute(&op, &[src, src, src], &mut Out { desc: q, bytes: &mut y }, &mut ctx);
    assert_eq!(r, Err(Error::ArenaTooSmall { needed: 64, given: 40 }));
}
