//! Shared helpers for the workspace-level integration tests.

use std::path::{Path, PathBuf};

pub mod gaussian_denoiser;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A committed zoo model folder, e.g. `models/gpt`.
pub fn model_dir(family: &str) -> PathBuf {
    repo_root().join("models").join(family)
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mote-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Measures the committed folder of a zoo `family` (`models/<family>`) with `evaluate` and
/// prints the figures; panics if the measurement fails.
pub fn measured<F: std::fmt::Debug>(family: &str, evaluate: impl FnOnce(&Path) -> anyhow::Result<F>) -> F {
    let f = evaluate(&model_dir(family)).unwrap_or_else(|e| panic!("evaluate models/{family}: {e:#}"));
    println!("{f:#?}");
    f
}

/// Checks a sequence-to-sequence family's f32 `.mote` against tract (1e-4) and candle's golden
/// logits (1e-3).
pub fn assert_golden_parity(f: &mote_converters::zoo::seq2seq::figures::FileFigures) {
    println!("f32 .mote vs tract max-abs {:.3e}, vs candle {:.3e}", f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs);
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
}

/// Prints a sequence-to-sequence family's greedy scores (the held-out set counted in `unit`),
/// checks that at least 200 were scored and that the candle exact match of the training report
/// (`trained_exact`) and the f32 file's agree within a point (greedy decoding may flip on
/// near-ties only).
pub fn check_greedy_scores(s: &mote_converters::zoo::seq2seq::figures::GreedyScores, unit: &str, trained_exact: f64) {
    println!(
        "exact match f32 {:.2}% int8 {:.2}% copy {:.2}%; token accuracy f32 {:.2}% int8 {:.2}% copy {:.2}% ({} {unit})",
        100.0 * s.exact_f32,
        100.0 * s.exact_int8,
        100.0 * s.baseline_exact,
        100.0 * s.token_f32,
        100.0 * s.token_int8,
        100.0 * s.baseline_token,
        s.heldout_examples
    );
    assert!(s.heldout_examples >= 200, "{} {unit}", s.heldout_examples);
    assert!((trained_exact - s.exact_f32).abs() <= 0.01, "candle {trained_exact:.4} vs f32 .mote {:.4}", s.exact_f32);
}

/// Prints a sequence-to-sequence family's memory and MACs and checks that its int8 file fits
/// the default MCU: at most 1 MiB of flash, arena and state within 256 KiB less 8 KiB.
pub fn assert_fits_default_mcu(f: &mote_converters::zoo::seq2seq::figures::FileFigures, macs_per_token: u64) {
    println!(
        "params {} flash f32 {} int8 {} arena {} (lower bound {}) state {} MACs/token {macs_per_token}",
        f.params, f.flash_f32, f.flash_int8, f.arena_int8, f.lower_bound_int8, f.state_int8
    );
    assert!(f.flash_int8 <= 1 << 20, "int8 flash {}", f.flash_int8);
    assert!(f.arena_int8 + f.state_int8 + 8 * 1024 <= 256 * 1024, "arena {} + state {}", f.arena_int8, f.state_int8);
}

/// Writes an untrained (randomly initialised) zoo GPT with a small context to `dir`.
pub fn untrained_gpt(dir: &Path, seed: u64) -> PathBuf {
    use mote_converters::zoo::gpt::{Gpt, GptConfig};
    let vocab = "abcdefghij .;=+0123456789";
    let mut cfg = GptConfig::new(vocab.chars().count());
    cfg.max_seq = 16;
    cfg.d_model = 32;
    cfg.d_ff = 64;
    cfg.init_std = 0.2;
    let gpt = Gpt::new(cfg, seed).expect("build gpt");
    let path = dir.join("gpt.onnx");
    std::fs::write(&path, gpt.export_onnx(vocab).expect("export")).expect("write onnx");
    path
}

/// Conversion options for the untrained GPT: `seq` bounded, 2 random calibration inputs.
pub fn gpt_options(quant: mote_converters::emit::dtypes::QuantMode, seq: usize) -> mote_converters::convert::Options {
    mote_converters::convert::Options {
        quant,
        bounds: [("seq".to_string(), seq)].into_iter().collect(),
        calibration: Some(mote_converters::convert::Calibration::Random(2)),
        decode: true,
        extra_entries: Vec::new(),
    }
}

/// The Cortex-M4 figures of `run` a diffusion family's card quotes (its
/// [`figures_file`](mote_converters::family::m4::DeviceRun::figures_file) in `models/<family>`),
/// checked against the committed device file: measured by `run`'s command on this very file,
/// bit-exact with the host, the model embedded whole, the arena and state at least what the
/// file asks for, RAM and flash within a 256 KiB / 1 MiB Cortex-M4 board's, and one sample
/// costing its `2 × steps` guided denoiser calls plus at most 10% of sampler arithmetic.
pub fn current_m4_figures(run: &mote_converters::family::m4::DeviceRun) -> mote_converters::family::m4::M4Figures {
    let dir = model_dir(run.family);
    let m = mote_converters::family::m4::M4Figures::read(&dir, run)
        .unwrap_or_else(|| panic!("models/{}/{} is missing or unreadable", run.family, run.figures_file()));
    println!("{m:?}");
    assert!(
        m.current(&dir, run),
        "{} was measured on an earlier {} (run `mote zoo refresh {}`)",
        run.figures_file(),
        run.file,
        run.family
    );
    assert_eq!(m.command, run.command());
    assert!(m.bit_exact, "the device's outputs differ from the host's");
    let bytes = std::fs::read(dir.join(run.file)).expect("device file");
    let model = mote::Model::parse(&bytes).expect("device file parses");
    assert!(m.model >= bytes.len() as u64, "{} embedded bytes for a {}-byte file", m.model, bytes.len());
    assert!(m.arena >= model.arena_bytes() as u64 && m.state >= model.state_bytes() as u64);
    let calls = 2.0 * run.steps as f64 * m.forward_instructions;
    // Small enough for a real Cortex-M4 board such as the nRF52840 (256 KiB RAM, 1 MiB flash).
    assert!(m.ram_static + m.stack <= 256 << 10, "RAM {} + stack {}", m.ram_static, m.stack);
    assert!(m.flash <= 1 << 20, "flash {}", m.flash);
    assert!(
        (calls..=1.1 * calls).contains(&m.sample_instructions),
        "a sample takes {} instructions, {} guided denoiser calls {calls}",
        m.sample_instructions,
        2 * run.steps
    );
    m
}
