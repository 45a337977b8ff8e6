//! Streaming attention against a naive O(S²) softmax(QKᵀ·scale)V, and incremental decoding
//! through the KV cache against the full forward pass (bit for bit).

use std::vec;
use std::vec::Vec;

use super::*;
use crate::error::Error;
use crate::ops::{Attention, KvCache, MaskMode, PositionBias};

fn attn(heads: u16, head_dim: u16, mask: MaskMode, cache: Option<KvCache>) -> Op {
    let scale = 1.0 / libm::sqrtf(head_dim as f32);
    Op::Attention(Attention { heads, head_dim, mask, key_mask: false, bias: PositionBias::None, scale, cache })
}

/// The same op with a key-mask input.
fn masked(op: Op) -> Op {
    let Op::Attention(a) = op else { unreachable!() };
    Op::Attention(Attention { key_mask: true, ..a })
}

/// Naive attention without a cache: positions start at 0.
fn reference(op: &Op, q: &T, k: &T, v: &T, key_mask: Option<&T>) -> Vec<f64> {
    let Op::Attention(a) = *op else { unreachable!() };
    let (h, dh) = (a.heads as usize, a.head_dim as usize);
    let hd = h * dh;
    let [b, sq, _] = q.desc.shape.dims() else { unreachable!() };
    let (b, sq, skv) = (*b as usize, *sq as usize, k.desc.shape.dim(1));
    let (qv, kv, vv) = (q.values(), k.values(), v.values());
    let mv = key_mask.map(|m| m.values());
    let mut out = vec![0.0f64; b * sq * hd];
    for bi in 0..b {
        for hi in 0..h {
            for s in 0..sq {
                let seen: Vec<usize> = (0..skv)
                    .filter(|&j| a.mask != MaskMode::Causal || j <= s)
                    .filter(|&j| mv.as_ref().is_none_or(|m| m[bi * skv + j] != 0.0))
                    .collect();
                let at = |t: &[f32], row: usize, d: usize| t[row * hd + hi * dh + d] as f64;
                let scores: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        let dot: f64 = (0..dh).map(|d| at(&qv, bi * sq + s, d) * at(&kv, bi * skv + j, d)).sum();
                        dot * a.scale as f64
                    })
                    .collect();
                let row = (bi * sq + s) * hd + hi * dh;
                softmax_mix(&seen, &scores, |j, d| at(&vv, bi * skv + j, d), &mut out[row..row + dh]);
            }
        }
    }
    out
}

fn qkv(rng: &mut Rng, b: u32, sq: u32, skv: u32, hd: u32) -> (T, T, T) {
    let q = f32t(&[b, sq, hd], &rng.vec((b * sq * hd) as usize, -2.0, 2.0));
    let k = f32t(&[b, skv, hd], &rng.vec((b * skv * hd) as usize, -2.0, 2.0));
    let v = f32t(&[b, skv, hd], &rng.vec((b * skv * hd) as usize, -1.0, 1.0));
    (q, k, v)
}

#[test]
fn matches_naive_across_block_boundaries() {
    let mut rng = Rng(51);
    for s in [1u32, 15, 16, 17, 40] {
        let (q, k, v) = qkv(&mut rng, 2, s, s, 16);
        let mask_vals: Vec<f32> = (0..2 * s).map(|_| (rng.below(3) != 0) as u32 as f32).collect();
        let key_mask = f32t(&[2, s], &mask_vals);
        for mode in [MaskMode::None, MaskMode::Causal] {
            let op = attn(2, 8, mode, None);
            let out = desc(DType::F32, &[2, s, 16]);
            let got = run(&op, &[&q, &k, &v], out).unwrap();
            assert_close(&got.values(), &reference(&op, &q, &k, &v, None), 1e-5, 1e-5);
            let got = run(&masked(op), &[&q, &k, &v, &key_mask], out).unwrap();
            assert_close(&got.values(), &reference(&op, &q, &k, &v, Some(&key_mask)), 1e-5, 1e-5);
        }
    }
}

#[test]
fn cross_attention_and_max_head_dim() {
    let mut rng = Rng(52);
    let (q, k, v) = qkv(&mut rng, 1, 5, 23, 24);
    let op = attn(3, 8, MaskMode::None, None);
    let got = run(&op, &[&q, &k, &v], desc(DType::F32, &[1, 5, 24])).unwrap();
    assert_close(&got.values(), &reference(&op, &q, &k, &v, None), 1e-5, 1e-5);
    let (q, k, v) = qkv(&mut rng, 1, 3, 3, 256);
    let op = attn(1, 256, MaskMode::Causal, None);
    let got = run(&op, &[&q, &k, &v], desc(DType::F32, &[1, 3, 256])).unwrap();
    assert_close(&got.values(), &reference(&op, &q, &k, &v, None), 1e-5, 1e-5);
}

#[test]
fn fully_masked_rows_are_zero() {
    let mut rng = Rng(53);
    let (q, k, v) = qkv(&mut rng, 2, 4, 20, 8);
    let mut m = vec![1i32; 40];
    m[..20].fill(0); // batch 0 sees nothing
    let key_mask = i32t(&[2, 20], &m);
    let op = attn(2, 4, MaskMode::None, None);
    let got = run(&masked(op), &[&q, &k, &v, &key_mask], desc(DType::F32, &[2, 4, 8])).unwrap().values();
    assert!(got[..32].iter().all(|&x| x == 0.0));
    assert_close(&got, &reference(&op, &q, &k, &v, Some(&key_mask)), 1e-5, 1e-5);
}

/// Rows `from..to` of a `[1, S, HD]` tensor.
fn rows(t: &T, from: usize, to: usize) -> T {
    let hd = t.desc.shape.dim(2);
    let sz = hd * t.desc.dtype.size();
    let mut desc = t.desc;
    desc.shape = crate::tensor::Shape::new(&[1, (to - from) as u32, hd as u32]).unwrap();
    T { desc, bytes: t.bytes[from * sz..to * sz].to_vec(), scales: None }
}

/// Runs the full causal pass, then decodes the same rows through the cache in `chunks`, and
/// requires identical bytes.
fn incremental_equals_full(q: &T, k: &T, v: &T, out: Desc, mask: Option<(&T, &T)>, chunks: &[usize]) {
    let s = q.desc.shape.dim(1);
    let hd = q.desc.shape.dim(2) as u32;
    let with_mask = |op: Op| if mask.is_some() { masked(op) } else { op };
    let full_op = with_mask(attn(2, (hd / 2) as u16, MaskMode::Causal, None));
    let mut full_in = vec![q, k, v];
    if let Some((m, _)) = mask {
        full_in.push(m);
    }
    let full = run(&full_op, &full_in, out).unwrap();
    let cap = 48u32;
    let region = cap * hd * k.desc.dtype.size() as u32;
    let cache = KvCache { k_offset: 8, v_offset: 8 + region + 4, capacity: cap };
    let op = with_mask(attn(2, (hd / 2) as u16, MaskMode::Causal, Some(cache)));
    let mut state = vec![0u8; (2 * region + 16) as usize];
    let row = out.dtype.size() * hd as usize;
    let mut pos = 0;
    for &n in chunks {
        let (qc, kc, vc) = (rows(q, pos, pos + n), rows(k, pos, pos + n), rows(v, pos, pos + n));
        let mut ins = vec![&qc, &kc, &vc];
        if let Some((_, m)) = mask {
            ins.push(m);
        }
        let mut o = out;
        o.shape = crate::tensor::Shape::new(&[1, n as u32, hd]).unwrap();
        let mut ctx = Context { position: pos as u32, state: &mut state };
        let got = run_ctx(&op, &ins, o, &mut ctx).unwrap();
        assert_eq!(got.bytes, full.bytes[pos * row..(pos + n) * row], "chunk at {pos}");
        pos += n;
    }
    assert_eq!(pos, s);
}

#[test]
fn incremental_decoding_is_bit_identical_f32() {
    let mut rng = Rng(54);
    let (q, k, v) = qkv(&mut rng, 1, 40, 40, 16);
    let out = desc(DType::F32, &[1, 40, 16]);
    incremental_equals_full(&q, &k, &v, out, None, &[1; 40]);
    incremental_equals_full(&q, &k, &v, out, None, &[7, 1, 1, 9, 16, 1, 5]);
    let m: Vec<f32> = (0..48).map(|i| (i % 5 != 3) as u32 as f32).collect();
    let full_mask = f32t(&[1, 40], &m[..40]);
    let cache_mask = f32t(&[1, 48], &m);
    incremental_equals_full(&q, &k, &v, out, Some((&full_mask, &cache_mask)), &[3, 14, 1, 22]);
}

#[test]
fn incremental_decoding_is_bit_identical_i8() {
    let mut rng = Rng(55);
    let q = i8t(&[1, 40, 16], &rng.i8s(640), 0.02, 3);
    let k = i8t(&[1, 40, 16], &rng.i8s(640), 0.03, -2);
    let v = i8t(&[1, 40, 16], &rng.i8s(640), 0.01, 0);
    incremental_equals_full(&q, &k, &v, qdesc(&[1, 40, 16], 0.005, 1), None, &[1; 40]);
    incremental_equals_full(&q, &k, &v, desc(DType::F32, &[1, 40, 16]), None, &[17, 1, 1, 21]);
}

#[test]
fn cache_without_mask_mode_matches_the_uncached_pass() {
    let mut rng = Rng(56);
    let (q, k, v) = qkv(&mut rng, 1, 20, 20, 8);
    let out = desc(DType::F32, &[1, 20, 8]);
    let full = run(&attn(2, 4, MaskMode::None, None), &[&q, &k, &v], out).unwrap();
    let cache = KvCache { k_offset: 0, v_offset: 1024, capacity: 32 };
    let mut state = vec![0u8; 2048];
    let mut ctx = Context { position: 0, state: &mut state };
    let got = run_ctx(&attn(2, 4, MaskMode::None, Some(cache)), &[&q, &k, &v], out, &mut ctx).unwrap();
    assert_eq!(got.bytes, full.bytes);
}

#[test]
fn cache_overflow_is_state_full() {
    let mut rng = Rng(57);
    let (q, k, v) = qkv(&mut rng, 1, 3, 3, 8);
    let cache = KvCache { k_offset: 0, v_offset: 256, capacity: 8 };
    let mut state = vec![0u8; 512];
    let mut ctx = Context { position: 6, state: &mut state };
    let op = attn(2, 4, MaskMode::Causal, Some(cache));
    let err = run_ctx(&op, &[&q, &k, &v], desc(DType::F32, &[1, 3, 8]), &mut ctx);
    assert_eq!(err.err(), Some(Error::StateFull));
    ctx.position = u32::MAX;
    let err = run_ctx(&op, &[&q, &k, &v], desc(DType::F32, &[1, 3, 8]), &mut ctx);
    assert_eq!(err.err(), Some(Error::StateFull));
    ctx.position = 5;
    assert!(run_ctx(&op, &[&q, &k, &v], desc(DType::F32, &[1, 3, 8]), &mut ctx).is_ok());
}

#[test]
fn macs_use_the_cache_capacity() {
    let q = desc(DType::F32, &[2, 3, 16]);
    let k = desc(DType::F32, &[2, 5, 16]);
    assert_eq!(super::super::macs(&attn(2, 8, MaskMode::None, None), &[q, k, k], &q), 2 * 2 * 2 * 3 * 5 * 8);
    let cache = Some(KvCache { k_offset: 0, v_offset: 0, capacity: 64 });
    assert_eq!(super::super::macs(&attn(2, 8, MaskMode::None, cache), &[q, k, k], &q), 2 * 2 * 2 * 3 * 64 * 8);
}
