//! Conversion errors name what is wrong and how to fix it.

use mote_converters::convert::{self, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::zoo::onnx_builder::{DataType, Dim, GraphBuilder};
use mote_tests::{scratch, untrained_gpt};

fn opts(dims: &[(&str, usize)]) -> Options {
    Options {
        quant: QuantMode::F32,
        bounds: dims.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        calibration: None,
        decode: true,
        extra_entries: Vec::new(),
    }
}

#[test]
fn unsupported_op_names_the_op_and_the_node() {
    let mut g = GraphBuilder::new("bad");
    let x = g.input("x", DataType::Float, &[Dim::Fixed(1), Dim::Fixed(4)]);
    let y = g.op("Hardmax", &[&x], vec![]);
    g.output(&y, DataType::Float, &[Dim::Fixed(1), Dim::Fixed(4)]);
    let path = scratch("unsupported").join("hardmax.onnx");
    std::fs::write(&path, g.finish()).unwrap();
    let err = format!("{:#}", convert::convert(&path, &opts(&[])).expect_err("must fail"));
    println!("{err}");
    assert!(err.contains("unsupported op 'Hardmax'"), "{err}");
    assert!(err.contains("node 'Hardmax"), "{err}");
}

#[test]
fn unbounded_dim_says_which_flag_to_pass() {
    let onnx = untrained_gpt(&scratch("unbounded"), 1);
    let err = format!("{:#}", convert::convert(&onnx, &opts(&[])).expect_err("must fail"));
    println!("{err}");
    assert!(err.contains("--dim seq="), "{err}");
}

#[test]
fn int8_without_calibration_says_how_to_calibrate() {
    let onnx = untrained_gpt(&scratch("nocalib"), 1);
    let mut o = opts(&[("seq", 8)]);
    o.quant = QuantMode::Int8;
    let err = format!("{:#}", convert::convert(&onnx, &o).expect_err("must fail"));
    assert!(err.contains("--calib"), "{err}");
}

#[test]
fn budgets_fail_with_a_per_layer_explanation() {
    let onnx = untrained_gpt(&scratch("budget"), 1);
    let c = convert::convert(&onnx, &opts(&[("seq", 16)])).unwrap();
    let err = format!("{:#}", convert::check_budgets(&c.inspection, Some(1024), Some(4096)).expect_err("must fail"));
    println!("{err}");
    assert!(err.contains("RAM budget exceeded") && err.contains("flash budget exceeded"), "{err}");
    assert!(err.contains("MatMul"), "names the layers: {err}");
    assert!(convert::check_budgets(&c.inspection, Some(1 << 20), Some(1 << 20)).is_ok());
}
