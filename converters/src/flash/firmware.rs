//! Building the firmware for one board with one model, through Debian's toolchain.

use super::board::{self, Board};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian compiler (`rustc-web`); rustup's cannot add thumb targets here.
pub const RUSTC: &str = "/usr/bin/rustc";
/// The Debian cargo (`cargo-web`).
pub const CARGO: &str = "/usr/bin/cargo";
/// Where `rust-web-src` puts the library sources that `-Zbuild-std` compiles.
pub const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";

/// The firmware crate: `$MOTE_FIRMWARE_DIR`, else `firmware/` of this source tree.
pub fn firmware_dir() -> PathBuf {
    std::env::var_os("MOTE_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("firmware"))
}

/// What is missing to build firmware and run QEMU boards, or `None` when all is there.
pub fn missing_toolchain(need_qemu: bool) -> Option<String> {
    let mut missing = Vec::new();
    if !Path::new(RUSTC).exists() {
        missing.push(format!("{RUSTC} (Debian package rustc-web)"));
    }
    if !Path::new(CARGO).exists() {
        missing.push(format!("{CARGO} (cargo-web)"));
    }
    if !Path::new(RUST_SRC).exists() {
        missing.push(format!("{RUST_SRC} (rust-web-src)"));
    }
    if !Path::new("/usr/bin/rust-lld").exists() {
        missing.push("/usr/bin/rust-lld (lld-22)".into());
    }
    if need_qemu && which("qemu-system-arm").is_none() {
        missing.push("qemu-system-arm (qemu-system-arm)".into());
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!("missing: {}; run `.ci/setup-toolchain.sh` as root", missing.join(", ")))
    }
}

/// Finds a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// What the firmware embeds besides the model.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// Raw `forward` input blob (4 bytes per element), if any.
    pub input: Option<Vec<u8>>,
    /// Prompt token ids for on-device generation (empty: none).
    pub prompt: Vec<i32>,
    /// Tokens to generate.
    pub max_new: usize,
    /// Sampler seed.
    pub seed: u64,
    /// Sampler temperature (0: greedy).
    pub temperature: f32,
    /// Sampler top-k.
    pub top_k: usize,
    /// Optimise the firmware for speed (`opt-level=3`) instead of size (`opt-level="s"`).
    pub speed: bool,
    /// The diffusion sample to draw on the device (diffusion models).
    pub diffusion: Option<mote::diffusion::Request>,
}

/// Serialises builds in this process: cargo's own lock covers the build, this one also
/// covers copying the ELF out before another build overwrites it.
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds the firmware for `board` embedding `model`; returns the linked ELF (a copy named
/// after a hash of the model and payload, so concurrent jobs do not clobber each other).
pub fn build(board: &Board, model: &Path, payload: &Payload) -> Result<PathBuf> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = firmware_dir();
    let target = board::text(board, "target")?;
    let opt = if payload.speed { "3" } else { "s" };
    let target_dir = dir.join("target").join(format!("{}-O{opt}", board.name));
    std::fs::create_dir_all(&target_dir).with_context(|| format!("cannot create {}", target_dir.display()))?;
    // Other processes may flash the same board: hold a file lock over build and copy.
    let lock = std::fs::File::create(target_dir.join(".mote-flash.lock"))?;
    lock.lock().context("cannot lock the firmware build directory")?;
    let model = std::fs::canonicalize(model).with_context(|| format!("cannot find {}", model.display()))?;
    let mut cmd = Command::new(CARGO);
    // Whatever cargo/rustc settings this process inherited (e.g. under `cargo test`)
    // belong to the host build, not to the firmware's.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        let host_cargo = k.starts_with("CARGO") && k != "CARGO_HOME";
        if host_cargo
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTFLAGS")
            || k.starts_with("RUSTDOC")
            || k.starts_with("__CARGO")
        {
            cmd.env_remove(&k);
        }
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let rustflags = format!("-C link-arg=-Tlink.x {}", board.get("rustflags").unwrap_or(""));
    cmd.current_dir(&dir)
        .env("PATH", format!("/usr/bin:{path}"))
        .env("RUSTC", RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", rustflags.trim())
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", opt)
        .env("MOTE_BOARD", &board.name)
        .env("MOTE_MODEL", &model)
        .args(["build", "--release", "--target", target]);
    if !board.is_qemu() {
        // Real boards log over defmt-rtt (a probe reads it) instead of semihosting.
        cmd.args(["--no-default-features", "--features", "rtt"]);
    }
    match &payload.input {
        Some(blob) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(blob, &mut h);
            let p = target_dir.join(format!("mote-input-{:016x}.bin", std::hash::Hasher::finish(&h)));
            if std::fs::read(&p).ok().as_ref() != Some(blob) {
                std::fs::write(&p, blob)?;
            }
            cmd.env("MOTE_INPUT", p);
        }
        None => {
            cmd.env("MOTE_INPUT", "");
        }
    }
    let prompt: Vec<String> = payload.prompt.iter().map(|t| t.to_string()).collect();
    cmd.env("MOTE_PROMPT", prompt.join(","))
        .env("MOTE_MAX_NEW", payload.max_new.to_string())
        .env("MOTE_SEED", payload.seed.to_string())
        .env("MOTE_TEMPERATURE", format!("{:?}", payload.temperature))
        .env("MOTE_TOP_K", payload.top_k.to_string());
    for (name, value) in super::diffusion::env(payload.diffusion.as_ref()) {
        cmd.env(name, value);
    }
    let out = cmd.output().with_context(|| format!("cannot run {CARGO}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("the firmware build for board '{}' failed:\n{}", board.name, tail.join("\n"));
    }
    let elf = target_dir.join(target).join("release").join("mote-firmware");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&std::fs::read(&model)?, &mut h);
    std::hash::Hash::hash(&format!("{payload:?}"), &mut h);
    let images = target_dir.join("images");
    std::fs::create_dir_all(&images)?;
    let stem = model.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let copy = images.join(format!("{stem}-{:016x}.elf", std::hash::Hasher::finish(&h)));
    std::fs::copy(&elf, &copy).with_context(|| format!("cannot copy {}", elf.display()))?;
    drop(lock);
    Ok(copy)
}
