//! Random operands: whenever `check` accepts them, `execute` must not panic and may only
//! fail with a run-time error.

use std::vec;
use std::vec::Vec;

use super::Rng;
use crate::error::Error;
use crate::kernels::{check, execute, macs, Context};
use crate::ops::{Attention, BinaryOp, KvCache, MaskMode, Op, PositionBias, UnaryOp};
use crate::tensor::{DType, Desc, Out, Quant, Shape, Src, View, MAX_RANK};

const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::I8, DType::I32];

fn random_shape(rng: &mut Rng) -> Shape {
    let rank = rng.below(5) as usize;
    let dims: Vec<u32> = (0..rank).map(|_| rng.below(5) as u32).collect();
    Shape::new(&dims).unwrap()
}

fn random_desc(rng: &mut Rng, like: Option<Shape>) -> Desc {
    let shape = match like {
        Some(s) if rng.below(3) != 0 => s,
        _ => random_shape(rng),
    };
    let kinds = if rng.below(2) == 0 { 1 } else { 4 };
    let dtype = DTYPES[rng.below(kinds) as usize];
    let quant = Quant { scale: 0.1, zero_point: rng.below(7) as i32 - 3 };
    Desc { dtype, shape, quant }
}

fn random_op(rng: &mut Rng) -> Op {
    let axis = rng.below(4) as u8;
    match rng.below(14) {
        0 => Op::MatMul { has_bias: rng.below(2) == 0 },
        1 => Op::BatchMatMul,
        2 => Op::Binary(BinaryOp::Pow),
        3 => Op::Unary([UnaryOp::Gelu, UnaryOp::Identity][rng.below(2) as usize]),
        4 => Op::Softmax { axis },
        5 => Op::LayerNorm { eps: 1e-5, has_beta: rng.below(2) == 0 },
        6 => Op::RmsNorm { eps: 1e-5 },
        7 => Op::Gather { axis },
        8 => Op::Reshape,
        9 => {
            let mut perm = [0u8, 1, 2, 3, 4, 5];
            for i in (1..4).rev() {
                perm.swap(i, rng.below(i as u64 + 1) as usize);
            }
            if rng.below(4) == 0 {
                perm[rng.below(MAX_RANK as u64) as usize] = rng.below(7) as u8;
            }
            Op::Transpose { perm }
        }
        10 => Op::Concat { axis },
        11 => {
            let mut starts = [0u32; MAX_RANK];
            let mut steps = [1i32; MAX_RANK];
            for i in 0..MAX_RANK {
                starts[i] = rng.below(4) as u32;
                steps[i] = rng.below(5) as i32 - 2;
            }
            Op::Slice { starts, steps }
        }
        12 => Op::Positions { start: rng.below(5) as i32 - 2, step: rng.below(3) as i32 - 1 },
        _ => {
            let cache = (rng.below(2) == 0).then(|| KvCache {
                k_offset: rng.below(64) as u32,
                v_offset: rng.below(256) as u32,
                capacity: rng.below(6) as u32,
            });
            let mask = [MaskMode::None, MaskMode::Causal, MaskMode::Prefix][rng.below(3) as usize];
            let bias = match rng.below(3) {
                0 => PositionBias::None,
                1 => PositionBias::Buckets { buckets: rng.below(6) as u16 + 1, max_distance: 4, bidirectional: true },
                _ => PositionBias::XlRelative,
            };
            let (heads, key_mask) = (rng.below(3) as u16, rng.below(2) == 0);
            Op::Attention(Attention { heads, head_dim: rng.below(4) as u16, mask, key_mask, bias, scale: 0.5, cache })
        }
    }
}

fn dims(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(4) as u32 + 1).collect()
}

/// Nearly valid operands for the ops whose shapes are hard to hit at random.
fn structured(op: &Op, rng: &mut Rng) -> Option<(Vec<Desc>, Desc)> {
    let shapes: Vec<Vec<u32>> = match *op {
        Op::MatMul { has_bias } => {
            let (lead, nk) = (dims(rng, 2), dims(rng, 2));
            let mut a = lead.clone();
            a.push(nk[1]);
            let mut o = lead;
            o.push(nk[0]);
            let mut v = vec![a, nk.clone()];
            if has_bias {
                v.push(vec![nk[0]]);
            }
            v.push(vec![nk[0], 2]);
            v.push(o);
            v
        }
        Op::Attention(a) => {
            let hd = a.heads as u32 * a.head_dim as u32;
            let bs = dims(rng, 3);
            let (b, s) = (bs[0] % 2 + 1, bs[1]);
            let skv = if a.cache.is_some() || bs[2].is_multiple_of(2) { s } else { bs[2] };
            let x = vec![b, s, hd];
            let kv = vec![b, skv, hd];
            let positions = a.cache.map_or(skv, |c| c.capacity);
            let mut v = vec![x.clone(), kv.clone(), kv];
            if a.key_mask {
                v.push(vec![b, positions]);
            }
            if a.mask == MaskMode::Prefix {
                v.push(vec![b]);
            }
            match a.bias {
                PositionBias::None => {}
                PositionBias::Buckets { buckets, .. } => v.push(vec![buckets as u32, a.heads as u32]),
                PositionBias::XlRelative => {
                    v.extend([vec![hd], vec![hd], vec![positions + rng.below(2) as u32, hd]]);
                }
            }
            v.push(x);
            v
        }
        Op::Gather { axis } => {
            let extra = rng.below(2) as usize;
            let data = dims(rng, axis as usize + 1 + extra);
            let n_idx = rng.below(3) as usize;
            let idx = dims(rng, n_idx);
            let a = axis as usize;
            let o = [&data[..a], &idx[..], &data[(a + 1).min(data.len())..]].concat();
            vec![data, idx, o]
        }
        _ => return None,
    };
    let mut descs: Vec<Desc> = shapes
        .iter()
        .map(|s| {
            let mut d = random_desc(rng, None);
            d.shape = Shape::new(s).unwrap();
            d
        })
        .collect();
    let out = descs.pop()?;
    if let Op::Gather { .. } = op {
        descs[1].dtype = DType::I32;
    }
    let keep = descs.len() - rng.below(2) as usize;
    descs.truncate(keep);
    Some((descs, out))
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

#[test]
fn accepted_operands_never_panic() {
    let mut rng = Rng(0x5eed);
    let mut accepted = [0u32; 14];
    for _ in 0..300_000 {
        let op = random_op(&mut rng);
        let (inputs, out) = match structured(&op, &mut rng) {
            Some(operands) if rng.below(2) == 0 => operands,
            _ => {
                let base = random_shape(&mut rng);
                let n_in = rng.below(5) as usize;
                let inputs: Vec<Desc> = (0..n_in).map(|_| random_desc(&mut rng, Some(base))).collect();
                let out = random_desc(&mut rng, inputs.first().map(|d| d.shape));
                (inputs, out)
            }
        };
        let state_bytes = rng.below(2048) as usize;
        if check(&op, &inputs, &out, state_bytes).is_err() {
            continue;
        }
        let (kind, _) = op.encode();
        accepted[kind as usize - 1] += 1;
        let _ = macs(&op, &inputs, &out);
        let bufs: Vec<Vec<u8>> = inputs.iter().map(|d| random_bytes(&mut rng, d.byte_len())).collect();
        let scales: Vec<u8> = (0..64).flat_map(|_| 0.01f32.to_le_bytes()).collect();
        let in_place = op.allows_in_place()
            && rng.below(2) == 0
            && inputs[0].dtype.size() == out.dtype.size()
            && inputs[0].shape.numel() == out.shape.numel();
        let mut out_bytes = if in_place { bufs[0].clone() } else { random_bytes(&mut rng, out.byte_len()) };
        let srcs: Vec<Src<'_>> = inputs
            .iter()
            .zip(&bufs)
            .enumerate()
            .map(|(i, (d, b))| {
                if in_place && i == 0 {
                    Src::InPlace(*d)
                } else {
                    Src::View(View { desc: *d, bytes: b, channel_scales: Some(&scales) })
                }
            })
            .collect();
        let mut state = vec![0u8; state_bytes];
        let mut ctx = Context { position: rng.below(6) as u32, state: &mut state };
        let r = execute(&op, &srcs, &mut Out { desc: out, bytes: &mut out_bytes }, &mut ctx);
        if let Err(e) = r {
            assert!(matches!(e, Error::IndexOutOfRange | Error::StateFull), "{op:?}: {e:?}");
        }
    }
    std::println!("accepted per op kind: {accepted:?}");
    for (kind, &n) in accepted.iter().enumerate() {
        assert!(n >= 20, "op kind {} accepted only {n} times", kind + 1);
    }
}
