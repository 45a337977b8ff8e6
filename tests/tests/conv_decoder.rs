//! A DCGAN-style decoder as PyTorch exports one (Conv, BatchNormalization, ConvTranspose, Resize,
//! grouped and strided convolutions, Relu/Tanh/Sigmoid outputs) converts and matches tract, with
//! every batch-norm folded into the convolution before it.

use mote_converters::array::Array;
use mote_converters::convert::{convert, Calibration, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::host;
use mote_converters::verify::tract_reference;
use mote_converters::zoo::onnx_builder::{attr_float, attr_int, attr_ints, attr_string, DataType, Dim, GraphBuilder};
use mote_tests::scratch;
use std::path::PathBuf;

fn gaussians(rng: &mut mote::rng::Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * rng.gaussian()).collect()
}

/// Inference batch-norm over `c` channels with random statistics.
fn batch_norm(g: &mut GraphBuilder, rng: &mut mote::rng::Rng, x: &str, c: usize, tag: &str) -> String {
    let mut param = |name: &str, offset: f32, scale: f32, abs: bool| {
        let v: Vec<f32> = gaussians(rng, c, scale).iter().map(|v| offset + if abs { v.abs() } else { *v }).collect();
        g.initializer_f32(&format!("{tag}.{name}"), &[c as i64], &v)
    };
    let (gamma, beta, mean, var) = (
        param("gamma", 1.0, 0.5, false),
        param("beta", 0.0, 0.3, false),
        param("mean", 0.0, 0.3, false),
        param("var", 0.5, 0.3, true),
    );
    g.op("BatchNormalization", &[x, &gamma, &beta, &mean, &var], vec![attr_float("epsilon", 1e-5)])
}

/// `z [n, 8, 2, 2]` → ConvT 4x4/2 (→ 4x4) → BN → Relu → Conv 3x3 pad 1, 2 groups → BN → Tanh
/// → ConvT 3x3/2 pad 1 output_padding 1 (→ 8x8) → Conv 1x1 (bias) → Sigmoid `[n, 1, 8, 8]`.
fn decoder() -> PathBuf {
    let rng = &mut mote::rng::Rng::new(21);
    let mut g = GraphBuilder::new("decoder");
    let batch = Dim::Param("n".into());
    let z = g.input("z", DataType::Float, &[batch.clone(), Dim::Fixed(8), Dim::Fixed(2), Dim::Fixed(2)]);
    let w1 = g.initializer_f32("up1.weight", &[8, 6, 4, 4], &gaussians(rng, 8 * 6 * 16, 0.3));
    let h = g.op("ConvTranspose", &[&z, &w1], vec![attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1])]);
    let h = batch_norm(&mut g, rng, &h, 6, "bn1");
    let h = g.op("Relu", &[&h], vec![]);
    let w2 = g.initializer_f32("mix.weight", &[6, 3, 3, 3], &gaussians(rng, 6 * 27, 0.3));
    let h = g.op("Conv", &[&h, &w2], vec![attr_ints("pads", &[1, 1, 1, 1]), attr_int("group", 2)]);
    let h = batch_norm(&mut g, rng, &h, 6, "bn2");
    let h = g.op("Tanh", &[&h], vec![]);
    let w3 = g.initializer_f32("up2.weight", &[6, 4, 3, 3], &gaussians(rng, 6 * 4 * 9, 0.3));
    let up =
        vec![attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1]), attr_ints("output_padding", &[1, 1])];
    let h = g.op("ConvTranspose", &[&h, &w3], up);
    let w4 = g.initializer_f32("out.weight", &[1, 4, 1, 1], &gaussians(rng, 4, 0.5));
    let b4 = g.initializer_f32("out.bias", &[1], &[0.1]);
    let h = g.op("Conv", &[&h, &w4, &b4], vec![]);
    let y = g.op_named("Sigmoid", &[&h], vec![], "image");
    g.output(&y, DataType::Float, &[batch, Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)]);
    let path = scratch("conv-decoder").join("decoder.onnx");
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

fn options(quant: QuantMode) -> Options {
    Options {
        quant,
        bounds: [("n".to_string(), 2)].into(),
        calibration: Some(Calibration::Random(4)),
        decode: false,
        extra_entries: Vec::new(),
    }
}

#[test]
fn dcgan_style_decoder_matches_tract_with_batch_norm_folded() {
    let onnx = decoder();
    let mut rng = mote::rng::Rng::new(4);
    let z = Array::f32(vec![2, 8, 2, 2], (0..64).map(|_| rng.gaussian()).collect());
    let want = tract_reference(&onnx, std::slice::from_ref(&z)).expect("tract").remove(0).to_f32();
    // int8 quantises the activations into the final 1x1 MatMul (steps of range / 255); the
    // convolutions themselves run in f32 with f16 weights in both f16 and int8 files.
    for (quant, tolerance) in [(QuantMode::F32, 1e-5), (QuantMode::F16, 2e-3), (QuantMode::Int8, 1.5e-2)] {
        let c = convert(&onnx, &options(quant)).expect("convert");
        // int8 adds a quantising `Convert` in front of the MatMul: not part of the question.
        let rows: Vec<_> = c.inspection.ops.iter().filter(|o| o.op != "Convert").collect();
        let ops: Vec<&str> = rows.iter().map(|o| o.op.as_str()).collect();
        assert_eq!(
            ops,
            [
                "ConvTranspose",
                "Relu",
                "Conv",
                "Tanh",
                "ConvTranspose",
                // The 1x1 convolution is a patch convolution: patchify, MatMul (int8-capable), back.
                "Reshape",
                "Transpose",
                "Reshape",
                "MatMul",
                "Transpose",
                "Reshape",
                "Sigmoid"
            ],
            "{quant:?}: batch-norm should leave nothing behind"
        );
        let got = host::run(&c.bytes, "forward", std::slice::from_ref(&z)).expect("run").remove(0).to_f32();
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let macs: u64 = rows.iter().map(|o| o.macs).sum();
        println!("{quant:?}: {} B, {macs} MACs, max-abs vs tract {err:.2e}", c.bytes.len());
        assert!(err <= tolerance, "{quant:?}: max-abs {err} vs tract");
        // Transposed: input elements x taps (64·96, 192·36); direct: outputs x taps (192·27,
        // 128·4); activations one per output (192, 192, 128).
        assert_eq!(macs, 64 * 96 + 192 + 192 * 27 + 192 + 192 * 36 + 128 * 4 + 128);
    }
}

#[test]
fn unsupported_convolutions_name_the_node() {
    let mut g = GraphBuilder::new("same");
    let image = |c| [Dim::Fixed(1), Dim::Fixed(c), Dim::Fixed(4), Dim::Fixed(4)];
    let x = g.input("x", DataType::Float, &image(2));
    let w = g.initializer_f32("w", &[2, 2, 3, 3], &[0.1; 36]);
    let y = g.op_named("Conv", &[&x, &w], vec![attr_string("auto_pad", "SAME_UPPER")], "y");
    g.output(&y, DataType::Float, &image(2));
    let path = scratch("conv-bad").join("same.onnx");
    std::fs::write(&path, g.finish()).expect("write");
    let e = format!("{:#}", convert(&path, &options(QuantMode::F32)).unwrap_err());
    assert!(e.contains("auto_pad SAME_UPPER is not supported") && e.contains("node '"), "{e}");
}

/// `x [1, 2, 3, 3]` → `Resize` ×2 nearest (PyTorch's `nn.Upsample` attributes) → Conv 3x3.
fn upsampler(coords: &str, rounding: &str, mode: &str) -> PathBuf {
    let rng = &mut mote::rng::Rng::new(8);
    let mut g = GraphBuilder::new("upsample");
    let x = g.input("x", DataType::Float, &[Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(3)]);
    let roi = g.initializer_f32("roi", &[0], &[]);
    let scales = g.initializer_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
    let attrs = vec![
        attr_string("mode", mode),
        attr_string("coordinate_transformation_mode", coords),
        attr_string("nearest_mode", rounding),
    ];
    let h = g.op("Resize", &[&x, &roi, &scales], attrs);
    let w = g.initializer_f32("w", &[3, 2, 3, 3], &gaussians(rng, 54, 0.4));
    let y = g.op_named("Conv", &[&h, &w], vec![attr_ints("pads", &[1, 1, 1, 1])], "y");
    g.output(&y, DataType::Float, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(6), Dim::Fixed(6)]);
    let path = scratch("upsample").join(format!("{coords}-{mode}.onnx"));
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

#[test]
fn nearest_resize_matches_tract_and_other_modes_are_refused() {
    let x = Array::f32(vec![1, 2, 3, 3], (0..18).map(|v| (v as f32 * 0.37).sin()).collect());
    for (coords, rounding) in [("asymmetric", "floor"), ("half_pixel", "round_prefer_floor")] {
        let onnx = upsampler(coords, rounding, "nearest");
        let c = convert(&onnx, &options(QuantMode::F32)).expect("convert");
        assert!(c.inspection.ops.iter().any(|o| o.op == "Upsample"), "{coords}: no Upsample op");
        let got = host::run(&c.bytes, "forward", std::slice::from_ref(&x)).expect("run").remove(0).to_f32();
        let want = tract_reference(&onnx, std::slice::from_ref(&x)).expect("tract").remove(0).to_f32();
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("{coords} + {rounding}: max-abs vs tract {err:.2e}");
        assert!(err <= 1e-5, "{coords}: {err}");
    }
    let e =
        format!("{:#}", convert(&upsampler("asymmetric", "floor", "linear"), &options(QuantMode::F32)).unwrap_err());
    assert!(e.contains("mode 'linear'") && e.contains("Resize"), "{e}");
}
