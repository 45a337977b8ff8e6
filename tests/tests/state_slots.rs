//! Persistent state declared in ONNX (`state.<name>` in, `state.<name>.next` out) becomes a
//! state slot: the `.mote` session carries it across calls, and matches tract fed the state
//! explicitly, call after call.

use mote::{Model, Session};
use mote_converters::array::Array;
use mote_converters::convert::{convert, Calibration, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::verify::tract_reference;
use mote_converters::zoo::onnx_builder::{DataType, Dim, GraphBuilder};
use mote_tests::scratch;
use std::path::PathBuf;

/// A tiny recurrent cell: `h' = tanh(x·W + h·U + b)`, `y = h'·V`.
fn recurrent_cell() -> PathBuf {
    let mut rng = mote::rng::Rng::new(5);
    let mut weights = |n: usize| (0..n).map(|_| 0.5 * rng.gaussian()).collect::<Vec<f32>>();
    let mut g = GraphBuilder::new("cell");
    let fixed = |d: &[i64]| d.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
    g.input("x", DataType::Float, &fixed(&[1, 4]));
    g.input("state.h", DataType::Float, &fixed(&[1, 6]));
    let w = g.initializer_f32("W", &[4, 6], &weights(24));
    let u = g.initializer_f32("U", &[6, 6], &weights(36));
    let b = g.initializer_f32("b", &[6], &weights(6));
    let v = g.initializer_f32("V", &[6, 3], &weights(18));
    let xw = g.op("MatMul", &["x", &w], vec![]);
    let hu = g.op("MatMul", &["state.h", &u], vec![]);
    let z = g.op("Add", &[&xw, &hu], vec![]);
    let z = g.op("Add", &[&z, &b], vec![]);
    let h = g.op_named("Tanh", &[&z], vec![], "state.h.next");
    let y = g.op_named("MatMul", &[&h, &v], vec![], "y");
    g.output(&y, DataType::Float, &fixed(&[1, 3]));
    g.output(&h, DataType::Float, &fixed(&[1, 6]));
    let path = scratch("state-slots").join("cell.onnx");
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

fn steps(n: usize) -> Vec<Array> {
    let mut rng = mote::rng::Rng::new(9);
    (0..n).map(|_| Array::f32(vec![1, 4], (0..4).map(|_| rng.gaussian()).collect())).collect()
}

/// tract with the state threaded by hand: the outputs `y` of each call.
fn tract_sequence(onnx: &std::path::Path, xs: &[Array]) -> Vec<Vec<f32>> {
    let mut h = Array::f32(vec![1, 6], vec![0.0; 6]);
    xs.iter()
        .map(|x| {
            let out = tract_reference(onnx, &[x.clone(), h.clone()]).expect("tract");
            h = out[1].clone();
            out[0].to_f32()
        })
        .collect()
}

/// The `.mote` model run in one session: the outputs `y` of each call (state carried).
fn mote_sequence(bytes: &[u8], xs: &[Array]) -> Vec<Vec<f32>> {
    let model = Model::parse(bytes).expect("parse");
    let e = model.entry_by_name("forward").expect("forward");
    assert_eq!(model.state_slot_count(), 1, "one slot for state.h");
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(&model, &mut arena, &mut state).expect("session");
    let mut ys = Vec::new();
    for x in xs {
        s.set_input_f32(e, 0, &x.to_f32()).expect("input");
        s.run(e).expect("run");
        let mut y = vec![0f32; 3];
        s.output_f32(e, 0, &mut y).expect("output");
        ys.push(y);
    }
    s.reset();
    s.set_input_f32(e, 0, &xs[0].to_f32()).expect("input");
    s.run(e).expect("run");
    let mut y = vec![0f32; 3];
    s.output_f32(e, 0, &mut y).expect("output");
    assert_eq!(y, ys[0], "reset forgets the state");
    ys
}

fn max_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn state_carries_across_calls_like_tract() {
    let onnx = recurrent_cell();
    let xs = steps(6);
    let want = tract_sequence(&onnx, &xs);
    let opts = |quant| Options {
        quant,
        bounds: Default::default(),
        calibration: Some(Calibration::Random(8)),
        decode: false,
        extra_entries: Vec::new(),
    };
    let f32_model = convert(&onnx, &opts(QuantMode::F32)).expect("convert f32");
    let got = mote_sequence(&f32_model.bytes, &xs);
    let err = max_abs(&got, &want);
    println!("f32 .mote vs tract over {} calls: max-abs {err:.2e}", xs.len());
    assert!(err <= 1e-5, "f32 drift {err}");
    // The state really changes the output: without it the later calls differ.
    let stateless: Vec<Vec<f32>> =
        xs.iter().map(|x| mote_sequence(&f32_model.bytes, std::slice::from_ref(x))[0].clone()).collect();
    assert!(max_abs(&stateless[1..], &want[1..]) > 1e-2, "the state must matter in this cell");
    let int8 = convert(&onnx, &opts(QuantMode::Int8)).expect("convert int8");
    let got8 = mote_sequence(&int8.bytes, &xs);
    let err8 = max_abs(&got8, &want);
    println!("int8 .mote vs tract over {} calls: max-abs {err8:.3}", xs.len());
    assert!(err8 <= 0.1, "int8 drift {err8}");
}
