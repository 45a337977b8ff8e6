//! Float MatMul and BatchMatMul against naive f64 loops.

use std::vec::Vec;

use super::*;
use crate::error::Error;

/// `a [rows, k] · w[n, k]ᵀ + bias`.
fn reference(a: &[f32], w: &[f32], bias: Option<&[f32]>, rows: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[c] as f64);
            for i in 0..k {
                acc += a[r * k + i] as f64 * w[c * k + i] as f64;
            }
            out.push(acc);
        }
    }
    out
}

#[test]
fn float_matmul_matches_naive() {
    let mut rng = Rng(21);
    let (k, n) = (37, 9);
    let a = f32t(&[2, 3, k], &rng.vec(6 * k as usize, -1.0, 1.0));
    let w = f32t(&[n, k], &rng.vec((n * k) as usize, -1.0, 1.0));
    let b = f32t(&[n], &rng.vec(n as usize, -1.0, 1.0));
    let out = desc(DType::F32, &[2, 3, n]);
    let got = run(&Op::MatMul { has_bias: true }, &[&a, &w, &b], out).unwrap();
    let want = reference(&a.values(), &w.values(), Some(&b.values()), 6, n as usize, k as usize);
    assert_close(&got.values(), &want, 1e-5, 1e-5);
    let got = run(&Op::MatMul { has_bias: false }, &[&a, &w], out).unwrap();
    let want = reference(&a.values(), &w.values(), None, 6, n as usize, k as usize);
    assert_close(&got.values(), &want, 1e-5, 1e-5);
}

#[test]
fn f16_weights_and_rank1_activations() {
    let mut rng = Rng(22);
    let w = f16t(&[4, 8], &rng.vec(32, -1.0, 1.0));
    let a = f32t(&[8], &rng.vec(8, -1.0, 1.0));
    let got = run(&Op::MatMul { has_bias: false }, &[&a, &w], desc(DType::F32, &[4])).unwrap();
    let want = reference(&a.values(), &w.values(), None, 1, 4, 8);
    assert_close(&got.values(), &want, 1e-5, 1e-5);
}

#[test]
fn matmul_rejects_bad_operands() {
    let a = f32t(&[3, 4], &[0.0; 12]);
    let w = f32t(&[5, 4], &[0.0; 20]);
    let w_bad_k = f32t(&[5, 3], &[0.0; 15]);
    let b = f32t(&[5], &[0.0; 5]);
    let mm = Op::MatMul { has_bias: false };
    let mmb = Op::MatMul { has_bias: true };
    let out = desc(DType::F32, &[3, 5]);
    assert_eq!(run(&mm, &[&a, &w_bad_k], out).err(), Some(Error::BadShape));
    assert_eq!(run(&mmb, &[&a, &w], out).err(), Some(Error::BadArity));
    assert_eq!(run(&mm, &[&a, &w, &b], out).err(), Some(Error::BadArity));
    assert_eq!(run(&mm, &[&a, &w], desc(DType::F32, &[3, 4])).err(), Some(Error::BadShape));
    assert_eq!(run(&mm, &[&a, &w], desc(DType::F32, &[1, 3, 5])).err(), Some(Error::BadShape));
    let bad_bias = f32t(&[4], &[0.0; 4]);
    assert_eq!(run(&mmb, &[&a, &w, &bad_bias], out).err(), Some(Error::BadShape));
    // int8 weights need int8 activations; i32 weights are never valid.
    let wq = i8t(&[5, 4], &[0; 20], 0.1, 0);
    assert_eq!(run(&mm, &[&a, &wq], out).err(), Some(Error::BadDType));
    let wi = i32t(&[5, 4], &[0; 20]);
    assert_eq!(run(&mm, &[&a, &wi], out).err(), Some(Error::BadDType));
    let scalar = f32t(&[], &[0.0]);
    assert_eq!(run(&mm, &[&scalar, &w], out).err(), Some(Error::BadShape));
}

/// Naive broadcast batch matmul over explicit indices.
fn batch_reference(a: &T, b: &T, out: &[u32]) -> Vec<f64> {
    let (av, bv) = (a.values(), b.values());
    let (ad, bd) = (a.desc.shape.dims(), b.desc.shape.dims());
    let (m, k, n) = (ad[ad.len() - 2] as usize, ad[ad.len() - 1] as usize, bd[bd.len() - 1] as usize);
    let batch = &out[..out.len() - 2];
    let nb: usize = batch.iter().map(|&d| d as usize).product();
    let pick = |dims: &[u32], idx: &[usize]| {
        let bdims = &dims[..dims.len() - 2];
        let pad = batch.len() - bdims.len();
        let own: Vec<usize> = bdims.iter().enumerate().map(|(i, &d)| if d == 1 { 0 } else { idx[pad + i] }).collect();
        ravel(&own, bdims)
    };
    let mut res = Vec::new();
    for bi in 0..nb {
        let idx = unravel(bi, batch);
        let (oa, ob) = (pick(ad, &idx) * m * k, pick(bd, &idx) * k * n);
        for r in 0..m {
            for c in 0..n {
                let s: f64 = (0..k).map(|i| av[oa + r * k + i] as f64 * bv[ob + i * n + c] as f64).sum();
                res.push(s);
            }
        }
    }
    res
}

#[test]
fn batch_matmul_broadcasts_batch_dims() {
    let mut rng = Rng(23);
    let cases: [(&[u32], &[u32], &[u32]); 4] = [
        (&[3, 4], &[4, 5], &[3, 5]),
        (&[2, 1, 3, 4], &[3, 4, 5], &[2, 3, 3, 5]),
        (&[2, 3, 4], &[1, 4, 2], &[2, 3, 2]),
        (&[1, 2, 1, 2, 3], &[4, 3, 3], &[1, 2, 4, 2, 3]),
    ];
    for (ad, bd, od) in cases {
        let na = ad.iter().product::<u32>() as usize;
        let nb = bd.iter().product::<u32>() as usize;
        let a = f32t(ad, &rng.vec(na, -1.0, 1.0));
        let b = f32t(bd, &rng.vec(nb, -1.0, 1.0));
        let got = run(&Op::BatchMatMul, &[&a, &b], desc(DType::F32, od)).unwrap();
        assert_close(&got.values(), &batch_reference(&a, &b, od), 1e-5, 1e-5);
    }
    let a = f32t(&[2, 3, 4], &[0.0; 24]);
    let b = f32t(&[3, 3, 5], &[0.0; 45]);
    let err = run(&Op::BatchMatMul, &[&a, &b], desc(DType::F32, &[2, 3, 5]));
    assert_eq!(err.err(), Some(Error::BadShape));
    let b = f32t(&[2, 4, 5], &[0.0; 40]);
    let err = run(&Op::BatchMatMul, &[&a, &b], desc(DType::F32, &[2, 3, 4]));
    assert_eq!(err.err(), Some(Error::BadShape));
}

#[test]
fn macs_count_multiply_accumulates() {
    let a = desc(DType::F32, &[2, 3, 8]);
    let w = desc(DType::F32, &[5, 8]);
    assert_eq!(macs(&Op::MatMul { has_bias: false }, &[a, w], &desc(DType::F32, &[2, 3, 5])), 240);
    let b = desc(DType::F32, &[8, 4]);
    assert_eq!(macs(&Op::BatchMatMul, &[a, b], &desc(DType::F32, &[2, 3, 4])), 192);
    assert_eq!(macs(&Op::MatMul { has_bias: false }, &[], &a), 0);
}

use super::super::macs;
