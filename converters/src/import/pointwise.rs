//! How 1×1 stride-1 convolutions lower, chosen per model by the ONNX metadata entry
//! [`POINTWISE_CONV_KEY`].
//!
//! By default such a convolution is a patch convolution (kernel = stride, no padding) and
//! lowers to patchify → `MatMul` → back (`lower.rs`), whose MatMul runs in int8 in an int8
//! file. With `mote.pointwise_conv = conv` it lowers to the runtime's `Conv` op instead: no
//! layout ops around it, f32 math (f16 weights in int8 files), activations never quantised.
//! A normalizing flow's invertible 1×1 convolution needs this: its log-determinant is a
//! constant computed from the exact weights, and its inverse (a second 1×1 convolution with
//! `W⁻¹`) must undo it to float precision. The Glow zoo family writes the entry.
//!
//! ```
//! use mote_converters::import::pointwise::{pointwise_as_conv, POINTWISE_CONV_KEY, POINTWISE_CONV_VALUE};
//! let meta = vec![(POINTWISE_CONV_KEY.to_string(), POINTWISE_CONV_VALUE.to_string())];
//! assert!(pointwise_as_conv(&meta));
//! assert!(!pointwise_as_conv(&[]));
//! ```

/// ONNX metadata key choosing the lowering of 1×1 stride-1 convolutions.
pub const POINTWISE_CONV_KEY: &str = "mote.pointwise_conv";

/// The value of [`POINTWISE_CONV_KEY`] that keeps them as runtime `Conv` ops.
pub const POINTWISE_CONV_VALUE: &str = "conv";

/// Whether model metadata asks for 1×1 convolutions to stay runtime `Conv` ops.
pub fn pointwise_as_conv(metadata: &[(String, String)]) -> bool {
    metadata.iter().any(|(k, v)| k == POINTWISE_CONV_KEY && v.trim() == POINTWISE_CONV_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::Array;
    use crate::convert::{convert, Calibration, Options};
    use crate::emit::dtypes::QuantMode;
    use crate::zoo::onnx_builder::{attr_ints, DataType, Dim, GraphBuilder};

    /// `x [1, 3, 4, 4]` → 1×1 Conv (3 → 3, no bias) → `y`, with or without the hint.
    fn model(hint: bool) -> std::path::PathBuf {
        let mut g = GraphBuilder::new("pointwise");
        let dims = [Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)];
        g.input("x", DataType::Float, &dims);
        let w: Vec<f32> = (0..9).map(|k| [0.9, -0.3, 0.2, 0.1, 1.1, -0.4, 0.5, 0.2, 0.8][k]).collect();
        let w = g.initializer_f32("w", &[3, 3, 1, 1], &w);
        let y = g.op_named("Conv", &["x", &w], vec![attr_ints("kernel_shape", &[1, 1])], "y");
        g.output(&y, DataType::Float, &dims);
        if hint {
            g.metadata(POINTWISE_CONV_KEY, POINTWISE_CONV_VALUE);
        }
        let dir = std::env::temp_dir().join(format!("mote_pointwise_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("m{}.onnx", hint as u8));
        std::fs::write(&path, g.finish()).unwrap();
        path
    }

    #[test]
    fn the_hint_keeps_a_1x1_convolution_as_the_conv_op() {
        let x = Array::f32(vec![1, 3, 4, 4], (0..48).map(|k| (k as f32 * 0.37).sin()).collect());
        for hint in [false, true] {
            let path = model(hint);
            let want = crate::verify::tract_reference(&path, std::slice::from_ref(&x)).unwrap().remove(0).to_f32();
            for quant in [QuantMode::F32, QuantMode::Int8] {
                let o = Options {
                    quant,
                    bounds: Default::default(),
                    calibration: Some(Calibration::Random(2)),
                    decode: false,
                    extra_entries: Vec::new(),
                };
                let c = convert(&path, &o).unwrap();
                let ops: Vec<&str> =
                    c.inspection.ops.iter().map(|r| r.op.as_str()).filter(|&op| op != "Convert").collect();
                if hint {
                    assert_eq!(ops, ["Conv"], "{quant:?}");
                } else {
                    assert!(ops.contains(&"MatMul") && !ops.contains(&"Conv"), "{quant:?}: {ops:?}");
                }
                let got = crate::host::run(&c.bytes, "forward", std::slice::from_ref(&x)).unwrap().remove(0).to_f32();
                let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                // The direct Conv keeps f32 activations (f16 weights in int8 files); the
                // patch MatMul quantises them in int8.
                let tol = match (hint, quant) {
                    (_, QuantMode::F32) => 1e-6,
                    (true, _) => 2e-3,
                    (false, _) => 3e-2,
                };
                assert!(err <= tol, "hint {hint} {quant:?}: {err}");
            }
        }
    }
}
