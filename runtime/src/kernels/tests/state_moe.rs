//! `LoadState`/`StoreState` round trips and bounds, and the top-1 `Moe` block against a naive
//! dense reference that evaluates every expert and keeps the routed one.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::error::Error;
use crate::ops::UnaryOp;

#[test]
fn state_round_trips_between_calls() {
    let x = f32t(&[2, 3], &[1.0, -2.0, 3.5, 0.0, 7.0, -1.25]);
    let d = x.desc;
    let mut state = vec![0u8; 16 + 24];
    let mut ctx = Context { position: 0, state: &mut state };
    let stored = run_ctx(&Op::StoreState { offset: 16 }, &[&x], d, &mut ctx).unwrap();
    assert_eq!(stored.bytes, x.bytes, "passes its input through");
    let loaded = run_ctx(&Op::LoadState { offset: 16 }, &[], d, &mut ctx).unwrap();
    assert_eq!(loaded.values(), x.values());
    assert_eq!(&state[16..], &x.bytes[..]);
    // In place: the output already holds the input.
    let op = Op::StoreState { offset: 16 };
    assert_eq!(run_in_place(&op, &[&x], 0, d).map(|t| t.bytes).err(), Some(Error::BadParams), "state of 0 bytes");
}

#[test]
fn state_slots_must_fit_after_the_header() {
    let d = desc(DType::F32, &[4]);
    assert_eq!(check(&Op::LoadState { offset: 8 }, &[], &d, 64), Err(Error::BadParams), "inside the header");
    assert_eq!(check(&Op::LoadState { offset: 56 }, &[], &d, 64), Err(Error::BadParams), "past the end");
    assert_eq!(check(&Op::LoadState { offset: u32::MAX }, &[], &d, 64), Err(Error::BadParams));
    assert!(check(&Op::LoadState { offset: 48 }, &[], &d, 64).is_ok());
    assert_eq!(check(&Op::StoreState { offset: 16 }, &[], &d, 64), Err(Error::BadArity));
    let other = desc(DType::F32, &[2, 2]);
    assert_eq!(check(&Op::StoreState { offset: 16 }, &[other], &d, 64), Err(Error::BadShape));
    // A run with a shorter state than checked is an error, not a panic.
    let mut ctx = Context { position: 0, state: &mut [0u8; 20] };
    assert_eq!(run_ctx(&Op::LoadState { offset: 16 }, &[], d, &mut ctx).err(), Some(Error::BadParams));
}

struct Experts {
    e: usize,
    f: usize,
    d: usize,
    router: Vec<f32>,
    rbias: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Experts {
    fn random(rng: &mut Rng, e: usize, f: usize, d: usize) -> Self {
        Experts {
            e,
            f,
            d,
            router: rng.vec(e * d, -1.0, 1.0),
            rbias: rng.vec(e, -0.5, 0.5),
            w1: rng.vec(e * f * d, -0.5, 0.5),
            b1: rng.vec(e * f, -0.1, 0.1),
            w2: rng.vec(e * d * f, -0.5, 0.5),
            b2: rng.vec(e * d, -0.1, 0.1),
        }
    }

    fn tensors(&self) -> Vec<T> {
        let (e, f, d) = (self.e as u32, self.f as u32, self.d as u32);
        vec![
            f32t(&[e, d], &self.router),
            f32t(&[e], &self.rbias),
            f32t(&[e, f, d], &self.w1),
            f32t(&[e, f], &self.b1),
            f32t(&[e, d, f], &self.w2),
            f32t(&[e, d], &self.b2),
        ]
    }

    /// Every expert evaluated densely in f64; the routed one weighted by its probability.
    fn reference(&self, x: &[f32], capacity: usize) -> (Vec<f64>, Vec<usize>) {
        let (e, f, d) = (self.e, self.f, self.d);
        let mut out = vec![0.0; x.len()];
        let mut usage = vec![0usize; e];
        for (t, row) in x.chunks(d).enumerate() {
            let logits: Vec<f64> = (0..e)
                .map(|i| {
                    self.rbias[i] as f64 + (0..d).map(|j| self.router[i * d + j] as f64 * row[j] as f64).sum::<f64>()
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let outputs: Vec<Vec<f64>> = (0..e)
                .map(|i| {
                    let h: Vec<f64> = (0..f)
                        .map(|k| {
                            let z = self.b1[i * f + k] as f64
                                + (0..d).map(|j| self.w1[(i * f + k) * d + j] as f64 * row[j] as f64).sum::<f64>();
                            z.max(0.0)
                        })
                        .collect();
                    (0..d)
                        .map(|j| {
                            self.b2[i * d + j] as f64
                                + (0..f).map(|k| self.w2[(i * d + j) * f + k] as f64 * h[k]).sum::<f64>()
                        })
                        .collect()
                })
                .collect();
            let chosen = (0..e).find(|&i| logits[i] == max).unwrap();
            usage[chosen] += 1;
            if capacity == 0 || usage[chosen] <= capacity {
                for j in 0..d {
                    out[t * d + j] = outputs[chosen][j] / sum;
                }
            }
        }
        (out, usage)
    }
}

#[test]
fn moe_runs_the_routed_expert_only() {
    let mut rng = Rng(71);
    let ex = Experts::random(&mut rng, 4, 12, 8);
    let x = f32t(&[2, 10, 8], &rng.vec(160, -2.0, 2.0));
    let weights = ex.tensors();
    let mut ins = vec![&x];
    ins.extend(weights.iter());
    for capacity in [0usize, 3] {
        let op = Op::Moe { activation: UnaryOp::Relu, capacity: capacity as u32 };
        let got = run(&op, &ins, x.desc).unwrap();
        let (want, usage) = ex.reference(&x.values(), capacity);
        assert_close(&got.values(), &want, 1e-5, 1e-5);
        assert!(usage.iter().filter(|&&u| u > 0).count() > 1, "the router must use several experts: {usage:?}");
        if capacity > 0 {
            let dropped = got.values().chunks(8).filter(|r| r.iter().all(|&v| v == 0.0)).count();
            let want_dropped: usize = usage.iter().map(|&u| u.saturating_sub(capacity)).sum();
            assert_eq!(dropped, want_dropped);
            assert!(dropped > 0, "capacity 3 must drop tokens for 20 tokens and 4 experts");
        }
    }
}

#[test]
fn moe_macs_are_the_router_plus_one_expert() {
    let d = |dims: &[u32]| desc(DType::F32, dims);
    let (e, f, dm, t) = (8u64, 32u64, 16u64, 5u64);
    let ins = [d(&[5, 16]), d(&[8, 16]), d(&[8]), d(&[8, 32, 16]), d(&[8, 32]), d(&[8, 16, 32]), d(&[8, 16])];
    let op = Op::Moe { activation: UnaryOp::Gelu, capacity: 0 };
    check(&op, &ins, &ins[0], 0).unwrap();
    let dense_all_experts = t * (e * dm + e * 2 * f * dm);
    let one_expert = t * (e * dm + 2 * f * dm);
    assert_eq!(super::super::macs(&op, &ins, &ins[0]), one_expert);
    assert!(one_expert * 4 < dense_all_experts);
}

#[test]
fn moe_rejects_malformed_operands() {
    let d = |dims: &[u32]| desc(DType::F32, dims);
    let op = Op::Moe { activation: UnaryOp::Relu, capacity: 0 };
    let good = [d(&[5, 16]), d(&[8, 16]), d(&[8]), d(&[8, 32, 16]), d(&[8, 32]), d(&[8, 16, 32]), d(&[8, 16])];
    assert!(check(&op, &good, &good[0], 0).is_ok());
    assert_eq!(check(&op, &good[..6], &good[0], 0), Err(Error::BadArity));
    let mut bad = good;
    bad[5] = d(&[8, 32, 16]);
    assert_eq!(check(&op, &bad, &good[0], 0), Err(Error::BadShape));
    let mut int_weights = good;
    int_weights[3].dtype = DType::I32;
    assert_eq!(check(&op, &int_weights, &good[0], 0), Err(Error::BadDType));
    let many = [d(&[5, 16]), d(&[65, 16]), d(&[65]), d(&[65, 2, 16]), d(&[65, 2]), d(&[65, 16, 2]), d(&[65, 16])];
    assert_eq!(check(&op, &many, &good[0], 0), Err(Error::BadShape), "more than MAX_EXPERTS");
}
