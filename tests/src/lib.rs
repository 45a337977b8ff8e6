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
