//! Several entry points from several ONNX graphs in one `.mote` (a flow's `forward` and
//! `inverse`): weights shared between them are stored once, each entry matches tract; sums
//! and means over one axis; bad requests (an entry the model lacks, NaN inputs) are errors.

use mote_converters::array::Array;
use mote_converters::convert::{convert, Calibration, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::host;
use mote_converters::verify::tract_reference;
use mote_converters::zoo::onnx_builder::{attr_int, attr_ints, DataType, Dim, GraphBuilder};
use mote_tests::scratch;
use std::path::{Path, PathBuf};

const WIDTH: usize = 8;

/// A one-layer additive coupling on `[n, 2·WIDTH]`: `forward` maps `x = (a, b)` to
/// `(a, b + t(a))` and outputs `Σ y²` (ReduceSum) and the mean of `y` over the features
/// (ReduceMean); `inverse` maps `(a, c)` back to `(a, c − t(a))`. `t(a) = tanh(a·W1)·W2`, the
/// same weights in both graphs.
fn coupling(dir: &Path, inverse: bool) -> PathBuf {
    let mut rng = mote::rng::Rng::new(3);
    let mut weights = |n: usize| (0..n).map(|_| 0.4 * rng.gaussian()).collect::<Vec<f32>>();
    let name = if inverse { "inverse" } else { "forward" };
    let mut g = GraphBuilder::new(name);
    let shape = [Dim::Param("n".into()), Dim::Fixed(2 * WIDTH as i64)];
    let x = g.input("x", DataType::Float, &shape);
    let w1 = g.initializer_f32("W1", &[WIDTH as i64, 32], &weights(WIDTH * 32));
    let w2 = g.initializer_f32("W2", &[32, WIDTH as i64], &weights(32 * WIDTH));
    let split = g.const_i64_vec(&[WIDTH as i64, WIDTH as i64]);
    let outs = g.node_with_outputs("Split", &[&x, &split], &["a", "b"], vec![attr_int("axis", 1)]);
    let h = g.op("MatMul", &[&outs[0], &w1], vec![]);
    let h = g.op("Tanh", &[&h], vec![]);
    let t = g.op("MatMul", &[&h, &w2], vec![]);
    let b = g.op(if inverse { "Sub" } else { "Add" }, &[&outs[1], &t], vec![]);
    let y = g.op_named("Concat", &[&outs[0], &b], vec![attr_int("axis", 1)], "y");
    g.output(&y, DataType::Float, &shape);
    if !inverse {
        let sq = g.op("Mul", &[&y, &y], vec![]);
        let axes = g.const_i64_vec(&[-1]);
        let energy = g.op_named("ReduceSum", &[&sq, &axes], vec![attr_int("keepdims", 1)], "energy");
        g.output(&energy, DataType::Float, &[Dim::Param("n".into()), Dim::Fixed(1)]);
        let mean = g.op_named("ReduceMean", &[&y], vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)], "mean");
        g.output(&mean, DataType::Float, &[Dim::Param("n".into())]);
    }
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

fn options(quant: QuantMode, extra: Vec<(String, PathBuf)>) -> Options {
    Options {
        quant,
        bounds: [("n".to_string(), 4)].into(),
        calibration: Some(Calibration::Random(8)),
        decode: false,
        extra_entries: extra,
    }
}

fn points(seed: u64) -> Array {
    let mut rng = mote::rng::Rng::new(seed);
    Array::f32(vec![4, 2 * WIDTH], (0..8 * WIDTH).map(|_| rng.gaussian()).collect())
}

fn max_abs(a: &Array, b: &Array) -> f32 {
    a.to_f32().iter().zip(b.to_f32()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn two_graphs_become_two_entries_sharing_weights() {
    let dir = scratch("entry-points");
    let (fwd, inv) = (coupling(&dir, false), coupling(&dir, true));
    let both = convert(&fwd, &options(QuantMode::F32, vec![("inverse".into(), inv.clone())])).expect("convert");
    let alone = convert(&fwd, &options(QuantMode::F32, vec![])).expect("convert forward alone");
    let entries: Vec<&str> = both.plans.iter().map(|p| p.entry.as_str()).collect();
    assert_eq!(entries, ["forward", "inverse"]);
    // W1 and W2 (2·8·32 f32 = 2 KiB) are stored once: the second entry adds ops, not weights.
    let extra = both.bytes.len() - alone.bytes.len();
    println!("file: forward alone {} B, forward + inverse {} B (+{extra} B)", alone.bytes.len(), both.bytes.len());
    assert!(extra < 2 * WIDTH * 32 * 4, "the inverse added {extra} B: weights stored twice?");
    assert_eq!(both.inspection.weight_bytes, alone.inspection.weight_bytes);
    for p in &both.plans {
        println!(
            "{}: arena {} B ({} in place), {} B without in-place",
            p.entry, p.arena, p.in_place, p.arena_without_in_place
        );
        assert!(p.in_place > 0 && p.arena_without_in_place > p.arena, "{}: in-place saves nothing", p.entry);
    }

    let x = points(1);
    let want = tract_reference(&fwd, std::slice::from_ref(&x)).expect("tract forward");
    let got = host::run(&both.bytes, "forward", std::slice::from_ref(&x)).expect("run forward");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape, w.shape, "output {k} shape");
        let err = max_abs(g, w);
        println!("forward output {k} vs tract: max-abs {err:.2e}");
        assert!(err <= 1e-5, "forward output {k} differs from tract by {err}");
    }
    let back = host::run(&both.bytes, "inverse", std::slice::from_ref(&got[0])).expect("run inverse");
    let want_back = tract_reference(&inv, std::slice::from_ref(&got[0])).expect("tract inverse");
    assert!(max_abs(&back[0], &want_back[0]) <= 1e-5, "inverse differs from tract");
    let roundtrip = max_abs(&back[0], &x);
    println!("inverse(forward(x)) - x: max-abs {roundtrip:.2e}");
    assert!(roundtrip <= 1e-5, "the coupling does not invert: {roundtrip}");

    // int8: the inverse is calibrated on its own (random) inputs and still inverts closely.
    let q = convert(&fwd, &options(QuantMode::Int8, vec![("inverse".into(), inv)])).expect("convert int8");
    let y8 = host::run(&q.bytes, "forward", std::slice::from_ref(&x)).expect("int8 forward");
    let x8 = host::run(&q.bytes, "inverse", std::slice::from_ref(&y8[0])).expect("int8 inverse");
    let err8 = max_abs(&x8[0], &x);
    println!("int8 inverse(forward(x)) - x: max-abs {err8:.3}");
    assert!(err8 <= 0.1, "int8 round trip {err8}");
}

#[test]
fn bad_entry_requests_are_clear_errors() {
    let dir = scratch("entry-errors");
    let fwd = coupling(&dir, false);
    let twice = vec![("inverse".into(), coupling(&dir, true)), ("inverse".into(), coupling(&dir, true))];
    let e = convert(&fwd, &options(QuantMode::F32, twice)).unwrap_err().to_string();
    assert!(e.contains("entry 'inverse' is defined twice"), "{e}");

    let bytes = convert(&fwd, &options(QuantMode::F32, vec![])).expect("convert").bytes;
    let e = host::run(&bytes, "inverse", &[points(2)]).unwrap_err().to_string();
    assert_eq!(e, "the model has no entry point 'inverse' (it has: forward)");

    let mut nan = points(3);
    if let mote_converters::array::Data::F32(v) = &mut nan.data {
        v[5] = f32::NAN;
    }
    let e = host::run(&bytes, "forward", &[nan]).unwrap_err();
    assert_eq!(e.downcast_ref::<mote::Error>(), Some(&mote::Error::NonFinite { index: 5 }), "{e}");
}
