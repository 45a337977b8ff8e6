//! Embeds the model chosen at build time and writes the board's `memory.x`.
//!
//! Environment (set by `mote flash`, or by hand):
//! - `MOTE_MODEL`: path of the `.mote` file (required); validated here with the host runtime.
//! - `MOTE_BOARD`: a board of `boards.toml` (default `mps2-an386`); must match `--target`.
//! - `MOTE_INPUT`: optional raw input blob for `forward` (4 bytes per element, LE: i32 for
//!   integer inputs, f32 otherwise, inputs concatenated in entry order).
//! - `MOTE_STEPS`, `MOTE_CLASS`, `MOTE_GUIDANCE`: a diffusion sample to draw (DDIM, η = 0).
//! - `MOTE_PROMPT` (`1,2,3`), `MOTE_MAX_NEW`, `MOTE_SEED`, `MOTE_TEMPERATURE`, `MOTE_TOP_K`:
//!   optional generation with the `decode_step` entry.
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "boards.rs"]
#[allow(dead_code)]
mod boards;

fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn fail(msg: String) -> ! {
    eprintln!("mote-firmware build: {msg}");
    std::process::exit(1)
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=boards.toml");
    println!("cargo:rerun-if-changed=boards.rs");

    // Board: memory.x from boards.toml.
    let board_name = var("MOTE_BOARD").unwrap_or_else(|| "mps2-an386".into());
    let text =
        std::fs::read_to_string(manifest.join("boards.toml")).unwrap_or_else(|e| fail(format!("boards.toml: {e}")));
    let all = boards::parse(&text).unwrap_or_else(|e| fail(e));
    let board = all.iter().find(|b| b.name == board_name).unwrap_or_else(|| {
        let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
        fail(format!("unknown board '{board_name}'; known boards: {}", names.join(", ")))
    });
    let target = env::var("TARGET").unwrap();
    let want = board.text("target").unwrap_or_else(|e| fail(e));
    if target != want {
        fail(format!("board '{board_name}' needs --target {want}, this build is for {target}"));
    }
    let num = |k: &str| board.number(k).unwrap_or_else(|e| fail(e));
    let memory = format!(
        "/* generated from boards.toml [{board_name}] */\nMEMORY\n{{\n  FLASH : ORIGIN = {:#010x}, LENGTH = {}\n  RAM : ORIGIN = {:#010x}, LENGTH = {}\n}}\n",
        num("flash_origin"),
        num("flash_size"),
        num("ram_origin"),
        num("ram_size")
    );
    std::fs::write(out.join("memory.x"), memory).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    // defmt's linker script (its interned format strings), next to cortex-m-rt's link.x.
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");

    // Model: validated and sized on the host, embedded 16-byte aligned in flash.
    let model_path = var("MOTE_MODEL").unwrap_or_else(|| {
        fail("set MOTE_MODEL to the .mote file to embed (or use `mote flash --board NAME MODEL`)".into())
    });
    let model_path = std::fs::canonicalize(&model_path).unwrap_or_else(|e| fail(format!("{model_path}: {e}")));
    println!("cargo:rerun-if-changed={}", model_path.display());
    let bytes = std::fs::read(&model_path).unwrap_or_else(|e| fail(format!("{}: {e}", model_path.display())));
    let model = mote::Model::parse(&bytes)
        .unwrap_or_else(|e| fail(format!("{}: invalid .mote file: {e}", model_path.display())));
    let has_decode = model.entry_by_name("decode_step").is_ok();
    // The largest `forward`, `inverse` or `denoise` input, in elements: the stack buffer that
    // converts inputs (and holds an inverse's latent draws or a diffusion sample).
    let max_input = ["forward", "inverse", "denoise"]
        .iter()
        .filter_map(|name| {
            let e = model.entry_by_name(name).ok()?;
            let n = model.entry(e).ok()?.n_inputs as usize;
            (0..n).map(|k| Some(model.tensor(model.entry_input(e, k).ok()?).ok()?.desc.shape.numel())).max().flatten()
        })
        .max()
        .unwrap_or(0);

    let mut g = String::new();
    let _ = writeln!(g, "/// The board this image was built for.\npub const BOARD: &str = {board_name:?};");
    let _ = writeln!(
        g,
        "/// Arena bytes the model header asks for.\npub const ARENA_BYTES: usize = {};",
        model.arena_bytes()
    );
    let _ = writeln!(
        g,
        "/// State bytes the model header asks for.\npub const STATE_BYTES: usize = {};",
        model.state_bytes()
    );
    let _ = writeln!(
        g,
        "/// Elements of the largest forward, inverse or denoise input.\npub const MAX_INPUT: usize = {};",
        max_input.max(1)
    );
    let _ = writeln!(g, "/// Model file bytes.\npub const MODEL_LEN: usize = {};", bytes.len());
    let _ = writeln!(
        g,
        "/// The model, in flash, 16-byte aligned.\n#[no_mangle]\n#[link_section = \".rodata.mote_model\"]\npub static MOTE_MODEL: Aligned<[u8; MODEL_LEN]> = Aligned(*include_bytes!({:?}));",
        model_path.display().to_string()
    );
    match var("MOTE_INPUT") {
        Some(p) => {
            let p = std::fs::canonicalize(&p).unwrap_or_else(|e| fail(format!("MOTE_INPUT {p}: {e}")));
            println!("cargo:rerun-if-changed={}", p.display());
            let n = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            let _ = writeln!(
                g,
                "/// Input blob of `forward`.\n#[no_mangle]\npub static MOTE_INPUT: Aligned<[u8; {n}]> = Aligned(*include_bytes!({:?}));\npub const HAS_INPUT: bool = true;",
                p.display().to_string()
            );
        }
        None => {
            let _ = writeln!(
                g,
                "pub static MOTE_INPUT: Aligned<[u8; 0]> = Aligned([]);\npub const HAS_INPUT: bool = false;"
            );
        }
    }
    let prompt: Vec<i32> = var("MOTE_PROMPT")
        .map(|p| {
            p.split(',')
                .map(|t| t.trim().parse().unwrap_or_else(|_| fail(format!("MOTE_PROMPT: '{t}' is not a token id"))))
                .collect()
        })
        .unwrap_or_default();
    if !prompt.is_empty() && !has_decode {
        fail("MOTE_PROMPT given but the model has no decode_step entry".into());
    }
    let parse_or = |name: &str, default: &str| var(name).unwrap_or_else(|| default.into());
    let _ = writeln!(
        g,
        "/// Prompt token ids for generation (empty: no generation).\npub const PROMPT: &[i32] = &{prompt:?};"
    );
    let _ = writeln!(
        g,
        "pub const MAX_NEW: usize = {};",
        parse_or("MOTE_MAX_NEW", "16").parse::<usize>().unwrap_or_else(|_| fail("MOTE_MAX_NEW".into()))
    );
    let _ = writeln!(
        g,
        "pub const SEED: u64 = {};",
        parse_or("MOTE_SEED", "1").parse::<u64>().unwrap_or_else(|_| fail("MOTE_SEED".into()))
    );
    let _ = writeln!(
        g,
        "pub const TEMPERATURE: f32 = {:?};",
        parse_or("MOTE_TEMPERATURE", "0.8").parse::<f32>().unwrap_or_else(|_| fail("MOTE_TEMPERATURE".into()))
    );
    let _ = writeln!(
        g,
        "pub const TOP_K: usize = {};",
        parse_or("MOTE_TOP_K", "8").parse::<usize>().unwrap_or_else(|_| fail("MOTE_TOP_K".into()))
    );
    let steps = parse_or("MOTE_STEPS", "0").parse::<usize>().unwrap_or_else(|_| fail("MOTE_STEPS".into()));
    let _ = writeln!(g, "/// Diffusion sampling steps (0: no sampling).\npub const DIFFUSION_STEPS: usize = {steps};");
    let class = var("MOTE_CLASS").map(|c| c.parse::<i32>().unwrap_or_else(|_| fail("MOTE_CLASS".into())));
    let _ = writeln!(g, "/// Diffusion class (None: unconditional).\npub const CLASS: Option<i32> = {class:?};");
    let guidance = var("MOTE_GUIDANCE").map(|c| c.parse::<f32>().unwrap_or_else(|_| fail("MOTE_GUIDANCE".into())));
    let _ = writeln!(
        g,
        "/// Classifier-free guidance scale (None: none).\npub const GUIDANCE: Option<f32> = {guidance:?};"
    );
    std::fs::write(out.join("model.rs"), g).unwrap();
}
