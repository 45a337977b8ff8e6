//! Transformer graphs spelled the way PyTorch's TorchScript exporter writes them
//! (`tests/fixtures/pytorch/`, built by `make_fixtures.py`) convert at f32 and int8, match
//! tract, and get their attention fused where the runtime op can express it.

use mote_converters::array::Array;
use mote_converters::convert::{self, Calibration, Converted, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::zoo::onnx_builder::{attr_int, attr_ints, DataType, Dim, GraphBuilder};
use mote_converters::{host, report, verify};
use mote_tests::{repo_root, scratch};
use std::path::PathBuf;

/// f32 `.mote` against tract, per output element.
const F32_TOLERANCE: f32 = 1e-4;

fn fixture(file: &str) -> PathBuf {
    repo_root().join("tests/fixtures/pytorch").join(file)
}

fn options(quant: QuantMode, dims: &[(&str, usize)]) -> Options {
    Options {
        quant,
        bounds: dims.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        calibration: (quant == QuantMode::Int8).then_some(Calibration::Random(4)),
        decode: true,
        extra_entries: Vec::new(),
    }
}

/// The committed sample inputs `<stem>.<input>.npy`.
fn sample(stem: &str, inputs: &[&str]) -> Vec<Array> {
    inputs
        .iter()
        .map(|name| Array::read_npy(&fixture(&format!("{stem}.{name}.npy"))).expect("read sample input"))
        .collect()
}

fn attention_ops(c: &Converted) -> usize {
    c.inspection.ops.iter().filter(|o| o.entry == "forward" && o.op == "Attention").count()
}

/// Largest |a - b| and the largest |b|.
fn max_abs(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    (diff, b.iter().map(|v| v.abs()).fold(0.0, f32::max))
}

struct Expect {
    file: &'static str,
    inputs: &'static [&'static str],
    dims: &'static [(&'static str, usize)],
    attention: usize,
    /// Bound on int8 max-abs error relative to the f32 output's largest magnitude.
    int8_rel: f32,
}

/// Converts at f32 and int8 and checks both; returns the f32 conversion.
fn check(e: &Expect) -> Converted {
    let onnx = fixture(e.file);
    let stem = e.file.trim_end_matches(".onnx");
    let inputs = sample(stem, e.inputs);
    let f32c = convert::convert(&onnx, &options(QuantMode::F32, e.dims)).expect("f32 conversion");
    print!("{}", report::render(&f32c.inspection));
    let want = verify::tract_reference(&onnx, &inputs).expect("tract runs the fixture");
    let got = host::run(&f32c.bytes, "forward", &inputs).expect("mote runs the f32 model");
    assert_eq!(got.len(), want.len(), "output count");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape, w.shape, "output {k} shape");
        let (err, scale) = max_abs(&g.to_f32(), &w.to_f32());
        println!("{}: output {k} {:?}: f32 vs tract max-abs {err:.3e} (largest |value| {scale:.3})", e.file, g.shape);
        assert!(scale > 1e-3, "output {k} is trivially zero");
        assert!(err <= F32_TOLERANCE, "{}: output {k} drifts {err:e} from tract", e.file);
    }
    assert_eq!(attention_ops(&f32c), e.attention, "fused Attention ops in {}", e.file);

    let i8c = convert::convert(&onnx, &options(QuantMode::Int8, e.dims)).expect("int8 conversion");
    let quantised = i8c.inspection.ops.iter().filter(|o| o.inputs.iter().any(|i| i.starts_with("i8"))).count();
    assert!(quantised > 0, "no op reads int8 in the int8 model");
    assert_eq!(attention_ops(&i8c), e.attention);
    let got8 = host::run(&i8c.bytes, "forward", &inputs).expect("mote runs the int8 model");
    for (k, (q, f)) in got8.iter().zip(&got).enumerate() {
        let (qv, fv) = (q.to_f32(), f.to_f32());
        let (err, scale) = max_abs(&qv, &fv);
        let cos = verify::compare(&qv, &fv).expect("compare").cosine;
        let rel = err / scale;
        println!(
            "{}: output {k}: int8 vs f32 max-abs {err:.4} = {:.2}% of largest |value| {scale:.3}, cosine {cos:.5} \
             ({quantised} ops read int8)",
            e.file,
            rel * 100.0
        );
        assert!(rel <= e.int8_rel, "{}: int8 output {k} is {rel:.3} (relative) from f32", e.file);
        assert!(cos >= 0.99, "{}: int8 output {k} cosine {cos}", e.file);
    }
    f32c
}

#[test]
fn gpt2_lm_converts_and_fuses_causal_attention() {
    let c = check(&Expect {
        file: "gpt2_lm.onnx",
        inputs: &["input_ids"],
        dims: &[("batch", 2), ("sequence", 8)],
        attention: 2,
        int8_rel: 0.2,
    });
    let fused: Vec<_> = c.inspection.ops.iter().map(|o| o.op.as_str()).collect();
    assert!(fused.contains(&"GeluTanh"), "tanh-GELU fused: {fused:?}");
    assert!(fused.contains(&"LayerNorm"), "decomposed LayerNorm fused: {fused:?}");
    assert!(c.inspection.notes.is_empty(), "{:?}", c.inspection.notes);
}

#[test]
fn bert_encoder_fuses_the_padding_mask_into_attention() {
    let c = check(&Expect {
        file: "bert_encoder.onnx",
        inputs: &["input_ids", "token_type_ids", "attention_mask"],
        dims: &[("batch", 2), ("sequence", 8)],
        attention: 2,
        int8_rel: 0.2,
    });
    // The key mask reaches each Attention op as its 4th input, straight from the model input.
    let masked = c.inspection.ops.iter().filter(|o| o.op == "Attention" && o.inputs.len() == 4).count();
    assert_eq!(masked, 2);
    assert!(c.inspection.ops.iter().any(|o| o.op == "Gelu"), "erf-GELU fused");
    assert!(c.inspection.notes.is_empty(), "{:?}", c.inspection.notes);
}

#[test]
fn bert_with_the_finfo_min_where_mask_fuses_too() {
    let c = check(&Expect {
        file: "bert_sdpa_mask.onnx",
        inputs: &["input_ids", "token_type_ids", "attention_mask"],
        dims: &[("batch", 2), ("sequence", 8)],
        attention: 1,
        int8_rel: 0.2,
    });
    assert!(c.inspection.ops.iter().any(|o| o.op == "Attention" && o.inputs.len() == 4));
}

#[test]
fn t5_encoder_runs_its_biased_attention_unfused_and_says_so() {
    let c = check(&Expect {
        file: "t5_encoder.onnx",
        inputs: &["input_ids"],
        dims: &[("batch", 2), ("sequence", 8)],
        attention: 0,
        int8_rel: 0.2,
    });
    assert!(c.inspection.ops.iter().any(|o| o.op == "RmsNorm"), "T5LayerNorm fused to RmsNorm");
    assert_eq!(c.inspection.notes.len(), 2, "{:?}", c.inspection.notes);
    for (i, note) in c.inspection.notes.iter().enumerate() {
        assert!(
            note.starts_with(&format!(
                "attention at node '/encoder/block.{i}/layer.0/SelfAttention/Softmax' runs unfused:"
            )),
            "{note}"
        );
        assert!(note.contains("neither zero nor a causal mask"), "{note}");
    }
    let text = report::render(&c.inspection);
    assert!(text.contains("note: attention at node '/encoder/block.0/layer.0/SelfAttention/Softmax' runs unfused"));
}

#[test]
fn vit_classifier_lowers_the_patch_conv_and_fuses_attention() {
    let c = check(&Expect {
        file: "vit_classifier.onnx",
        inputs: &["pixel_values"],
        dims: &[("batch", 2)],
        attention: 2,
        int8_rel: 0.2,
    });
    assert!(c.inspection.notes.is_empty(), "{:?}", c.inspection.notes);
}

/// Attention already split into heads `x [1, 2, 4, 4]`, scores masked by `mask_op` with a
/// run-time mask input: the fuser does not take it.
fn unfused_attention(name: &str, where_mask: bool) -> PathBuf {
    let mut g = GraphBuilder::new(name);
    let fixed = |d: &[i64]| d.iter().map(|&v| Dim::Fixed(v)).collect::<Vec<_>>();
    let x = g.input("x", DataType::Float, &fixed(&[1, 2, 4, 4]));
    let m = g.input("m", DataType::Float, &fixed(&[1, 1, 4, 4]));
    let kt = g.op("Transpose", &[&x], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let s = g.op("MatMul", &[&x, &kt], vec![]);
    let s = if where_mask {
        let cond = g.op("Cast", &[&m], vec![attr_int("to", 9)]);
        let fill = g.const_f32_scalar(-1e9);
        g.op("Where", &[&cond, &s, &fill], vec![])
    } else {
        g.op("Add", &[&s, &m], vec![])
    };
    let p = g.op("Softmax", &[&s], vec![attr_int("axis", -1)]);
    let y = g.op("MatMul", &[&p, &x], vec![]);
    g.output(&y, DataType::Float, &fixed(&[1, 2, 4, 4]));
    let path = scratch(name).join(format!("{name}.onnx"));
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

#[test]
fn unfused_attention_with_supported_ops_runs_and_is_reported() {
    let onnx = unfused_attention("unfused_add", false);
    let c = convert::convert(&onnx, &options(QuantMode::F32, &[])).expect("converts unfused");
    assert_eq!(attention_ops(&c), 0);
    let text = report::render(&c.inspection);
    println!("{text}");
    assert!(text.contains("note: attention at node 'Softmax"), "{text}");
    assert!(text.contains("runs unfused: "), "{text}");
    let inputs = vec![
        Array::f32(vec![1, 2, 4, 4], (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect()),
        Array::f32(vec![1, 1, 4, 4], (0..16).map(|i| if i % 5 == 3 { -30.0 } else { 0.0 }).collect()),
    ];
    let want = verify::tract_reference(&onnx, &inputs).expect("tract");
    let got = host::run(&c.bytes, "forward", &inputs).expect("run");
    let (err, scale) = max_abs(&got[0].to_f32(), &want[0].to_f32());
    println!("unfused attention vs tract: max-abs {err:.3e} (largest |value| {scale:.3})");
    assert!(scale > 0.1 && err <= F32_TOLERANCE);
}

#[test]
fn unfused_attention_with_an_unsupported_op_names_it() {
    let onnx = unfused_attention("unfused_where", true);
    let err = format!("{:#}", convert::convert(&onnx, &options(QuantMode::F32, &[])).expect_err("must fail"));
    println!("{err}");
    assert!(err.contains("unsupported op 'Where' at node 'Where"), "{err}");
}

#[test]
fn dcgan_generator_folds_batch_norm_and_upsamples() {
    let c = check(&Expect {
        file: "dcgan_generator.onnx",
        inputs: &["z"],
        dims: &[("batch", 2)],
        attention: 0,
        int8_rel: 0.05,
    });
    let ops: Vec<&str> = c.inspection.ops.iter().map(|o| o.op.as_str()).collect();
    // bn1 folds into the Conv before it; bn0 follows the Linear and a view, so it stays one
    // per-channel Mul + Add.
    let count = |op: &str| ops.iter().filter(|o| **o == op).count();
    assert_eq!((count("Mul"), count("Add")), (1, 1), "{ops:?}");
    for op in ["MatMul", "Upsample", "Conv", "ConvTranspose", "Tanh"] {
        assert!(ops.contains(&op), "no {op} in {ops:?}");
    }
}
