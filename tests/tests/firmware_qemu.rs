//! Firmware in QEMU against the host runtime: `mote flash` builds the firmware with a model,
//! runs it on the Cortex-M4 board (mps2-an386), and its outputs and generated tokens must
//! equal the host runtime's bit for bit (int8). The firmware logs through defmt over
//! semihosting; `mote flash` decodes the frames with `defmt-decoder` and the ELF. Real boards
//! build (with defmt-rtt) and report budgets only.
//!
//! These tests need the embedded toolchain (`.ci/setup-toolchain.sh`, which `.ci/run` calls);
//! without it they print why and skip.

use mote_converters::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::flash::{self, firmware, Outcome, Request};
use mote_converters::zoo::gpt::{Gpt, GptConfig};
use mote_tests::gaussian_denoiser::{self, Kind};
use mote_tests::{gpt_options, repo_root, scratch, untrained_gpt};
use std::path::{Path, PathBuf};

/// Whether the firmware toolchain is installed; prints the reason to skip when it is not.
fn toolchain(need_qemu: bool) -> bool {
    match firmware::missing_toolchain(need_qemu) {
        None => true,
        Some(why) => {
            println!("SKIPPED: firmware toolchain not installed ({why})");
            false
        }
    }
}

/// An untrained int8 GPT at a stable path (so firmware rebuilds are cached between runs).
fn test_model() -> PathBuf {
    let dir = repo_root().join("target").join("firmware-test");
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = untrained_gpt(&dir, 11);
    let c = convert::convert(&onnx, &gpt_options(QuantMode::Int8, 16)).unwrap();
    let path = dir.join("gpt.int8.mote");
    if std::fs::read(&path).ok().as_deref() != Some(&c.bytes[..]) {
        std::fs::write(&path, &c.bytes).unwrap();
    }
    path
}

fn summary(o: &Outcome) {
    let d = o.device.as_ref();
    println!(
        "{}: flash {} B (.text {} B, model {} B), static RAM {} B (arena {} B, state {} B), stack {:?} B, forward {:?} instr, token {:?} instr, inverse {:?} instr, diffusion sample {:?} instr",
        o.board.name,
        o.image.flash(),
        o.image.text,
        o.image.model,
        o.image.ram(),
        o.image.arena,
        o.image.state,
        d.map(|d| d.stack_bytes),
        o.forward_instructions().map(|x| x.round()),
        o.token_instructions().map(|x| x.round()),
        o.inverse_instructions().map(|x| x.round()),
        o.sample_instructions().map(|x| x.round())
    );
}

fn assert_matches_host(model: &Path, o: &Outcome, int8: bool) {
    let d = o.device.as_ref().expect("a QEMU board runs the model");
    assert_eq!(d.outputs.len(), o.host_outputs.len());
    for (a, b) in d.outputs.iter().zip(&o.host_outputs) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            if int8 {
                assert_eq!(x.to_bits(), y.to_bits(), "device {x} vs host {y}");
            } else {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "device {x} vs host {y}");
            }
        }
    }
    // Flows: the device also sampled through `inverse` (its outputs follow `forward`'s, compared above).
    let has_inverse = o.inspection.entries.iter().any(|e| e.entry == "inverse");
    assert_eq!(o.inverse_instructions().is_some(), has_inverse, "inverse run on the device");
    // Diffusion models: the device also drew a seeded sample (the last output, compared above).
    let bytes = std::fs::read(model).expect("model");
    let is_diffusion = mote::diffusion::Schedule::of_model(&mote::Model::parse(&bytes).expect("parse")).is_ok();
    assert_eq!(o.sample_instructions().is_some(), is_diffusion, "diffusion sample on the device");
    if !o.prompt.is_empty() {
        assert!(!d.tokens.is_empty(), "the device generated tokens");
        assert_eq!(o.tokens_match(), Some(true), "device tokens {:?} vs host {:?}", d.tokens, o.host_tokens);
    }
    assert!(d.log.lines().any(|l| l == "MOTE end 0"), "decoded defmt log:\n{}", d.log);
    assert!(d.stack_bytes > 0, "the stack high-water mark came through");
    assert!(o.forward_instructions().unwrap() > 1000.0);
    assert!(d.parse_ticks.unwrap() < d.forward_ticks.unwrap(), "parsing costs less than an inference");
}

#[test]
fn int8_gpt_on_cortex_m4_is_bit_exact_with_the_host() {
    if !toolchain(true) {
        return;
    }
    let model = test_model();
    let o = flash::flash(&Request::new("mps2-an386", &model)).unwrap();
    summary(&o);
    assert_matches_host(&model, &o, true);
    assert_eq!(o.outputs_bit_exact(), Some(true));
    assert!(o.image.model >= o.inspection.file_bytes as u64, "the model sits in .rodata");
    assert!(o.image.arena >= o.inspection.arena_bytes as u64 && o.image.state >= o.inspection.state_bytes as u64);
}

#[test]
fn int8_gpt_on_cortex_m55_is_bit_exact_with_the_host() {
    if !toolchain(true) {
        return;
    }
    let model = test_model();
    let o = flash::flash(&Request::new("mps3-an547", &model)).unwrap();
    summary(&o);
    assert_matches_host(&model, &o, true);
}

#[test]
fn committed_zoo_models_on_cortex_m4_match_the_host() {
    let models: Vec<PathBuf> = std::fs::read_dir(repo_root().join("models"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|family| std::fs::read_dir(family.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mote"))
        .collect();
    if models.is_empty() {
        println!("SKIPPED: no committed zoo models under models/");
        return;
    }
    if !toolchain(true) {
        return;
    }
    for m in models {
        let int8 = m.to_string_lossy().contains("int8");
        let mut req = Request::new("mps2-an386", &m);
        req.timeout = std::time::Duration::from_secs(300);
        let o = flash::flash(&req).unwrap_or_else(|e| panic!("{}: {e:#}", m.display()));
        println!("{}", m.display());
        summary(&o);
        assert_matches_host(&m, &o, int8);
    }
}

#[test]
fn real_boards_build_and_report_budgets_only() {
    if !toolchain(false) {
        return;
    }
    let model = test_model();
    for board in ["nrf52840", "stm32f746"] {
        let o = flash::flash(&Request::new(board, &model)).unwrap();
        summary(&o);
        assert!(o.device.is_none(), "no probe: nothing runs");
        let flash_size = o.board.number("flash_size").unwrap();
        let ram_size = o.board.number("ram_size").unwrap();
        assert!(o.image.flash() <= flash_size && o.image.ram() <= ram_size);
    }
}

#[test]
fn unknown_board_lists_the_known_boards() {
    let err = flash::flash(&Request::new("no-such-board", Path::new("x.mote"))).unwrap_err().to_string();
    assert!(
        err.contains("unknown board 'no-such-board'") && err.contains("mps2-an386") && err.contains("nrf52840"),
        "{err}"
    );
}

#[test]
fn missing_or_foreign_models_fail_before_building() {
    let err = flash::flash(&Request::new("mps2-an386", Path::new("/nonexistent/model.mote"))).unwrap_err();
    assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    let dir = scratch("firmware-version");
    let mut bytes = std::fs::read(test_model()).unwrap();
    bytes[4] = bytes[4].wrapping_add(1); // another format version
    let p = dir.join("other-version.mote");
    std::fs::write(&p, bytes).unwrap();
    let err = format!("{:#}", flash::flash(&Request::new("mps2-an386", &p)).unwrap_err());
    assert!(err.to_lowercase().contains("version"), "{err}");
}

#[test]
fn a_model_too_big_for_the_board_is_refused_with_the_per_layer_report() {
    let dir = scratch("firmware-too-big");
    let vocab = "abcdefghij .;=+0123456789";
    let mut cfg = GptConfig::new(vocab.chars().count());
    cfg.max_seq = 16;
    cfg.d_model = 256;
    cfg.d_ff = 1024;
    cfg.n_layers = 2;
    let onnx = dir.join("big.onnx");
    std::fs::write(&onnx, Gpt::new(cfg, 1).unwrap().export_onnx(vocab).unwrap()).unwrap();
    let c = convert::convert(&onnx, &gpt_options(QuantMode::Int8, 16)).unwrap();
    let p = dir.join("big.int8.mote");
    std::fs::write(&p, &c.bytes).unwrap();
    let err = format!("{:#}", flash::flash(&Request::new("nrf52840", &p)).unwrap_err());
    println!("{err}");
    assert!(err.contains("refusing to flash") && err.contains("flash budget exceeded"), "{err}");
    assert!(err.contains("Largest weight users"), "{err}");
}

#[test]
fn a_qemu_run_past_its_timeout_is_reported_as_a_timeout() {
    if !toolchain(true) {
        return;
    }
    let mut req = Request::new("mps2-an386", &test_model());
    req.timeout = std::time::Duration::from_millis(1);
    let err = format!("{:#}", flash::flash(&req).unwrap_err());
    assert!(err.contains("QEMU timed out"), "{err}");
}

#[test]
fn guided_latent_diffusion_on_cortex_m4_is_bit_exact_lands_on_the_guided_mean_and_decodes() {
    if !toolchain(true) {
        return;
    }
    let dir = repo_root().join("target").join("firmware-test");
    std::fs::create_dir_all(&dir).unwrap();
    // A latent diffusion layout: the denoiser as `forward`, a decoder of its samples as `decode`.
    let mut opts = gaussian_denoiser::f32_options();
    opts.extra_entries = vec![("decode".into(), gaussian_denoiser::decoder_onnx(&dir))];
    let onnx = gaussian_denoiser::onnx(&dir, Kind::Epsilon, true, None, None);
    let bytes = convert::convert(&onnx, &opts).unwrap().bytes;
    let path = dir.join("gaussian_denoiser.mote");
    if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(&path, &bytes).unwrap();
    }
    let mut req = Request::new("mps2-an386", &path);
    (req.steps, req.class, req.guidance, req.seed) = (Some(8), Some(1), Some(2.0), 5);
    let o = flash::flash(&req).unwrap();
    summary(&o);
    assert_matches_host(&path, &o, false);
    assert_eq!(o.outputs_bit_exact(), Some(true), "f32 sampler state, same arithmetic on both sides");
    let outputs = &o.device.as_ref().unwrap().outputs;
    assert_eq!(outputs.len(), 3, "forward's output, the sample, its decoding");
    let (x, decoded) = (&outputs[1], &outputs[2]);
    for (v, d) in x.iter().zip(decoded) {
        assert!((d - (v / 2.0).tanh()).abs() < 1e-6, "decoded {d} of {v}");
    }
    assert!(o.decode_instructions().is_some_and(|n| n > 0.0));
    // Class 1 has mean −μ and the unconditional class mean 0: guidance ×2 aims at −2μ.
    for d in 0..2 {
        let mean = x.iter().skip(d).step_by(2).sum::<f32>() / gaussian_denoiser::ROWS as f32;
        let want = -2.0 * gaussian_denoiser::MEAN[d];
        println!("dimension {d}: device sample mean {mean:.3} (guided target {want})");
        assert!((mean - want).abs() < 0.25, "dimension {d}: mean {mean} vs {want}");
    }
    let sample = o.sample_instructions().unwrap();
    let forward = o.forward_instructions().unwrap();
    println!("8 guided steps: {sample:.0} instructions = {:.1} forward runs", sample / forward);
    assert!(sample > 16.0 * forward * 0.9, "8 guided steps make 16 model calls");
}
