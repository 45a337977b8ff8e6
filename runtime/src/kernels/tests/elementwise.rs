//! Binary (broadcast) and unary ops against f64 references.

use std::vec::Vec;

use super::*;
use crate::error::Error;
use crate::ops::{BinaryOp, UnaryOp};

const BINARY: [BinaryOp; 7] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow];

fn reference_binary(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Pow => a.powf(b),
    }
}

/// Broadcast reference by explicit index arithmetic.
fn broadcast_reference(op: BinaryOp, a: &T, b: &T, out: &[u32]) -> Vec<f64> {
    let (av, bv) = (a.values(), b.values());
    let n: usize = out.iter().map(|&d| d as usize).product();
    let pick = |t: &T, idx: &[usize]| {
        let dims = t.desc.shape.dims();
        let pad = out.len() - dims.len();
        let own: Vec<usize> = dims.iter().enumerate().map(|(i, &d)| if d == 1 { 0 } else { idx[pad + i] }).collect();
        ravel(&own, dims)
    };
    (0..n)
        .map(|i| {
            let idx = unravel(i, out);
            reference_binary(op, av[pick(a, &idx)] as f64, bv[pick(b, &idx)] as f64)
        })
        .collect()
}

#[test]
fn binary_broadcasts_like_numpy() {
    let mut rng = Rng(7);
    let cases: [(&[u32], &[u32], &[u32]); 5] = [
        (&[2, 1, 3], &[4, 1], &[2, 4, 3]),
        (&[3], &[2, 3], &[2, 3]),
        (&[], &[2, 2], &[2, 2]),
        (&[2, 1, 3, 1, 2, 1], &[1, 2, 1, 2, 1, 3], &[2, 2, 3, 2, 2, 3]),
        (&[5, 4], &[5, 4], &[5, 4]),
    ];
    for (ad, bd, od) in cases {
        let na = ad.iter().product::<u32>() as usize;
        let nb = bd.iter().product::<u32>() as usize;
        let a = f32t(ad, &rng.vec(na, 0.5, 3.0));
        let b = f32t(bd, &rng.vec(nb, -2.0, 2.0));
        for op in BINARY {
            let got = run(&Op::Binary(op), &[&a, &b], desc(DType::F32, od)).unwrap();
            let want = broadcast_reference(op, &a, &b, od);
            assert_close(&got.values(), &want, 1e-6, 1e-6);
        }
    }
}

#[test]
fn binary_rejects_incompatible_shapes() {
    let a = f32t(&[2, 3], &[0.0; 6]);
    let b = f32t(&[4, 3], &[0.0; 12]);
    let op = Op::Binary(BinaryOp::Add);
    assert_eq!(run(&op, &[&a, &b], desc(DType::F32, &[4, 3])).err(), Some(Error::BadShape));
    let c = f32t(&[3], &[0.0; 3]);
    assert_eq!(run(&op, &[&a, &c], desc(DType::F32, &[3, 3])).err(), Some(Error::BadShape));
    assert_eq!(run(&op, &[&a], desc(DType::F32, &[2, 3])).err(), Some(Error::BadArity));
    let i = i32t(&[3], &[1, 2, 3]);
    assert_eq!(run(&op, &[&a, &i], desc(DType::F32, &[2, 3])).err(), Some(Error::BadDType));
}

fn reference_unary(op: UnaryOp, x: f64) -> f64 {
    use core::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};
    match op {
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erf(x / SQRT_2)),
        UnaryOp::GeluTanh => {
            let c = (FRAC_2_SQRT_PI / SQRT_2) * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + c.tanh())
        }
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Neg => -x,
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Identity => x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Softplus => x.exp().ln_1p(),
    }
}

const UNARY: [UnaryOp; 17] = [
    UnaryOp::Relu,
    UnaryOp::Gelu,
    UnaryOp::GeluTanh,
    UnaryOp::Silu,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Exp,
    UnaryOp::Sqrt,
    UnaryOp::Neg,
    UnaryOp::Erf,
    UnaryOp::Abs,
    UnaryOp::Reciprocal,
    UnaryOp::Identity,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Log,
    UnaryOp::Softplus,
];

#[test]
fn unary_known_values() {
    let one = f32t(&[1], &[1.0]);
    let known = [
        (UnaryOp::Gelu, 0.841_344_746_068_542_9),
        (UnaryOp::GeluTanh, 0.841_191_990_608_276_8),
        (UnaryOp::Silu, 0.731_058_578_630_004_9),
        (UnaryOp::Tanh, 0.761_594_155_955_764_9),
        (UnaryOp::Sigmoid, 0.731_058_578_630_004_9),
        (UnaryOp::Exp, core::f64::consts::E),
        (UnaryOp::Erf, 0.842_700_792_949_714_9),
        (UnaryOp::Relu, 1.0),
        (UnaryOp::Neg, -1.0),
    ];
    for (op, want) in known {
        let got = run(&Op::Unary(op), &[&one], desc(DType::F32, &[1])).unwrap().values();
        assert_close(&got, &[want], 0.0, 2e-7);
    }
}

#[test]
fn unary_matches_f64_formulas() {
    let mut rng = Rng(11);
    let data = rng.vec(200, -6.0, 6.0);
    let x = f32t(&[10, 20], &data);
    let pos = f32t(&[10, 20], &rng.vec(200, 0.01, 50.0));
    for op in UNARY {
        let input = if matches!(op, UnaryOp::Sqrt | UnaryOp::Reciprocal | UnaryOp::Log) { &pos } else { &x };
        let got = run(&Op::Unary(op), &[input], desc(DType::F32, &[10, 20])).unwrap();
        let want: Vec<f64> = input.values().iter().map(|&v| reference_unary(op, v as f64)).collect();
        assert_close(&got.values(), &want, 1e-6, 1e-6);
    }
}

#[test]
fn int8_elementwise_is_within_one_quantum() {
    let mut rng = Rng(3);
    let x = i8t(&[64], &rng.i8s(64), 0.05, -7);
    let out = qdesc(&[64], 0.02, 5);
    for op in [UnaryOp::Gelu, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Relu] {
        let got = run(&Op::Unary(op), &[&x], out).unwrap().values();
        let want: Vec<f64> = x.values().iter().map(|&v| reference_unary(op, v as f64)).collect();
        let clamped: Vec<f64> = want.iter().map(|w| w.clamp(-133.0 * 0.02, 122.0 * 0.02)).collect();
        assert_close(&got, &clamped, 0.5 * 0.02 + 1e-6, 0.0);
    }
    let y = i8t(&[64], &rng.i8s(64), 0.03, 2);
    let sum = run(&Op::Binary(BinaryOp::Add), &[&x, &y], qdesc(&[64], 0.1, 0)).unwrap();
    let want: Vec<f64> = x.values().iter().zip(y.values()).map(|(&a, b)| (a + b) as f64).collect();
    assert_close(&sum.values(), &want, 0.05 + 1e-6, 0.0);
}

#[test]
fn identity_converts_between_dtypes() {
    let x = f32t(&[4], &[-1.0, 0.26, 1.5, 100.0]);
    let q = run(&Op::Unary(UnaryOp::Identity), &[&x], qdesc(&[4], 0.5, 1)).unwrap();
    assert_eq!(q.raw_i8(), [-1, 2, 4, 127]);
    let back = run(&Op::Unary(UnaryOp::Identity), &[&q], desc(DType::F32, &[4])).unwrap();
    assert_eq!(back.values(), [-1.0, 0.5, 1.5, 63.0]);
    let ids = i32t(&[3], &[7, -3, 1 << 20]);
    let f = run(&Op::Unary(UnaryOp::Identity), &[&ids], desc(DType::F32, &[3])).unwrap();
    assert_eq!(f.values(), [7.0, -3.0, (1 << 20) as f32]);
    let same = run(&Op::Unary(UnaryOp::Identity), &[&ids], desc(DType::I32, &[3])).unwrap();
    assert_eq!(same.bytes, ids.bytes);
    let h = f16t(&[2], &[0.5, -2.0]);
    let f = run(&Op::Unary(UnaryOp::Identity), &[&h], desc(DType::F32, &[2])).unwrap();
    assert_eq!(f.values(), [0.5, -2.0]);
}

#[test]
fn in_place_matches_out_of_place() {
    let mut rng = Rng(5);
    let a = f32t(&[3, 4], &rng.vec(12, 0.1, 2.0));
    let b = f32t(&[4], &rng.vec(4, -1.0, 1.0));
    let od = desc(DType::F32, &[3, 4]);
    for op in UNARY {
        let x = run(&Op::Unary(op), &[&a], od).unwrap();
        let y = run_in_place(&Op::Unary(op), &[&a], 0, od).unwrap();
        assert_eq!(x.bytes, y.bytes, "{op:?}");
    }
    for op in BINARY {
        let x = run(&Op::Binary(op), &[&a, &b], od).unwrap();
        let y = run_in_place(&Op::Binary(op), &[&a, &b], 0, od).unwrap();
        assert_eq!(x.bytes, y.bytes, "{op:?}");
        // The second operand in place, when it has the output's shape.
        let x = run(&Op::Binary(op), &[&b, &a], od).unwrap();
        let y = run_in_place(&Op::Binary(op), &[&b, &a], 1, od).unwrap();
        assert_eq!(x.bytes, y.bytes, "{op:?}");
    }
    let q = i8t(&[12], &rng.i8s(12), 0.1, 3);
    let qd = qdesc(&[12], 0.07, -2);
    let x = run(&Op::Unary(UnaryOp::Gelu), &[&q], qd).unwrap();
    let y = run_in_place(&Op::Unary(UnaryOp::Gelu), &[&q], 0, qd).unwrap();
    assert_eq!(x.bytes, y.bytes);
    let r = run_in_place(&Op::Reshape, &[&a], 0, desc(DType::F32, &[12])).unwrap();
    assert_eq!(r.bytes, a.bytes);
}

#[test]
fn in_place_is_refused_where_unsafe() {
    let a = f32t(&[4], &[1.0; 4]);
    let err = run_in_place(&Op::Softmax { axis: 0 }, &[&a], 0, desc(DType::F32, &[4]));
    assert_eq!(err.err(), Some(Error::BadParams));
    // Same byte size but a different element count.
    let b = f32t(&[4, 4], &[1.0; 16]);
    let err = run_in_place(&Op::Binary(BinaryOp::Add), &[&a, &b], 0, qdesc(&[4, 4], 1.0, 0));
    assert_eq!(err.err(), Some(Error::BadParams));
}
