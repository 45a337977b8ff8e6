//! Reshape, Transpose, Concat and Slice against index arithmetic.

use std::vec::Vec;

use super::*;
use crate::error::Error;
use crate::tensor::MAX_RANK;

fn iota(dims: &[u32]) -> T {
    let n = dims.iter().product::<u32>() as usize;
    f32t(dims, &(0..n).map(|v| v as f32).collect::<Vec<_>>())
}

fn perm6(p: &[u8]) -> [u8; MAX_RANK] {
    let mut out = [0u8; MAX_RANK];
    out[..p.len()].copy_from_slice(p);
    out
}

#[test]
fn transpose_matches_index_arithmetic() {
    let dims = [2u32, 3, 4, 5];
    let x = iota(&dims);
    for p in [[0u8, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [0, 2, 1, 3]] {
        let od: Vec<u32> = p.iter().map(|&i| dims[i as usize]).collect();
        let got = run(&Op::Transpose { perm: perm6(&p) }, &[&x], desc(DType::F32, &od)).unwrap();
        let want: Vec<f64> = (0..120)
            .map(|i| {
                let oi = unravel(i, &od);
                let mut ii = [0usize; 4];
                for (ax, &pa) in p.iter().enumerate() {
                    ii[pa as usize] = oi[ax];
                }
                ravel(&ii, &dims) as f64
            })
            .collect();
        assert_close(&got.values(), &want, 0.0, 0.0);
    }
}

#[test]
fn transpose_rejects_bad_perms() {
    let x = iota(&[2, 3]);
    let out = desc(DType::F32, &[3, 2]);
    for p in [[0u8, 0], [1, 2], [2, 0]] {
        let err = run(&Op::Transpose { perm: perm6(&p) }, &[&x], out);
        assert_eq!(err.err(), Some(Error::BadParams), "{p:?}");
    }
    let err = run(&Op::Transpose { perm: perm6(&[1, 0]) }, &[&x], desc(DType::F32, &[2, 3]));
    assert_eq!(err.err(), Some(Error::BadShape));
}

#[test]
fn concat_joins_along_any_axis() {
    let a = iota(&[2, 1, 3]);
    let b = f32t(&[2, 2, 3], &[100.0; 12]);
    let c = quantized(&[2, 3, 3], &[-1.0; 18], 0.5, 0);
    let got = run(&Op::Concat { axis: 1 }, &[&a, &b, &c], desc(DType::F32, &[2, 6, 3])).unwrap();
    let got = got.values();
    for (i, &g) in got.iter().enumerate() {
        let idx = unravel(i, &[2, 6, 3]);
        let want = match idx[1] {
            0 => ravel(&[idx[0], 0, idx[2]], &[2, 1, 3]) as f32,
            1 | 2 => 100.0,
            _ => -1.0,
        };
        assert_eq!(g, want, "{idx:?}");
    }
    let err = run(&Op::Concat { axis: 1 }, &[&a, &b], desc(DType::F32, &[2, 4, 3]));
    assert_eq!(err.err(), Some(Error::BadShape));
    let d = iota(&[3, 1, 3]);
    let err = run(&Op::Concat { axis: 1 }, &[&a, &d], desc(DType::F32, &[2, 2, 3]));
    assert_eq!(err.err(), Some(Error::BadShape));
    let err = run(&Op::Concat { axis: 3 }, &[&a], desc(DType::F32, &[2, 1, 3]));
    assert_eq!(err.err(), Some(Error::BadParams));
    let err = run(&Op::Concat { axis: 0 }, &[], desc(DType::F32, &[2, 1, 3]));
    assert_eq!(err.err(), Some(Error::BadArity));
}

fn slice_op(starts: &[u32], steps: &[i32]) -> Op {
    let mut s = [0u32; MAX_RANK];
    let mut t = [1i32; MAX_RANK];
    s[..starts.len()].copy_from_slice(starts);
    t[..steps.len()].copy_from_slice(steps);
    Op::Slice { starts: s, steps: t }
}

#[test]
fn slice_reads_start_plus_index_times_step() {
    let dims = [4u32, 6, 5];
    let x = iota(&dims);
    let cases: [(&[u32], &[i32], &[u32]); 4] = [
        (&[1, 0, 2], &[1, 2, 1], &[3, 3, 3]),
        (&[3, 5, 4], &[-1, -2, -3], &[4, 3, 2]),
        (&[0, 1, 0], &[3, 4, 1], &[2, 2, 5]),
        (&[2, 2, 2], &[1, 1, 1], &[1, 1, 1]),
    ];
    for (starts, steps, od) in cases {
        let got = run(&slice_op(starts, steps), &[&x], desc(DType::F32, od)).unwrap();
        let n = od.iter().product::<u32>() as usize;
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let oi = unravel(i, od);
                let ii: Vec<usize> =
                    (0..3).map(|ax| (starts[ax] as i64 + oi[ax] as i64 * steps[ax] as i64) as usize).collect();
                ravel(&ii, &dims) as f64
            })
            .collect();
        assert_close(&got.values(), &want, 0.0, 0.0);
    }
}

#[test]
fn slice_rejects_reads_outside_the_input() {
    let x = iota(&[4, 6]);
    let cases: [(&[u32], &[i32], &[u32]); 6] = [
        (&[4, 0], &[1, 1], &[1, 6]),  // start past the end
        (&[1, 0], &[1, 1], &[4, 6]),  // runs off the end
        (&[1, 0], &[-1, 1], &[3, 6]), // runs below zero
        (&[0, 0], &[0, 1], &[1, 6]),  // zero step
        (&[0, 5], &[1, 2], &[4, 2]),  // strided overrun
        (&[0, 0], &[1, i32::MAX], &[4, 2]),
    ];
    for (starts, steps, od) in cases {
        let err = run(&slice_op(starts, steps), &[&x], desc(DType::F32, od));
        assert_eq!(err.err(), Some(Error::BadParams), "{starts:?} {steps:?} {od:?}");
    }
    let err = run(&slice_op(&[0, 0], &[1, 1]), &[&x], desc(DType::F32, &[4]));
    assert_eq!(err.err(), Some(Error::BadShape));
    // An empty extent reads nothing, whatever its start.
    let ok = run(&slice_op(&[9, 0], &[1, 1]), &[&x], desc(DType::F32, &[0, 6]));
    assert!(ok.is_ok());
}

#[test]
fn reshape_copies_and_converts() {
    let x = iota(&[2, 3]);
    let got = run(&Op::Reshape, &[&x], desc(DType::F32, &[3, 2])).unwrap();
    assert_eq!(got.bytes, x.bytes);
    let q = run(&Op::Reshape, &[&x], qdesc(&[6], 0.5, 0)).unwrap();
    assert_eq!(q.raw_i8(), [0, 2, 4, 6, 8, 10]);
    let err = run(&Op::Reshape, &[&x], desc(DType::F32, &[7]));
    assert_eq!(err.err(), Some(Error::BadShape));
    let ids = i32t(&[2], &[1, 2]);
    let err = run(&Op::Reshape, &[&ids], desc(DType::F32, &[2]));
    assert_eq!(err.err(), Some(Error::BadDType));
}
