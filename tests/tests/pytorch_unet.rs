//! A diffusers-style UNet denoiser exported by real PyTorch (`tests/fixtures/pytorch/
//! unet_tiny.onnx`, built by `make_unet_fixture.py`: TorchScript exporter, opset 17) converts at
//! f32 and int8 with native GroupNorm ops, matches tract and torch, and GroupNorm in its ONNX
//! spellings (InstanceNormalization, GroupNormalization at opsets 18 and 21) lowers or fails
//! naming the node.

use mote_converters::array::Array;
use mote_converters::convert::{self, Calibration, Converted, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::zoo::onnx_builder::{attr_float, attr_int, DataType, Dim, GraphBuilder};
use mote_converters::{host, report, verify};
use mote_tests::{repo_root, scratch};
use std::path::{Path, PathBuf};

/// f32 `.mote` against tract and against torch's own output, per element.
const F32_TOLERANCE: f32 = 1e-4;
/// int8 `.mote` against the f32 one: max-abs error over the output's largest magnitude.
const INT8_REL_TOLERANCE: f32 = 0.05;
/// RAM of the smallest boards we target (nRF52840 and friends).
const BOARD_RAM: usize = 256 * 1024;

fn fixture(file: &str) -> PathBuf {
    repo_root().join("tests/fixtures/pytorch").join(file)
}

fn unet_inputs() -> Vec<Array> {
    ["sample", "timestep"]
        .iter()
        .map(|n| Array::read_npy(&fixture(&format!("unet_tiny.{n}.npy"))).expect("read sample input"))
        .collect()
}

fn options(quant: QuantMode, calibration: Option<Calibration>) -> Options {
    Options { quant, bounds: Default::default(), calibration, decode: true, extra_entries: Vec::new() }
}

/// Largest |a - b| and the largest |b|.
fn max_abs(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    (diff, b.iter().map(|v| v.abs()).fold(0.0, f32::max))
}

fn count(c: &Converted, op: &str) -> usize {
    c.inspection.ops.iter().filter(|o| o.op == op).count()
}

/// Calibration samples as a sampler feeds the denoiser: Gaussian images at timesteps spread
/// over [0, 1000).
fn calibration_dir() -> PathBuf {
    let dir = scratch("unet-calib");
    let mut rng = mote::rng::Rng::new(21);
    for s in 0..8 {
        let image: Vec<f32> = (0..256).map(|_| rng.gaussian()).collect();
        Array::f32(vec![1, 1, 16, 16], image).write_npy(&dir.join(format!("s{s}.sample.npy"))).expect("write");
        let t = Array::f32(vec![1], vec![(s * 125 + 60) as f32]);
        t.write_npy(&dir.join(format!("s{s}.timestep.npy"))).expect("write");
    }
    dir
}

#[test]
fn pytorch_unet_converts_with_native_group_norm_and_matches_tract_and_torch() {
    let onnx = fixture("unet_tiny.onnx");
    let inputs = unet_inputs();
    let c = convert::convert(&onnx, &options(QuantMode::F32, None)).expect("f32 conversion");
    print!("{}", report::render(&c.inspection));

    // Every `nn.GroupNorm` (12: two per ResBlock, the attention's, the output's) is one native
    // op on the [N, C, H, W] tensor: no leftover instance norm on the exporter's [N, G, L] view.
    assert_eq!(count(&c, "GroupNorm"), 12);
    for o in c.inspection.ops.iter().filter(|o| o.op == "GroupNorm") {
        assert_eq!(o.inputs[0].matches(',').count(), 3, "GroupNorm on a reshaped view: {:?}", o.inputs);
        assert_eq!(o.inputs[0], o.output_shape);
    }
    // SiLU is fused: 13 = the time MLP's, two in each of 5 ResBlocks, `silu(temb)` (the
    // exporter computes it once for all blocks) and the output's.
    assert_eq!(count(&c, "Sigmoid"), 0, "x * sigmoid(x) left unfused");
    assert_eq!(count(&c, "Silu"), 13);
    // The mid-block attention (3 heads of 8 over 16 tokens) fuses into the runtime op.
    assert_eq!((count(&c, "Attention"), count(&c, "Softmax")), (1, 0));
    for op in ["Conv", "Upsample", "Concat", "Sin", "Cos", "MatMul"] {
        assert!(count(&c, op) > 0, "no {op}");
    }

    let got = host::run(&c.bytes, "forward", &inputs).expect("mote runs the f32 model").remove(0);
    assert_eq!(got.shape, [1, 1, 16, 16]);
    let want = verify::tract_reference(&onnx, &inputs).expect("tract runs the fixture").remove(0);
    let torch = Array::read_npy(&fixture("unet_tiny.expected.npy")).expect("torch output");
    let (err, scale) = max_abs(&got.to_f32(), &want.to_f32());
    let (err_torch, _) = max_abs(&got.to_f32(), &torch.to_f32());
    let totals = &c.inspection.entries[0];
    println!(
        "unet f32: max-abs vs tract {err:.3e}, vs torch {err_torch:.3e} (largest |value| {scale:.3}); \
         {} MACs, arena {} B, file {} B",
        totals.macs, c.inspection.arena_bytes, c.inspection.file_bytes
    );
    assert!(scale > 0.1, "trivial output");
    assert!(err <= F32_TOLERANCE, "f32 vs tract: {err:e}");
    assert!(err_torch <= F32_TOLERANCE, "f32 vs torch: {err_torch:e}");
}

#[test]
fn pytorch_unet_int8_stays_close_to_f32_and_fits_a_256_kib_board() {
    let onnx = fixture("unet_tiny.onnx");
    let inputs = unet_inputs();
    let f32c = convert::convert(&onnx, &options(QuantMode::F32, None)).expect("f32 conversion");
    let i8c = convert::convert(&onnx, &options(QuantMode::Int8, Some(Calibration::Dir(calibration_dir()))))
        .expect("int8 conversion");
    assert_eq!(count(&i8c, "GroupNorm"), 12);
    let int8_ops = i8c.inspection.ops.iter().filter(|o| o.inputs.iter().any(|i| i.starts_with("i8"))).count();
    assert!(int8_ops > 0, "no op reads int8");
    let want = host::run(&f32c.bytes, "forward", &inputs).expect("f32 run").remove(0).to_f32();
    let got = host::run(&i8c.bytes, "forward", &inputs).expect("int8 run").remove(0).to_f32();
    let (err, scale) = max_abs(&got, &want);
    let cos = verify::compare(&got, &want).expect("compare").cosine;
    let arena = i8c.inspection.arena_bytes + i8c.inspection.state_bytes;
    println!(
        "unet int8: max-abs vs f32 {err:.4} = {:.2}% of largest |value| {scale:.3}, cosine {cos:.5} ({int8_ops} ops \
         read int8); {} MACs, arena {arena} B, file {} B (f32 file {} B)",
        100.0 * err / scale,
        i8c.inspection.entries[0].macs,
        i8c.inspection.file_bytes,
        f32c.inspection.file_bytes
    );
    assert!(err / scale <= INT8_REL_TOLERANCE, "int8 drifts {:.3} (relative) from f32", err / scale);
    assert!(cos >= 0.999, "int8 cosine {cos}");
    assert!(arena < BOARD_RAM / 2, "arena {arena} B leaves too little of a 256 KiB board");
    assert!(i8c.inspection.file_bytes < f32c.inspection.file_bytes * 2 / 3, "int8 weights are not smaller");
}

/// `x [2, 6, 3, 4]` → `GroupNormalization(num_groups)` with `params`-long scale and bias.
fn group_normalization(dir: &Path, opset: i64, groups: i64, params: usize) -> PathBuf {
    let mut g = GraphBuilder::new("group_norm");
    let x = g.input("x", DataType::Float, &[Dim::Fixed(2), Dim::Fixed(6), Dim::Fixed(3), Dim::Fixed(4)]);
    let scale: Vec<f32> = (0..params).map(|i| 0.5 + 0.25 * i as f32).collect();
    let bias: Vec<f32> = (0..params).map(|i| 0.1 * i as f32 - 0.2).collect();
    let s = g.initializer_f32("scale", &[params as i64], &scale);
    let b = g.initializer_f32("bias", &[params as i64], &bias);
    let attrs = vec![attr_int("num_groups", groups), attr_float("epsilon", 1e-3)];
    let y = g.op_named("GroupNormalization", &[&x, &s, &b], attrs, "gn");
    g.output(&y, DataType::Float, &[Dim::Fixed(2), Dim::Fixed(6), Dim::Fixed(3), Dim::Fixed(4)]);
    let path = dir.join(format!("gn-{opset}-{groups}-{params}.onnx"));
    std::fs::write(&path, g.finish_with_opset(opset)).expect("write onnx");
    path
}

/// `x [2, 3, 5]` → `InstanceNormalization(scale, B)`.
fn instance_normalization(dir: &Path, rank: usize) -> PathBuf {
    let mut g = GraphBuilder::new("instance_norm");
    let dims: Vec<Dim> = [2, 3, 5][..rank].iter().map(|&d| Dim::Fixed(d)).collect();
    let x = g.input("x", DataType::Float, &dims);
    let s = g.initializer_f32("scale", &[3], &[1.5, 0.5, -1.0]);
    let b = g.initializer_f32("B", &[3], &[0.0, 1.0, 0.25]);
    let y = g.op_named("InstanceNormalization", &[&x, &s, &b], vec![attr_float("epsilon", 1e-4)], "inorm");
    g.output(&y, DataType::Float, &dims);
    let path = dir.join(format!("instance-{rank}.onnx"));
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

fn matches_tract(onnx: &Path, x: &Array) -> f32 {
    let c = convert::convert(onnx, &options(QuantMode::F32, None)).expect("convert");
    assert_eq!(c.inspection.ops.iter().map(|o| o.op.as_str()).collect::<Vec<_>>(), ["GroupNorm"]);
    let got = host::run(&c.bytes, "forward", std::slice::from_ref(x)).expect("run").remove(0).to_f32();
    let want = verify::tract_reference(onnx, std::slice::from_ref(x)).expect("tract").remove(0).to_f32();
    let (err, scale) = max_abs(&got, &want);
    assert!(scale > 0.5, "trivial output");
    err
}

#[test]
fn onnx_group_and_instance_normalization_lower_to_group_norm() {
    let dir = scratch("group-norm-ops");
    let x = Array::f32(vec![2, 6, 3, 4], (0..144).map(|i| ((i * 37 % 29) as f32 - 14.0) / 4.0 + 3.0).collect());
    // Opset 18: per-group parameters; opset 21: per-channel; one group per channel either way.
    for (opset, groups, params) in [(18, 3, 3), (21, 3, 6), (18, 6, 6), (21, 1, 6)] {
        let err = matches_tract(&group_normalization(&dir, opset, groups, params), &x);
        println!("GroupNormalization opset {opset}, {groups} groups, {params} parameters: max-abs vs tract {err:.2e}");
        assert!(err <= 1e-5, "opset {opset}: {err}");
    }
    let x3 = Array::f32(vec![2, 3, 5], (0..30).map(|i| (i as f32 * 0.7).sin() * 2.0 - 1.0).collect());
    let err = matches_tract(&instance_normalization(&dir, 3), &x3);
    println!("InstanceNormalization: max-abs vs tract {err:.2e}");
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn malformed_group_norms_are_errors_naming_the_node() {
    let dir = scratch("group-norm-bad");
    let fails = |path: PathBuf| format!("{:#}", convert::convert(&path, &options(QuantMode::F32, None)).unwrap_err());
    let e = fails(group_normalization(&dir, 21, 4, 6));
    println!("{e}");
    assert!(
        e.contains("node 'GroupNormalization' (GroupNormalization): 6 channels do not split into num_groups = 4"),
        "{e}"
    );
    let e = fails(group_normalization(&dir, 18, 3, 4));
    println!("{e}");
    assert!(e.contains("node 'GroupNormalization'") && e.contains("scale has shape [4]; expected [3]"), "{e}");
    assert!(e.contains("(opset 18, per group) or [6] (opset 21, per channel)"), "{e}");
    let e = fails(instance_normalization(&dir, 2));
    println!("{e}");
    assert!(e.contains("'InstanceNormalization' at node 'InstanceNormalization'"), "{e}");
    assert!(e.contains("rank 3 or more"), "{e}");
}

/// The exporter's `nn.GroupNorm(3, 6)` on `x [1, 6, 2, 4]`: Reshape `[0, 3, -1]`,
/// InstanceNormalization(ones, zeros), Reshape to `Shape(x)`, then `Mul` by a constant of
/// shape `scale_shape` and `Add` of a `[6, 1, 1]` constant.
fn exporter_group_norm(dir: &Path, scale_shape: &[i64]) -> PathBuf {
    let mut g = GraphBuilder::new("exported_group_norm");
    let dims = [Dim::Fixed(1), Dim::Fixed(6), Dim::Fixed(2), Dim::Fixed(4)];
    let x = g.input("x", DataType::Float, &dims);
    let split = g.const_i64_vec(&[0, 3, -1]);
    let grouped = g.op("Reshape", &[&x, &split], vec![]);
    let ones = g.initializer_f32("ones", &[3], &[1.0; 3]);
    let zeros = g.initializer_f32("zeros", &[3], &[0.0; 3]);
    let normed = g.op("InstanceNormalization", &[&grouped, &ones, &zeros], vec![attr_float("epsilon", 1e-5)]);
    let shape = g.op("Shape", &[&x], vec![]);
    let merged = g.op("Reshape", &[&normed, &shape], vec![]);
    let n: i64 = scale_shape.iter().product();
    let gamma: Vec<f32> = (0..n).map(|i| 0.5 + 0.3 * i as f32).collect();
    let gamma = g.initializer_f32("gamma", scale_shape, &gamma);
    let beta = g.initializer_f32("beta", &[6, 1, 1], &[0.5, -0.5, 0.25, 0.0, 1.0, -1.0]);
    let y = g.op("Mul", &[&merged, &gamma], vec![]);
    let y = g.op_named("Add", &[&y, &beta], vec![], "y");
    g.output(&y, DataType::Float, &dims);
    let path = dir.join(format!("exported-{scale_shape:?}.onnx"));
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

#[test]
fn the_exporters_group_norm_chain_fuses_with_any_per_channel_affine() {
    let dir = scratch("exported-group-norm");
    let x = Array::f32(vec![1, 6, 2, 4], (0..48).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.3 + 5.0).collect());
    // Per-channel γ ([C, 1, 1] as PyTorch folds it, or [1, C, 1, 1]) and `affine=False`'s
    // single 1.0 fold into one op; a γ along W does not (GroupNorm, then Mul and Add).
    for (scale, ops) in [
        (&[6, 1, 1][..], &["GroupNorm"][..]),
        (&[1, 6, 1, 1], &["GroupNorm"]),
        (&[1], &["GroupNorm"]),
        (&[4], &["GroupNorm", "Mul", "Add"]),
    ] {
        let onnx = exporter_group_norm(&dir, scale);
        let c = convert::convert(&onnx, &options(QuantMode::F32, None)).expect("convert");
        let got_ops: Vec<&str> = c.inspection.ops.iter().map(|o| o.op.as_str()).collect();
        assert_eq!(got_ops, ops, "γ of shape {scale:?}");
        let got = host::run(&c.bytes, "forward", std::slice::from_ref(&x)).expect("run").remove(0).to_f32();
        let want = verify::tract_reference(&onnx, std::slice::from_ref(&x)).expect("tract").remove(0).to_f32();
        let (err, _) = max_abs(&got, &want);
        println!("exporter GroupNorm with γ {scale:?}: {got_ops:?}, max-abs vs tract {err:.2e}");
        assert!(err <= 1e-5, "γ {scale:?}: {err}");
    }
}
