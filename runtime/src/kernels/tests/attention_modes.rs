//! Prefix-LM masks, keys in front of the queries (memory), T5 bucketed relative bias and
//! Transformer-XL relative attention, against a naive O(S²) reference written here, plus
//! incremental decoding of each against its full pass (bit for bit).

use std::vec;
use std::vec::Vec;

use super::*;
use crate::ops::{relative_bucket, Attention, KvCache, MaskMode, PositionBias};

/// The optional inputs of one case, as plain values.
#[derive(Default)]
struct Extras {
    key_mask: Option<Vec<f32>>,
    prefix: Option<Vec<usize>>,
    /// `[buckets, H]`.
    table: Option<Vec<f32>>,
    /// `u`, `v`, `r` of Transformer-XL.
    xl: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
}

/// T5's bucket function in f64, written from the paper's description (independent of
/// [`relative_bucket`]).
fn bucket_f64(rel: i64, buckets: i64, max_distance: i64, bidirectional: bool) -> i64 {
    let (mut n, mut out) = (buckets, 0);
    let d = if bidirectional {
        n /= 2;
        if rel > 0 {
            out = n;
        }
        rel.abs()
    } else {
        (-rel).max(0)
    };
    let exact = n / 2;
    if d < exact {
        return out + d;
    }
    let large = exact
        + ((d as f64 / exact as f64).ln() / (max_distance as f64 / exact as f64).ln() * (n - exact) as f64) as i64;
    out + large.min(n - 1)
}

/// Naive attention with queries aligned to the last `Sq` keys.
fn reference(a: &Attention, q: &T, k: &T, v: &T, x: &Extras) -> Vec<f64> {
    let (h, dh) = (a.heads as usize, a.head_dim as usize);
    let hd = h * dh;
    let (b, sq, skv) = (q.desc.shape.dim(0), q.desc.shape.dim(1), k.desc.shape.dim(1));
    let (qv, kv, vv) = (q.values(), k.values(), v.values());
    let mut out = vec![0.0f64; b * sq * hd];
    for bi in 0..b {
        for hi in 0..h {
            for s in 0..sq {
                let qpos = s + skv - sq;
                let prefix = x.prefix.as_ref().map_or(0, |p| p[bi]);
                let seen: Vec<usize> = (0..skv)
                    .filter(|&j| match a.mask {
                        MaskMode::None => true,
                        MaskMode::Causal => j <= qpos,
                        MaskMode::Prefix => j <= qpos || j < prefix,
                    })
                    .filter(|&j| x.key_mask.as_ref().is_none_or(|m| m[bi * skv + j] != 0.0))
                    .collect();
                let at = |t: &[f32], row: usize, d: usize| t[row * hd + hi * dh + d] as f64;
                let score = |j: usize| -> f64 {
                    let qd = |d: usize| at(&qv, bi * sq + s, d);
                    match (&x.xl, a.bias) {
                        (Some((u, vb, r)), _) => {
                            let content: f64 =
                                (0..dh).map(|d| (qd(d) + u[hi * dh + d] as f64) * at(&kv, bi * skv + j, d)).sum();
                            let position: f64 = (0..dh)
                                .map(|d| (qd(d) + vb[hi * dh + d] as f64) * r[(qpos - j) * hd + hi * dh + d] as f64)
                                .sum();
                            (content + position) * a.scale as f64
                        }
                        (None, PositionBias::Buckets { buckets, max_distance, bidirectional }) => {
                            let dot: f64 = (0..dh).map(|d| qd(d) * at(&kv, bi * skv + j, d)).sum();
                            let bucket =
                                bucket_f64(j as i64 - qpos as i64, buckets as i64, max_distance as i64, bidirectional);
                            dot * a.scale as f64 + x.table.as_ref().unwrap()[bucket as usize * h + hi] as f64
                        }
                        _ => (0..dh).map(|d| qd(d) * at(&kv, bi * skv + j, d)).sum::<f64>() * a.scale as f64,
                    }
                };
                let scores: Vec<f64> = seen.iter().map(|&j| score(j)).collect();
                let row = (bi * sq + s) * hd + hi * dh;
                softmax_mix(&seen, &scores, |j, d| at(&vv, bi * skv + j, d), &mut out[row..row + dh]);
            }
        }
    }
    out
}

fn op(mask: MaskMode, key_mask: bool, bias: PositionBias, cache: Option<KvCache>) -> Attention {
    Attention { heads: 2, head_dim: 4, mask, key_mask, bias, scale: 0.5, cache }
}

/// Tensors for the extras, in the op's input order (`positions` = key-mask length).
fn extra_tensors(a: &Attention, x: &Extras, b: usize, positions: usize) -> Vec<T> {
    let mut v = Vec::new();
    if let Some(m) = &x.key_mask {
        v.push(f32t(&[b as u32, positions as u32], m));
    }
    if let Some(p) = &x.prefix {
        v.push(i32t(&[b as u32], &p.iter().map(|&p| p as i32).collect::<Vec<_>>()));
    }
    if let (Some(t), PositionBias::Buckets { buckets, .. }) = (&x.table, a.bias) {
        v.push(f32t(&[buckets as u32, a.heads as u32], t));
    }
    if let Some((u, vb, r)) = &x.xl {
        let hd = u.len() as u32;
        v.extend([f32t(&[hd], u), f32t(&[hd], vb), f32t(&[r.len() as u32 / hd, hd], r)]);
    }
    v
}

fn run_case(a: &Attention, q: &T, k: &T, v: &T, x: &Extras) -> Vec<f32> {
    let extra = extra_tensors(a, x, q.desc.shape.dim(0), k.desc.shape.dim(1));
    let mut ins = vec![q, k, v];
    ins.extend(extra.iter());
    let out = desc(DType::F32, q.desc.shape.dims());
    run(&Op::Attention(*a), &ins, out).unwrap().values()
}

fn tensors(rng: &mut Rng, b: u32, sq: u32, skv: u32) -> (T, T, T) {
    let q = f32t(&[b, sq, 8], &rng.vec((b * sq * 8) as usize, -2.0, 2.0));
    let k = f32t(&[b, skv, 8], &rng.vec((b * skv * 8) as usize, -2.0, 2.0));
    let v = f32t(&[b, skv, 8], &rng.vec((b * skv * 8) as usize, -1.0, 1.0));
    (q, k, v)
}

#[test]
fn prefix_lm_mask_matches_naive() {
    let mut rng = Rng(61);
    for s in [5u32, 17, 40] {
        let (q, k, v) = tensors(&mut rng, 3, s, s);
        for prefix in [vec![0, 3, s as usize + 4], vec![s as usize / 2, 1, 16]] {
            let mask: Vec<f32> = (0..3 * s).map(|_| (rng.below(4) != 0) as u32 as f32).collect();
            for key_mask in [None, Some(mask)] {
                let a = op(MaskMode::Prefix, key_mask.is_some(), PositionBias::None, None);
                let x = Extras { key_mask, prefix: Some(prefix.clone()), ..Default::default() };
                assert_close(&run_case(&a, &q, &k, &v, &x), &reference(&a, &q, &k, &v, &x), 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn causal_queries_align_with_the_last_keys() {
    let mut rng = Rng(62);
    // 24 memory positions in front of 9 queries, as in Transformer-XL.
    let (q, k, v) = tensors(&mut rng, 2, 9, 33);
    let a = op(MaskMode::Causal, false, PositionBias::None, None);
    let x = Extras::default();
    assert_close(&run_case(&a, &q, &k, &v, &x), &reference(&a, &q, &k, &v, &x), 1e-5, 1e-5);
}

#[test]
fn t5_buckets_match_hand_computed_values() {
    // From the T5 formula by hand: exact buckets below n/2, then log-spaced up to max_distance.
    for (rel, bidirectional, want) in [
        (-1, true, 1),
        (1, true, 17),
        (-8, true, 8),
        (-20, true, 10),
        (-200, true, 15),
        (100, true, 31),
        (-20, false, 17),
        (-1000, false, 31),
        (7, false, 0),
    ] {
        assert_eq!(relative_bucket(rel, 32, 128, bidirectional), want, "rel {rel} bidirectional {bidirectional}");
    }
    // Degenerate parameters (from a crafted file) stay in range instead of overflowing.
    for rel in [-100_000, -5, 0, 5, 100_000, i32::MIN, i32::MAX] {
        for (buckets, max_distance) in [(2u16, 1u16), (32, 1), (32, 8), (1, 0), (0, 0), (u16::MAX, u16::MAX)] {
            for bidirectional in [false, true] {
                assert!(relative_bucket(rel, buckets, max_distance, bidirectional) < buckets.max(1));
            }
        }
    }
    // And against the f64 formula wherever f32 rounding cannot straddle a bucket boundary.
    for rel in -300..300 {
        for (buckets, max_distance) in [(32u16, 128u16), (8, 20), (16, 64)] {
            for bidirectional in [false, true] {
                let n = if bidirectional { buckets as f64 / 2.0 } else { buckets as f64 };
                let exact = (n / 2.0).floor();
                let d = if bidirectional { (rel as f64).abs() } else { (-rel as f64).max(0.0) };
                let raw = (d / exact).ln() / (max_distance as f64 / exact).ln() * (n - exact);
                if d >= exact && (raw - raw.round()).abs() < 1e-4 {
                    continue;
                }
                let want = bucket_f64(rel as i64, buckets as i64, max_distance as i64, bidirectional);
                assert_eq!(relative_bucket(rel, buckets, max_distance, bidirectional) as i64, want);
            }
        }
    }
}

#[test]
fn t5_relative_bias_matches_naive() {
    let mut rng = Rng(63);
    for (bidirectional, mask) in [(true, MaskMode::None), (false, MaskMode::Causal), (true, MaskMode::Prefix)] {
        let (q, k, v) = tensors(&mut rng, 2, 37, 37);
        let bias = PositionBias::Buckets { buckets: 8, max_distance: 20, bidirectional };
        let a = op(mask, false, bias, None);
        let prefix = (mask == MaskMode::Prefix).then(|| vec![5, 20]);
        let x = Extras { table: Some(rng.vec(16, -3.0, 3.0)), prefix, ..Default::default() };
        assert_close(&run_case(&a, &q, &k, &v, &x), &reference(&a, &q, &k, &v, &x), 1e-5, 1e-5);
    }
    // Cross-attention (Sq != Skv) with a bias is fine without a mask.
    let (q, k, v) = tensors(&mut rng, 1, 6, 19);
    let a =
        op(MaskMode::None, false, PositionBias::Buckets { buckets: 8, max_distance: 20, bidirectional: true }, None);
    let x = Extras { table: Some(rng.vec(16, -3.0, 3.0)), ..Default::default() };
    assert_close(&run_case(&a, &q, &k, &v, &x), &reference(&a, &q, &k, &v, &x), 1e-5, 1e-5);
}

fn xl_extras(rng: &mut Rng, distances: usize) -> Extras {
    let r = rng.vec(distances * 8, -1.0, 1.0);
    Extras { xl: Some((rng.vec(8, -0.5, 0.5), rng.vec(8, -0.5, 0.5), r)), ..Default::default() }
}

#[test]
fn transformer_xl_relative_attention_matches_naive() {
    let mut rng = Rng(64);
    // 20 memory positions + 12 new ones; distances up to 31.
    let (q, k, v) = tensors(&mut rng, 1, 12, 32);
    let a = op(MaskMode::Causal, false, PositionBias::XlRelative, None);
    let x = xl_extras(&mut rng, 35);
    assert_close(&run_case(&a, &q, &k, &v, &x), &reference(&a, &q, &k, &v, &x), 1e-5, 1e-5);
    // XL terms need a causal mask (distances must be non-negative) and enough distances.
    let bad = op(MaskMode::None, false, PositionBias::XlRelative, None);
    let d = |dims: &[u32]| desc(DType::F32, dims);
    let ins = [d(&[1, 12, 8]), d(&[1, 32, 8]), d(&[1, 32, 8]), d(&[8]), d(&[8]), d(&[35, 8])];
    assert_eq!(check(&Op::Attention(bad), &ins, &ins[0], 0), Err(crate::Error::BadParams));
    let short = [ins[0], ins[1], ins[2], ins[3], ins[4], d(&[31, 8])];
    assert_eq!(check(&Op::Attention(a), &short, &ins[0], 0), Err(crate::Error::BadShape));
    assert_eq!(check(&Op::Attention(a), &ins[..5], &ins[0], 0), Err(crate::Error::BadArity));
}

/// Rows `from..to` of a `[1, S, HD]` tensor.
fn rows(t: &T, from: usize, to: usize) -> T {
    let hd = t.desc.shape.dim(2);
    let sz = hd * t.desc.dtype.size();
    let mut desc = t.desc;
    desc.shape = crate::tensor::Shape::new(&[1, (to - from) as u32, hd as u32]).unwrap();
    T { desc, bytes: t.bytes[from * sz..to * sz].to_vec(), scales: None }
}

/// Full pass, then the same rows decoded through a cache in `chunks`: identical bytes.
fn incremental_equals_full(full: &Attention, x: &Extras, chunks: &[usize]) {
    let mut rng = Rng(65);
    let s: usize = chunks.iter().sum();
    let (q, k, v) = tensors(&mut rng, 1, s as u32, s as u32);
    let cap = 40usize;
    let want = run_case(full, &q, &k, &v, x);
    let region = (cap * 8 * 4) as u32;
    let cached =
        Attention { cache: Some(KvCache { k_offset: 16, v_offset: 16 + region, capacity: cap as u32 }), ..*full };
    let mut state = vec![0u8; 16 + 2 * region as usize];
    let extra = extra_tensors(&cached, x, 1, cap);
    let mut pos = 0;
    for &n in chunks {
        let (qc, kc, vc) = (rows(&q, pos, pos + n), rows(&k, pos, pos + n), rows(&v, pos, pos + n));
        let mut ins = vec![&qc, &kc, &vc];
        ins.extend(extra.iter());
        let mut ctx = Context { position: pos as u32, state: &mut state };
        let got = run_ctx(&Op::Attention(cached), &ins, desc(DType::F32, &[1, n as u32, 8]), &mut ctx).unwrap();
        assert_eq!(got.values(), want[pos * 8..(pos + n) * 8], "chunk at {pos}");
        pos += n;
    }
}

#[test]
fn every_mode_decodes_incrementally_bit_for_bit() {
    let mut rng = Rng(66);
    let chunks = [6, 1, 1, 13, 1, 10];
    // With a cache, the whole prefix arrives in the first call.
    let prefix = Extras { prefix: Some(vec![9]), ..Default::default() };
    incremental_equals_full(&op(MaskMode::Prefix, false, PositionBias::None, None), &prefix, &[9, 1, 1, 13, 1, 7]);
    let buckets = PositionBias::Buckets { buckets: 8, max_distance: 20, bidirectional: false };
    let table = Extras { table: Some(rng.vec(16, -3.0, 3.0)), ..Default::default() };
    incremental_equals_full(&op(MaskMode::Causal, false, buckets, None), &table, &chunks);
    incremental_equals_full(
        &op(MaskMode::Causal, false, PositionBias::XlRelative, None),
        &xl_extras(&mut rng, 40),
        &chunks,
    );
}

#[test]
fn xl_macs_count_both_terms() {
    let q = desc(DType::F32, &[1, 4, 8]);
    let k = desc(DType::F32, &[1, 12, 8]);
    let plain = op(MaskMode::Causal, false, PositionBias::None, None);
    let xl = op(MaskMode::Causal, false, PositionBias::XlRelative, None);
    assert_eq!(super::super::macs(&Op::Attention(plain), &[q, k, k], &q), 2 * 2 * 4 * 12 * 4);
    assert_eq!(super::super::macs(&Op::Attention(xl), &[q, k, k], &q), 4 * 2 * 4 * 12 * 4);
}
