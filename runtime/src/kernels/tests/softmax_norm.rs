//! Softmax, LayerNorm, RMSNorm and ReduceSum against naive f64 references.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::error::Error;

fn softmax_reference(x: &[f32], dims: &[u32], axis: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (i, o) in out.iter_mut().enumerate() {
        let idx = unravel(i, dims);
        let lane = |k: usize| {
            let mut j = idx.clone();
            j[axis] = k;
            x[ravel(&j, dims)] as f64
        };
        let n = dims[axis] as usize;
        let max = (0..n).map(lane).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..n).map(|k| (lane(k) - max).exp()).sum();
        *o = (x[i] as f64 - max).exp() / sum;
    }
    out
}

#[test]
fn softmax_matches_naive_and_sums_to_one() {
    let mut rng = Rng(41);
    let dims = [3u32, 5, 4];
    let x = f32t(&dims, &rng.vec(60, -8.0, 8.0));
    for axis in 0..3 {
        let got = run(&Op::Softmax { axis: axis as u8 }, &[&x], desc(DType::F32, &dims)).unwrap();
        let got = got.values();
        assert_close(&got, &softmax_reference(&x.values(), &dims, axis), 1e-7, 1e-6);
        let n = dims[axis] as usize;
        for i in 0..60 {
            let idx = unravel(i, &dims);
            if idx[axis] == 0 {
                let s: f64 = (0..n)
                    .map(|k| {
                        let mut j = idx.clone();
                        j[axis] = k;
                        got[ravel(&j, &dims)] as f64
                    })
                    .sum();
                assert!((s - 1.0).abs() < 1e-6, "sum {s}");
            }
        }
    }
}

#[test]
fn softmax_is_stable_for_large_inputs() {
    let x = f32t(&[4], &[1000.0, 1001.0, 999.0, -1000.0]);
    let got = run(&Op::Softmax { axis: 0 }, &[&x], desc(DType::F32, &[4])).unwrap().values();
    assert_close(&got, &softmax_reference(&x.values(), &[4], 0), 1e-7, 1e-6);
    let q = run(&Op::Softmax { axis: 0 }, &[&x], qdesc(&[4], 1.0 / 256.0, -128)).unwrap();
    assert_eq!(q.raw_i8(), [-65, 42, -105, -128]);
    let err = run(&Op::Softmax { axis: 1 }, &[&x], desc(DType::F32, &[4]));
    assert_eq!(err.err(), Some(Error::BadParams));
}

fn norm_reference(x: &[f32], d: usize, gamma: &[f32], beta: Option<&[f32]>, eps: f64, rms: bool) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(d) {
        let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let (mean, denom) = if rms {
            (0.0, (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt())
        } else {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
            (mean, (var + eps).sqrt())
        };
        for i in 0..d {
            let y = (row[i] - mean) / denom * gamma[i] as f64;
            out.push(y + beta.map_or(0.0, |b| b[i] as f64));
        }
    }
    out
}

#[test]
fn layer_norm_and_rms_norm_match_naive() {
    let mut rng = Rng(42);
    let dims = [2u32, 3, 24];
    let x = f32t(&dims, &rng.vec(144, -3.0, 5.0));
    let g = f32t(&[24], &rng.vec(24, 0.5, 1.5));
    let b = f32t(&[24], &rng.vec(24, -1.0, 1.0));
    let out = desc(DType::F32, &dims);
    let (xv, gv, bv) = (x.values(), g.values(), b.values());
    let ln = Op::LayerNorm { eps: 1e-5, has_beta: true };
    let got = run(&ln, &[&x, &g, &b], out).unwrap();
    assert_close(&got.values(), &norm_reference(&xv, 24, &gv, Some(&bv), 1e-5, false), 1e-5, 1e-5);
    let ln = Op::LayerNorm { eps: 1e-3, has_beta: false };
    let got = run(&ln, &[&x, &g], out).unwrap();
    assert_close(&got.values(), &norm_reference(&xv, 24, &gv, None, 1e-3, false), 1e-5, 1e-5);
    let rms = Op::RmsNorm { eps: 1e-6 };
    let got = run(&rms, &[&x, &g], out).unwrap();
    assert_close(&got.values(), &norm_reference(&xv, 24, &gv, None, 1e-6, true), 1e-5, 1e-5);
}

#[test]
fn norm_rejects_bad_params_shapes() {
    let x = f32t(&[2, 4], &[0.0; 8]);
    let g = f32t(&[4], &[1.0; 4]);
    let g_bad = f32t(&[2, 4], &[1.0; 8]);
    let out = desc(DType::F32, &[2, 4]);
    let ln = Op::LayerNorm { eps: 1e-5, has_beta: true };
    assert_eq!(run(&ln, &[&x, &g], out).err(), Some(Error::BadArity));
    assert_eq!(run(&Op::RmsNorm { eps: 1e-5 }, &[&x, &g_bad], out).err(), Some(Error::BadShape));
    let scalar = f32t(&[], &[1.0]);
    let one = f32t(&[1], &[1.0]);
    let err = run(&Op::RmsNorm { eps: 1e-5 }, &[&scalar, &one], desc(DType::F32, &[]));
    assert_eq!(err.err(), Some(Error::BadShape));
}

#[test]
fn reduce_sum_matches_an_f64_sum_on_every_axis() {
    let mut rng = Rng(5);
    let data = rng.vec(2 * 3 * 4, -3.0, 3.0);
    let x = f32t(&[2, 3, 4], &data);
    let at = |i: usize, j: usize, k: usize| data[(i * 3 + j) * 4 + k] as f64;
    let dims = [2usize, 3, 4];
    for axis in 0..3u8 {
        let kept: Vec<u32> = (0..3).map(|d| if d == axis as usize { 1 } else { dims[d] as u32 }).collect();
        let got = run(&Op::ReduceSum { axis }, &[&x], desc(DType::F32, &kept)).unwrap().values();
        let mut want = Vec::new();
        for i in 0..kept[0] as usize {
            for j in 0..kept[1] as usize {
                for k in 0..kept[2] as usize {
                    let terms = (0..dims[axis as usize]).map(|r| match axis {
                        0 => at(r, j, k),
                        1 => at(i, r, k),
                        _ => at(i, j, r),
                    });
                    want.push(terms.sum::<f64>());
                }
            }
        }
        assert_close(&got, &want, 1e-5, 1e-6);
    }
    // The summed axis may also be dropped: same values, shape [2, 3].
    let dropped = run(&Op::ReduceSum { axis: 2 }, &[&x], desc(DType::F32, &[2, 3])).unwrap().values();
    let kept = run(&Op::ReduceSum { axis: 2 }, &[&x], desc(DType::F32, &[2, 3, 1])).unwrap().values();
    assert_eq!(dropped, kept);
    assert!(run(&Op::ReduceSum { axis: 3 }, &[&x], desc(DType::F32, &[2, 3, 4])).is_err(), "axis past the rank");
    assert!(run(&Op::ReduceSum { axis: 2 }, &[&x], desc(DType::F32, &[2, 4])).is_err(), "wrong output size");
}
