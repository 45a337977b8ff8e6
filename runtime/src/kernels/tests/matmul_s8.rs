//! The int8 MatMul path: exact against an i64 reference, close to the float matmul.

use std::vec::Vec;

use super::*;
use crate::error::Error;
use crate::kernels::mat_mult_nt_t_s8;
use crate::quant::{multiply_by_quantized_multiplier, quantize_multiplier};

struct Case {
    a: T,
    w: T,
    bias: T,
    s_w: Vec<f32>,
    rows: usize,
    n: usize,
    k: usize,
}

fn case(seed: u64, rows: usize, n: usize, k: usize) -> Case {
    let mut rng = Rng(seed);
    let (s_a, zp) = (0.04, -5);
    let a = i8t(&[rows as u32, k as u32], &rng.i8s(rows * k), s_a, zp);
    let mut w = i8t(&[n as u32, k as u32], &rng.i8s(n * k), 1.0, 0);
    let s_w: Vec<f32> = (0..n).map(|_| rng.uniform(0.002, 0.02)).collect();
    w.scales = Some(s_w.iter().flat_map(|s| s.to_le_bytes()).collect());
    let bias: Vec<i32> = (0..n).map(|_| (rng.next() % 20001) as i32 - 10000).collect();
    let bias = i32t(&[n as u32], &bias);
    Case { a, w, bias, s_w, rows, n, k }
}

/// Exact i64 accumulators: `bias + Σ (a - zp) · w`.
fn acc_reference(c: &Case) -> Vec<i64> {
    let (a, w) = (c.a.raw_i8(), c.w.raw_i8());
    let bias: Vec<i32> = c.bias.bytes.chunks(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let zp = c.a.desc.quant.zero_point as i64;
    let mut out = Vec::new();
    for r in 0..c.rows {
        for j in 0..c.n {
            let dot: i64 = (0..c.k).map(|i| (a[r * c.k + i] as i64 - zp) * w[j * c.k + i] as i64).sum();
            out.push(dot + bias[j] as i64);
        }
    }
    out
}

#[test]
fn f32_output_is_the_exact_integer_accumulator_scaled() {
    let c = case(31, 5, 7, 70);
    let op = Op::MatMul { has_bias: true };
    let got = run(&op, &[&c.a, &c.w, &c.bias], desc(DType::F32, &[5, 7])).unwrap().values();
    let s_a = c.a.desc.quant.scale;
    for (i, acc) in acc_reference(&c).into_iter().enumerate() {
        let want = acc as f32 * (s_a * c.s_w[i % c.n]);
        assert_eq!(got[i].to_bits(), want.to_bits(), "element {i}");
    }
}

#[test]
fn i8_output_requantises_exactly_and_tracks_float() {
    let c = case(32, 6, 5, 129);
    let (s_out, out_zp) = (0.2f32, 3);
    let s_a = c.a.desc.quant.scale;
    let mut table = Vec::new();
    for &s_w in &c.s_w {
        let (m, sh) = quantize_multiplier(s_a as f64 * s_w as f64 / s_out as f64);
        table.extend([m, sh]);
    }
    let table_t = i32t(&[c.n as u32, 2], &table);
    let op = Op::MatMul { has_bias: true };
    let got = run(&op, &[&c.a, &c.w, &c.bias, &table_t], qdesc(&[6, 5], s_out, out_zp)).unwrap();
    let got = got.raw_i8();
    // Exact: the i64 accumulator through the (separately tested) fixed-point multiplier.
    for (i, acc) in acc_reference(&c).into_iter().enumerate() {
        let j = i % c.n;
        let q = out_zp as i64 + multiply_by_quantized_multiplier(acc as i32, table[2 * j], table[2 * j + 1]) as i64;
        assert_eq!(got[i] as i64, q.clamp(-128, 127), "element {i}");
    }
    // Close to the float matmul of the dequantised operands (bias at scale s_a · s_w).
    let (av, wv) = (c.a.values(), c.w.values());
    for r in 0..c.rows {
        for j in 0..c.n {
            let b = i32::from_le_bytes(c.bias.bytes[4 * j..4 * j + 4].try_into().unwrap());
            // `w` holds raw int8 values (per-tensor scale 1); its real scale is per channel.
            let mut real = b as f64 * s_a as f64;
            for i in 0..c.k {
                real += av[r * c.k + i] as f64 * wv[j * c.k + i] as f64;
            }
            real *= c.s_w[j] as f64;
            let want = (real / s_out as f64).round() + out_zp as f64;
            let got = got[r * c.n + j] as f64;
            assert!((got - want.clamp(-128.0, 127.0)).abs() <= 1.0, "({r},{j}) {got} vs {want}");
        }
    }
}

#[test]
fn int8_path_arity_and_dtypes() {
    let c = case(33, 2, 3, 4);
    let op = Op::MatMul { has_bias: true };
    // An i8 output needs the requantisation table.
    let err = run(&op, &[&c.a, &c.w, &c.bias], qdesc(&[2, 3], 0.1, 0));
    assert_eq!(err.err(), Some(Error::BadArity));
    let fbias = f32t(&[3], &[0.0; 3]);
    let err = run(&op, &[&c.a, &c.w, &fbias], desc(DType::F32, &[2, 3]));
    assert_eq!(err.err(), Some(Error::BadDType));
    let bad_table = i32t(&[3, 3], &[0; 9]);
    let err = run(&op, &[&c.a, &c.w, &c.bias, &bad_table], qdesc(&[2, 3], 0.1, 0));
    assert_eq!(err.err(), Some(Error::BadShape));
    let bad_zp = i8t(&[2, 4], &[0; 8], 0.1, 300);
    let err = run(&op, &[&bad_zp, &c.w, &c.bias], desc(DType::F32, &[2, 3]));
    assert_eq!(err.err(), Some(Error::BadDType));
}

#[test]
fn inner_loop_wraps_and_validates_lengths() {
    let lhs = [0x80u8; 4]; // -128
    let rhs = [0x80u8; 4];
    let bias = i32::MAX.to_le_bytes();
    let mut seen = Vec::new();
    mat_mult_nt_t_s8(&lhs, &rhs, Some(&bias), 0, 1, 1, 4, |r, c, acc| seen.push((r, c, acc))).unwrap();
    assert_eq!(seen, [(0, 0, i32::MAX.wrapping_add(4 * 16384))]);
    let short = mat_mult_nt_t_s8(&lhs[..3], &rhs, None, 0, 1, 1, 4, |_, _, _| {});
    assert_eq!(short, Err(Error::SizeMismatch));
    let huge = mat_mult_nt_t_s8(&lhs, &rhs, None, 0, usize::MAX, 2, 4, |_, _, _| {});
    assert_eq!(huge, Err(Error::SizeMismatch));
}

#[test]
fn short_channel_scales_are_an_error_not_a_panic() {
    let mut c = case(34, 2, 3, 4);
    c.w.scales = Some(std::vec![0u8; 8]);
    let err = run(&Op::MatMul { has_bias: true }, &[&c.a, &c.w, &c.bias], desc(DType::F32, &[2, 3]));
    assert_eq!(err.err(), Some(Error::SizeMismatch));
}
