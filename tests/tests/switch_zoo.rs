//! Acceptance of the committed zoo Switch Transformer (`models/switch`): parity with tract,
//! int8 quality against f32, one fused `Moe` op per layer whose MACs are the dense path plus
//! the router and one expert, and deterministic capacity (token dropping) on a converted model.

use mote_converters::array::Array;
use mote_converters::convert::{convert, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::family::{evaluate_switch, gpt_options};
use mote_converters::host;
use mote_converters::zoo::corpus::Vocab;
use mote_converters::zoo::switch::{router_from_onnx, with_moe_capacity, SwitchConfig};
use mote_tests::{model_dir, scratch};

/// MACs of one `decode_step` worked out from the architecture alone: per block LayerNorm,
/// Q/K/V/O projections, attention over a full cache, residual, LayerNorm, the router, ONE
/// expert (two matrices), residual; plus the position add, the final LayerNorm and the head.
fn expected_macs(c: &SwitchConfig, experts_run: u64) -> u64 {
    let (d, v, s) = (c.d_model as u64, c.vocab as u64, c.max_seq as u64);
    let (e, f, l) = (c.n_experts as u64, c.d_ff as u64, c.n_layers as u64);
    let norm = d;
    let attention = 4 * d * d + 2 * s * d;
    let router = e * d;
    let expert = d * f + f * d;
    let block = norm + attention + d + norm + router + experts_run * expert + d;
    d + l * block + norm + d * v
}

#[test]
fn committed_switch_meets_the_acceptance_figures() {
    let f = evaluate_switch(&model_dir("switch")).expect("evaluate models/switch");
    println!("{f:#?}");
    println!("f32 .mote vs tract max-abs: {:.3e}", f.f32_vs_tract_max_abs);
    println!(
        "held-out loss f32 {:.4} int8 {:.4} ({:+.2}%), next-token agreement {:.2}% over {} positions",
        f.loss_f32,
        f.loss_int8,
        100.0 * (f.loss_int8 - f.loss_f32) / f.loss_f32,
        100.0 * f.top1_agreement,
        f.heldout_positions
    );
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
    assert!(f.heldout_positions >= 1000, "{} held-out positions", f.heldout_positions);
    assert!((f.loss_int8 - f.loss_f32).abs() <= 0.02 * f.loss_f32, "loss f32 {} int8 {}", f.loss_f32, f.loss_int8);
    assert!(f.top1_agreement >= 0.95, "int8 vs f32 top-1 agreement {:.4}", f.top1_agreement);
    assert!(f.decode_vs_forward_f32 <= 1e-4, "f32 decode drift {}", f.decode_vs_forward_f32);

    // One fused Moe per block, its weights f16/f32 and its activations f32 in the int8 file.
    let cfg = SwitchConfig::new(Vocab::standard().len());
    assert_eq!(f.moe_ops, cfg.n_layers);
    assert_eq!(f.moe_dtypes_int8.len(), 8, "{:?}", f.moe_dtypes_int8);
    assert!(f.moe_dtypes_int8.iter().all(|d| d == "F32" || d == "F16"), "{:?}", f.moe_dtypes_int8);
    assert_eq!((f.moe_dtypes_int8[0].as_str(), f.moe_dtypes_int8[7].as_str()), ("F32", "F32"));

    // MACs per token: the dense path plus the router and one expert, not all experts.
    let one = expected_macs(&cfg, 1);
    let all = expected_macs(&cfg, cfg.n_experts as u64);
    println!("MACs per token: {} (expected {one}); all {} experts: {all}", f.macs_per_token, cfg.n_experts);
    assert_eq!(f.macs_per_token, one);
    assert_eq!(f.macs_per_token_all_experts, all);
    assert_eq!(cfg.macs_per_token(), one);
    assert!(f.macs_per_token < all);
    let per_layer = cfg.n_experts * cfg.d_model + 2 * cfg.d_ff * cfg.d_model;
    assert_eq!(f.moe_macs_per_token, (cfg.n_layers * per_layer) as u64);

    assert!(f.committed_int8_up_to_date, "models/switch/model.int8.mote is stale: run `mote zoo refresh switch`");
    assert!(f.flash_int8 <= 1 << 20, "flash {}", f.flash_int8);
    assert!(f.arena_int8 + f.state_int8 + 8 * 1024 <= 256 * 1024, "RAM {} + {}", f.arena_int8, f.state_int8);
}

#[test]
fn capacity_drops_overflowing_tokens_in_row_order() {
    let dir = model_dir("switch");
    let onnx = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
    let capacity = 6usize;
    let tmp = scratch("switch-capacity");
    let limited = tmp.join("model.onnx");
    std::fs::write(&limited, with_moe_capacity(&onnx, capacity as u32).unwrap()).unwrap();
    let opts = |d: &std::path::Path| Options { decode: false, ..gpt_options(d, QuantMode::F32).unwrap() };
    let free = convert(&dir.join("model.onnx"), &opts(&dir)).expect("convert").bytes;
    // Without a calibration folder next to it; the metadata carries the capacity.
    let capped = convert(&limited, &Options { calibration: None, ..opts(&dir) }).expect("convert capped").bytes;

    // The first Moe op: its input and output names.
    let m = mote::Model::parse(&capped).unwrap();
    let info = m.entry(m.entry_by_name("forward").unwrap()).unwrap();
    let (x_name, y_name) = (info.first_op as usize..(info.first_op + info.n_ops) as usize)
        .map(|i| m.op(i).unwrap())
        .find(|op| matches!(op.op, mote::Op::Moe { capacity: 6, .. }))
        .map(|op| {
            let x = m.tensor_name(m.op_input(&op, 0).unwrap()).unwrap().to_string();
            let y = m.tensor_name(m.op_output(&op).unwrap()).unwrap().to_string();
            (x, y)
        })
        .expect("a Moe op with capacity 6");

    let input = Array::read_npy(&dir.join("golden/input_0.npy")).unwrap();
    let observe = |bytes: &[u8]| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        host::run_observed(bytes, "forward", std::slice::from_ref(&input), |name, v| {
            if name == x_name {
                x = v.to_vec();
            } else if name == y_name {
                y = v.to_vec();
            }
        })
        .unwrap();
        (x, y)
    };
    let (x, y_free) = observe(&free);
    let (x2, y_capped) = observe(&capped);
    assert_eq!(x, x2, "the first Moe's input does not depend on capacity");

    // Route independently with the router weights from the ONNX initializers.
    let (w, b) = router_from_onnx(&onnx, 0).unwrap();
    let experts = b.len();
    let d = w.len() / experts;
    let mut taken = vec![0usize; experts];
    let mut dropped = 0;
    for (t, row) in x.chunks(d).enumerate() {
        let logits: Vec<f32> =
            (0..experts).map(|e| b[e] + (0..d).map(|i| w[e * d + i] * row[i]).sum::<f32>()).collect();
        let e = (0..experts).fold(0, |best, k| if logits[k] > logits[best] { k } else { best });
        taken[e] += 1;
        let (got, free_row) = (&y_capped[t * d..(t + 1) * d], &y_free[t * d..(t + 1) * d]);
        if taken[e] > capacity {
            dropped += 1;
            assert!(got.iter().all(|&v| v == 0.0), "token {t} (expert {e}, #{}) must be dropped", taken[e]);
        } else {
            assert_eq!(got, free_row, "token {t} (expert {e}, #{}) must pass unchanged", taken[e]);
            assert!(got.iter().any(|&v| v != 0.0));
        }
    }
    let want_dropped: usize = taken.iter().map(|&n| n.saturating_sub(capacity)).sum();
    println!("first-layer routing of golden input 0: {taken:?}, capacity {capacity}: {dropped} tokens dropped");
    assert_eq!(dropped, want_dropped);
    assert!(dropped > 0, "64 tokens over {experts} experts of capacity {capacity} must overflow");
    std::fs::remove_dir_all(&tmp).ok();
}
