//! The `mote` binary end to end: happy paths print reports, bad input gives a one-line
//! error and a non-zero exit.

use mote_converters::array::Array;
use mote_converters::zoo::gpt::{Gpt, GptConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VOCAB: &str = "abcdefghij .;=+0123456789";

fn mote(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mote")).args(args).output().expect("run mote")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mote-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An untrained GPT converted through the CLI; returns (onnx, mote).
fn converted(dir: &Path) -> (PathBuf, PathBuf) {
    let mut cfg = GptConfig::new(VOCAB.len());
    cfg.max_seq = 16;
    cfg.d_model = 32;
    cfg.d_ff = 64;
    let onnx = dir.join("gpt.onnx");
    std::fs::write(&onnx, Gpt::new(cfg, 1).unwrap().export_onnx(VOCAB).unwrap()).unwrap();
    let out = dir.join("gpt.mote");
    let o = mote(&[
        "convert",
        onnx.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quant",
        "int8",
        "--calib-random",
        "3",
        "--dim",
        "seq=16",
        "--ram-budget",
        "256KiB",
        "--flash-budget",
        "1MiB",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("Attention") && t.contains("lower bound") && t.contains("self-check of forward vs tract"),
        "{t}"
    );
    (onnx, out)
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "must fail: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    // clap adds its standard "For more information, try '--help'." hint to usage errors.
    let lines = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("For more information")).count();
    assert_eq!(lines, 1, "one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn convert_inspect_run_verify_generate() {
    let dir = scratch("happy");
    let (onnx, model) = converted(&dir);
    let m = model.to_str().unwrap();

    let o = mote(&["inspect", m]);
    assert!(o.status.success() && text(&o).contains("decode_step"), "{}", text(&o));
    let o = mote(&["inspect", m, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["ops"].as_array().unwrap().len() > 10);

    let x = dir.join("x.npy");
    Array::i64(vec![1, 16], (0..16).collect()).write_npy(&x).unwrap();
    let y = dir.join("y.npy");
    let o = mote(&["run", m, "--input", x.to_str().unwrap(), "-o", y.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(Array::read_npy(&y).unwrap().shape, vec![1, 16, VOCAB.len()]);

    let o = mote(&["verify", onnx.to_str().unwrap(), m, "--input", x.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("cosine"), "{}", text(&o));

    let o = mote(&["generate", m, "--prompt", "ab", "--max-new", "5", "--temperature", "0.7", "--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout).trim_end().to_string();
    assert_eq!(line.chars().count(), 7, "prompt + 5 generated chars: {line:?}");
    let again = mote(&["generate", m, "--prompt", "ab", "--max-new", "5", "--temperature", "0.7", "--seed", "3"]);
    assert_eq!(o.stdout, again.stdout, "same seed, same text");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = scratch("bad");
    let (onnx, model) = converted(&dir);
    let m = model.to_str().unwrap();
    let y = dir.join("y.npy");
    let y = y.to_str().unwrap();

    assert_one_line_error(&mote(&["run", m, "--input", "/nonexistent/x.npy", "-o", y]), "cannot read");
    let garbled = dir.join("garbled.npy");
    std::fs::write(&garbled, b"\x93NUMPY garbage").unwrap();
    assert_one_line_error(&mote(&["run", m, "--input", garbled.to_str().unwrap(), "-o", y]), "not a valid .npy");
    let wrong = dir.join("wrong.npy");
    Array::i64(vec![1, 3], vec![1, 2, 3]).write_npy(&wrong).unwrap();
    assert_one_line_error(&mote(&["run", m, "--input", wrong.to_str().unwrap(), "-o", y]), "was given shape [1, 3]");
    let not_model = dir.join("x.mote");
    std::fs::write(&not_model, b"hello").unwrap();
    assert_one_line_error(&mote(&["inspect", not_model.to_str().unwrap()]), "invalid .mote file");
    assert_one_line_error(&mote(&["inspect", "/nonexistent.mote"]), "cannot read");
    assert_one_line_error(&mote(&["generate", m, "--prompt", "XYZ"]), "not in the model's vocabulary");
    assert_one_line_error(&mote(&["generate", m, "--prompt", "ab", "--max-new", "100"]), "exceeds the model's context");
    assert_one_line_error(&mote(&["convert", onnx.to_str().unwrap(), "-o", y]), "--dim seq=");
    assert_one_line_error(
        &mote(&["convert", onnx.to_str().unwrap(), "-o", y, "--dim", "seq=16", "--ram-budget", "12 parsecs"]),
        "unknown unit",
    );
    assert!(!mote(&["convert", onnx.to_str().unwrap(), "-o", y, "--dim", "seq"]).status.success());
    let bogus = dir.join("bogus.onnx");
    std::fs::write(&bogus, b"not protobuf at all").unwrap();
    assert_one_line_error(
        &mote(&["convert", bogus.to_str().unwrap(), "-o", y, "--dim", "seq=4"]),
        "not a readable ONNX model",
    );
}
