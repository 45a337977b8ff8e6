//! Gather and Positions.

use std::vec::Vec;

use super::*;
use crate::error::Error;

#[test]
fn gather_rows_with_negative_indices() {
    let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let table = f32t(&[3, 4], &data);
    let idx = i32t(&[2, 2], &[0, -1, 2, 1]);
    let got = run(&Op::Gather { axis: 0 }, &[&table, &idx], desc(DType::F32, &[2, 2, 4])).unwrap();
    let mut want = Vec::new();
    for row in [0usize, 2, 2, 1] {
        want.extend((0..4).map(|c| (row * 4 + c) as f64));
    }
    assert_close(&got.values(), &want, 0.0, 0.0);
}

#[test]
fn gather_inner_axis_matches_index_arithmetic() {
    let dims = [2u32, 5, 3];
    let data: Vec<f32> = (0..30).map(|v| v as f32 * 0.5).collect();
    let t = f32t(&dims, &data);
    let indices = [4, 0, -5, 3];
    let idx = i32t(&[4], &indices);
    let got = run(&Op::Gather { axis: 1 }, &[&t, &idx], desc(DType::F32, &[2, 4, 3])).unwrap();
    let mut want = Vec::new();
    for o in 0..2 {
        for &i in &indices {
            let i = if i < 0 { i + 5 } else { i } as usize;
            want.extend((0..3).map(|c| data[ravel(&[o, i, c], &dims)] as f64));
        }
    }
    assert_close(&got.values(), &want, 0.0, 0.0);
}

#[test]
fn gather_out_of_range_is_a_run_time_error() {
    let t = f32t(&[3, 2], &[0.0; 6]);
    for bad in [3, -4, i32::MAX, i32::MIN] {
        let idx = i32t(&[2], &[0, bad]);
        let err = run(&Op::Gather { axis: 0 }, &[&t, &idx], desc(DType::F32, &[2, 2]));
        assert_eq!(err.err(), Some(Error::IndexOutOfRange), "{bad}");
    }
}

#[test]
fn gather_copies_i32_exactly_and_converts_i8() {
    let big = i32t(&[2, 2], &[(1 << 24) + 1, -7, 123_456_789, 0]);
    let idx = i32t(&[1], &[1]);
    let got = run(&Op::Gather { axis: 0 }, &[&big, &idx], desc(DType::I32, &[1, 2])).unwrap();
    assert_eq!(got.bytes, big.bytes[8..]);
    let q = i8t(&[3, 2], &[1, 2, 3, 4, 5, 6], 0.5, 1);
    let got = run(&Op::Gather { axis: 0 }, &[&q, &idx], desc(DType::F32, &[1, 2])).unwrap();
    assert_eq!(got.values(), [1.0, 1.5]);
}

#[test]
fn gather_check_rejections() {
    let t = f32t(&[3, 2], &[0.0; 6]);
    let idx = i32t(&[2], &[0, 1]);
    let fidx = f32t(&[2], &[0.0, 1.0]);
    let out = desc(DType::F32, &[2, 2]);
    assert_eq!(run(&Op::Gather { axis: 2 }, &[&t, &idx], out).err(), Some(Error::BadParams));
    assert_eq!(run(&Op::Gather { axis: 0 }, &[&t, &fidx], out).err(), Some(Error::BadDType));
    let wrong = desc(DType::F32, &[2, 3]);
    assert_eq!(run(&Op::Gather { axis: 0 }, &[&t, &idx], wrong).err(), Some(Error::BadShape));
    assert_eq!(run(&Op::Gather { axis: 0 }, &[&t], out).err(), Some(Error::BadArity));
}

#[test]
fn positions_count_from_the_session_position() {
    let op = Op::Positions { start: 3, step: 2 };
    let mut state = [0u8; 0];
    let mut ctx = Context { position: 5, state: &mut state };
    let got = run_ctx(&op, &[], desc(DType::I32, &[3]), &mut ctx).unwrap();
    assert_eq!(got.values(), [8.0, 10.0, 12.0]);
    let down = Op::Positions { start: 0, step: -1 };
    let got = run_ctx(&down, &[], desc(DType::I32, &[2]), &mut ctx).unwrap();
    assert_eq!(got.values(), [5.0, 4.0]);
    let over = Op::Positions { start: i32::MAX - 6, step: 1 };
    let err = run_ctx(&over, &[], desc(DType::I32, &[3]), &mut ctx);
    assert_eq!(err.err(), Some(Error::IndexOutOfRange));
    let err = run(&op, &[], desc(DType::F32, &[3]));
    assert_eq!(err.err(), Some(Error::BadDType));
    let err = run(&op, &[], desc(DType::I32, &[3, 1]));
    assert_eq!(err.err(), Some(Error::BadShape));
}
