//! GroupNorm against a scalar f64 reference, its dtype paths, and its validation.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::error::Error;
use crate::kernels::macs;

/// Naive GroupNorm in f64: for every (sample, group), the mean and biased variance over the
/// group's channels and positions, then per-channel affine.
fn group_norm_reference(x: &[f32], dims: &[u32], groups: usize, gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
    let (n, c) = (dims[0] as usize, dims[1] as usize);
    let plane: usize = dims[2..].iter().map(|&d| d as usize).product();
    let per = c / groups;
    let mut out = vec![0.0; x.len()];
    for s in 0..n {
        for g in 0..groups {
            let idx: Vec<usize> =
                (g * per..(g + 1) * per).flat_map(|ch| (0..plane).map(move |p| (s * c + ch) * plane + p)).collect();
            let mean = idx.iter().map(|&i| x[i] as f64).sum::<f64>() / idx.len() as f64;
            let var = idx.iter().map(|&i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / idx.len() as f64;
            for &i in &idx {
                let ch = (i / plane) % c;
                out[i] = (x[i] as f64 - mean) / (var + eps).sqrt() * gamma[ch] as f64 + beta[ch] as f64;
            }
        }
    }
    out
}

#[test]
fn group_norm_matches_the_f64_reference_for_every_grouping() {
    let mut rng = Rng(77);
    for dims in [vec![2u32, 12, 5, 3], vec![1, 8, 16], vec![3, 6], vec![1, 4, 2, 2, 2]] {
        let c = dims[1] as usize;
        let numel: usize = dims.iter().map(|&d| d as usize).product();
        // Offset inputs: a one-pass variance would lose digits here.
        let x = f32t(&dims, &rng.vec(numel, 40.0, 46.0));
        let gamma = f32t(&[c as u32], &rng.vec(c, 0.5, 1.5));
        let beta = f32t(&[c as u32], &rng.vec(c, -1.0, 1.0));
        for groups in (1..=c).filter(|g| c.is_multiple_of(*g)) {
            for eps in [1e-5f32, 1e-3] {
                let op = Op::GroupNorm { eps, groups: groups as u16 };
                let got = run(&op, &[&x, &gamma, &beta], desc(DType::F32, &dims)).unwrap();
                let want =
                    group_norm_reference(&x.values(), &dims, groups, &gamma.values(), &beta.values(), eps as f64);
                assert_close(&got.values(), &want, 2e-6, 2e-6);
            }
        }
    }
}

#[test]
fn instance_norm_is_one_group_per_channel() {
    // groups = C: every channel of every sample normalised on its own.
    let x = f32t(&[1, 2, 3], &[1.0, 2.0, 3.0, 10.0, 10.0, 40.0]);
    let ones = f32t(&[2], &[1.0, 1.0]);
    let zeros = f32t(&[2], &[0.0, 0.0]);
    let op = Op::GroupNorm { eps: 0.0, groups: 2 };
    let got = run(&op, &[&x, &ones, &zeros], desc(DType::F32, &[1, 2, 3])).unwrap().values();
    let a = (2.0f64 / 3.0).sqrt().recip();
    let b = 200f64.sqrt().recip();
    assert_close(&got, &[-a, 0.0, a, -10.0 * b, -10.0 * b, 20.0 * b], 1e-6, 1e-6);
}

#[test]
fn group_norm_reads_f16_and_int8_and_writes_int8() {
    let mut rng = Rng(78);
    let dims = [1u32, 8, 4, 4];
    let xv = rng.vec(128, -2.0, 2.0);
    let gv = rng.vec(8, 0.5, 1.5);
    let bv = rng.vec(8, -0.5, 0.5);
    let op = Op::GroupNorm { eps: 1e-5, groups: 4 };
    let (scale, zp) = (4.0 / 255.0, 0);
    let xq = quantized(&dims, &xv, scale, zp);
    // The reference sees exactly what the kernel reads: the dequantised input, f16 parameters.
    let (g16, b16) = (f16t(&[8], &gv), f16t(&[8], &bv));
    let want = group_norm_reference(&xq.values(), &dims, 4, &g16.values(), &b16.values(), 1e-5);
    let got = run(&op, &[&xq, &g16, &b16], desc(DType::F32, &dims)).unwrap();
    assert_close(&got.values(), &want, 1e-5, 1e-5);
    let out_q = qdesc(&dims, 8.0 / 255.0, 0);
    let got = run(&op, &[&xq, &g16, &b16], out_q).unwrap();
    // One rounding step of the output scale.
    assert_close(&got.values(), &want, 0.5 * 8.0 / 255.0 + 1e-6, 0.0);
}

#[test]
fn group_norm_rejects_malformed_operands() {
    let x = f32t(&[1, 6, 2], &[0.5; 12]);
    let p6 = f32t(&[6], &[1.0; 6]);
    let out = desc(DType::F32, &[1, 6, 2]);
    let gn = |groups| Op::GroupNorm { eps: 1e-5, groups };
    assert_eq!(run(&gn(4), &[&x, &p6, &p6], out).err(), Some(Error::BadShape), "6 channels in 4 groups");
    assert_eq!(run(&gn(0), &[&x, &p6, &p6], out).err(), Some(Error::BadParams), "zero groups");
    assert_eq!(run(&gn(3), &[&x, &p6], out).err(), Some(Error::BadArity), "no beta");
    let p3 = f32t(&[3], &[1.0; 3]);
    assert_eq!(run(&gn(3), &[&x, &p3, &p3], out).err(), Some(Error::BadShape), "per-group parameters");
    assert_eq!(run(&gn(3), &[&x, &p6, &p6], desc(DType::F32, &[1, 6, 3])).err(), Some(Error::BadShape));
    let nan = Op::GroupNorm { eps: f32::NAN, groups: 3 };
    assert_eq!(run(&nan, &[&x, &p6, &p6], out).err(), Some(Error::BadParams));
    let idx = i32t(&[1, 6, 2], &[0; 12]);
    assert_eq!(run(&gn(3), &[&idx, &p6, &p6], out).err(), Some(Error::BadDType));
    let flat = f32t(&[6], &[0.0; 6]);
    assert_eq!(run(&gn(3), &[&flat, &p6, &p6], desc(DType::F32, &[6])).err(), Some(Error::BadShape), "rank 1");
    let d = |t: &T| t.desc;
    assert_eq!(macs(&gn(3), &[d(&x), d(&p6), d(&p6)], &out), 12);
}

#[test]
fn accepted_group_norms_never_panic() {
    let mut rng = Rng(79);
    let dtypes = [DType::F32, DType::F16, DType::I8, DType::I32];
    let mut accepted = 0;
    for _ in 0..20_000 {
        let rank = rng.below(5) as usize;
        let dims: Vec<u32> = (0..rank).map(|_| rng.below(7) as u32).collect();
        let c = dims.get(1).copied().unwrap_or(rng.below(7) as u32);
        let keep = 3 - (rng.below(8) == 0) as usize;
        let mut pick = |shape: &[u32]| {
            let mut d = desc(dtypes[rng.below(4) as usize], shape);
            d.quant = Quant { scale: 0.05, zero_point: rng.below(9) as i32 - 4 };
            d
        };
        let mut inputs = vec![pick(&dims), pick(&[c]), pick(&[c])];
        inputs.truncate(keep);
        let out = pick(&dims);
        let op = Op::GroupNorm { eps: 1e-5, groups: rng.below(7) as u16 };
        if check(&op, &inputs, &out, 0).is_err() {
            continue;
        }
        accepted += 1;
        let bufs: Vec<Vec<u8>> = inputs.iter().map(|d| (0..d.byte_len()).map(|_| rng.next() as u8).collect()).collect();
        let srcs: Vec<Src<'_>> = inputs
            .iter()
            .zip(&bufs)
            .map(|(d, b)| Src::View(View { desc: *d, bytes: b, channel_scales: None }))
            .collect();
        let mut bytes = vec![0u8; out.byte_len()];
        let mut ctx = Context { position: 0, state: &mut [] };
        execute(&op, &srcs, &mut Out { desc: out, bytes: &mut bytes }, &mut ctx).unwrap();
    }
    assert!(accepted > 200, "only {accepted} accepted");
}
