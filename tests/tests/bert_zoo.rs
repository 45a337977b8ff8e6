//! Acceptance of the committed zoo BERT and ALBERT (`models/bert`, `models/albert`): parity
//! with tract and with the training framework, the padding mask, int8 MLM accuracy against
//! f32 and the baselines, MCU budgets, and ALBERT's shared layer stored once.

use mote_converters::array::{Array, Data};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::family::{evaluate_mlm, mlm_options, stored_params, MlmFigures};
use mote_converters::zoo::MlmReport;
use mote_converters::{convert, host};
use mote_tests::model_dir;
use std::sync::OnceLock;

fn figures(family: &str) -> &'static MlmFigures {
    static BERT: OnceLock<MlmFigures> = OnceLock::new();
    static ALBERT: OnceLock<MlmFigures> = OnceLock::new();
    let cell = if family == "bert" { &BERT } else { &ALBERT };
    cell.get_or_init(|| {
        let f = evaluate_mlm(&model_dir(family)).unwrap_or_else(|e| panic!("evaluate models/{family}: {e:#}"));
        println!("{family}: {f:#?}");
        f
    })
}

fn report(family: &str) -> MlmReport {
    MlmReport::read(&model_dir(family)).expect("train_report.json")
}

fn check(family: &str) {
    let f = figures(family);
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "{family}: f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "{family}: f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
    assert!(
        f.padded_vs_unpadded_max_abs <= 1e-4,
        "{family}: padded .mote vs unpadded tract, real positions: {}",
        f.padded_vs_unpadded_max_abs
    );
    assert_eq!(f.padding_content_int8_max_abs, 0.0, "{family}: what sits in the padding must not matter");
    assert!(f.heldout_positions >= 1000, "{family}: {} held-out positions", f.heldout_positions);
    let (a32, a8) = (f.accuracy_f32, f.accuracy_int8);
    assert!(
        (a32 - a8).abs() <= 0.01 || (a32 - a8).abs() <= 0.02 * a32,
        "{family}: MLM accuracy f32 {a32:.4} vs int8 {a8:.4}"
    );
    // It learned: far above the majority baseline, and above the neighbours baseline.
    assert!(a8 > f.baseline_majority + 0.2, "{family}: int8 {a8:.4} vs majority {:.4}", f.baseline_majority);
    assert!(a8 > f.baseline_neighbours, "{family}: int8 {a8:.4} vs neighbours {:.4}", f.baseline_neighbours);
    // The candle figure of the training report and the runtime's f32 figure agree.
    let trained = report(family).heldout_accuracy;
    assert!((trained - a32).abs() <= 0.002, "{family}: candle {trained:.4} vs f32 .mote {a32:.4}");
    assert!(f.committed_int8_up_to_date, "models/{family}/model.int8.mote is stale: run `mote zoo refresh {family}`");
    assert_eq!(f.state_int8, 0, "an encoder keeps no state");
    assert!(f.flash_int8 <= 1 << 20, "{family}: int8 flash {}", f.flash_int8);
    assert!(f.arena_int8 + f.state_int8 + 8 * 1024 <= 256 * 1024, "{family}: arena {}", f.arena_int8);
}

#[test]
fn committed_bert_meets_the_acceptance_figures() {
    check("bert");
}

#[test]
fn committed_albert_meets_the_acceptance_figures() {
    check("albert");
}

#[test]
fn albert_stores_its_shared_layer_once() {
    let (bert, albert) = (figures("bert"), figures("albert"));
    let (rb, ra) = (report("bert"), report("albert"));
    let (layer, depth) = (ra.layer_params, ra.config.n_layers);
    assert_eq!(depth, rb.config.n_layers, "same depth");
    assert!(depth >= 2);
    // f32: every stored weight is a trainable parameter stored once (the tied decoder
    // deduplicates against the embedding table), plus a few scalar constants.
    let trainable = ra.params;
    assert!(albert.params >= trainable && albert.params <= trainable + 64, "{} vs {trainable}", albert.params);
    assert!(albert.params < layer + 10_000, "ALBERT stores one layer, not {depth}: {} params", albert.params);
    assert!(bert.params > depth * layer, "BERT stores {depth} layers: {} params", bert.params);
    // int8: the shared layer's weights once (per-use biases and requantisation stay per layer).
    assert!(
        albert.weight_bytes_int8 < 2 * layer,
        "ALBERT int8 weights {} B for a {layer}-param layer used {depth} times",
        albert.weight_bytes_int8
    );
    assert!(bert.weight_bytes_int8 > depth * layer, "BERT int8 weights {}", bert.weight_bytes_int8);
    assert!(albert.flash_int8 * 2 < bert.flash_int8, "albert {} vs bert {}", albert.flash_int8, bert.flash_int8);
    // The same file without deduplication would hold the layer `depth` times: the f32 file
    // is smaller than the f32 bytes of `depth` layers.
    assert!(albert.weight_bytes_f32 < 4 * (layer * 2), "f32 weights {}", albert.weight_bytes_f32);
}

#[test]
fn the_padding_mask_is_what_hides_the_padding() {
    // Without the mask (attend everywhere) the padded positions leak into the real ones.
    let dir = model_dir("albert");
    let c = convert::convert(&dir.join("model.onnx"), &mlm_options(&dir, QuantMode::Int8).unwrap()).unwrap();
    let names = ["input_ids", "attention_mask", "token_type_ids"];
    let inputs: Vec<Array> =
        names.iter().map(|n| Array::read_npy(&dir.join(format!("golden/0.{n}.npy"))).unwrap()).collect();
    let Data::I64(mask) = &inputs[1].data else { panic!("integer mask") };
    let n = mask.iter().filter(|&&m| m != 0).count();
    assert!(n < mask.len(), "golden input 0 is padded");
    let mut unmasked = inputs.clone();
    unmasked[1] = Array::i64(inputs[1].shape.clone(), vec![1; mask.len()]);
    let a = host::run(&c.bytes, "forward", &inputs).unwrap().remove(0).to_f32();
    let b = host::run(&c.bytes, "forward", &unmasked).unwrap().remove(0).to_f32();
    let vocab = a.len() / mask.len();
    let diff = a[..n * vocab].iter().zip(&b[..n * vocab]).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff > 0.1, "attending to padding changes real positions, max-abs {diff}");
    // And the f32 file stores no more weights than the ONNX model's parameters.
    let f32m = convert::convert(&dir.join("model.onnx"), &mlm_options(&dir, QuantMode::F32).unwrap()).unwrap();
    assert_eq!(stored_params(&f32m.bytes).unwrap(), figures("albert").params);
}
