//! The Cortex-M4 run of a diffusion family's int8 device file, e.g. `mote flash --board
//! mps2-an386 models/ldm/model.int8.mote --steps 4 --class 1 --guidance 3`, driven from `mote
//! zoo refresh <family>` when the firmware toolchain is installed. Its figures are kept in
//! `m4.json` with a hash of the file they were measured on, and the images the device drew in
//! `device.png` (`m4.<tag>.json` and `device.<tag>.png` for a family's further runs).

use crate::flash::{self, firmware};
use crate::zoo::vae::glyphs::{grid_png, PIXELS};
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Board of the runs.
pub const BOARD: &str = "mps2-an386";

/// One family's guided device run.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRun {
    /// Family folder under `models/`.
    pub family: &'static str,
    /// The int8 device file in it.
    pub file: &'static str,
    /// Sampler steps.
    pub steps: usize,
    /// Class asked for.
    pub class: i32,
    /// Guidance scale.
    pub scale: f32,
    /// What names the records of a family's further runs (`m4.<tag>.json`, `device.<tag>.png`);
    /// empty for its first run (`m4.json`, `device.png`).
    pub tag: &'static str,
}

impl DeviceRun {
    /// The `mote flash` command line of the run (the flash request's seed is the default).
    pub fn command(&self) -> String {
        format!(
            "mote flash --board {BOARD} models/{}/{} --steps {} --class {} --guidance {}",
            self.family, self.file, self.steps, self.class, self.scale
        )
    }

    /// The file its figures are kept in: `m4.json`, or `m4.<tag>.json`.
    pub fn figures_file(&self) -> String {
        self.record("m4", "json")
    }

    /// The picture of what the device drew: `device.png`, or `device.<tag>.png`.
    pub fn picture_file(&self) -> String {
        self.record("device", "png")
    }

    fn record(&self, stem: &str, ext: &str) -> String {
        match self.tag {
            "" => format!("{stem}.{ext}"),
            tag => format!("{stem}.{tag}.{ext}"),
        }
    }
}

/// What the QEMU run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M4Figures {
    /// The command it stands for.
    pub command: String,
    /// FNV-1a hash of the flashed file (the figures are stale once it changes).
    pub model_hash: String,
    /// Whether every device output equals the host runtime's bit for bit.
    pub bit_exact: bool,
    /// Flash bytes of the linked image (code, model, constants).
    pub flash: u64,
    /// Of which the embedded `.mote` file.
    pub model: u64,
    /// Static RAM bytes (.data, .bss with arena and state, .uninit).
    pub ram_static: u64,
    /// The arena and the state in it.
    pub arena: u64,
    /// The state (the sampler's slot).
    pub state: u64,
    /// Stack high-water mark.
    pub stack: u64,
    /// Instructions of one guided sample (one batch of the file's rows, two denoiser calls per
    /// step).
    pub sample_instructions: f64,
    /// Instructions of decoding it (files with a `decode` entry).
    pub decode_instructions: Option<f64>,
    /// Instructions of one denoiser call.
    pub forward_instructions: f64,
}

impl M4Figures {
    /// Reads the figures of `run` in `dir` ([`DeviceRun::figures_file`]), if any.
    pub fn read(dir: &Path, run: &DeviceRun) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(run.figures_file())).ok()?).ok()
    }

    /// Whether the figures were measured on the current device file of `run` in `dir`.
    pub fn current(&self, dir: &Path, run: &DeviceRun) -> bool {
        std::fs::read(dir.join(run.file)).is_ok_and(|b| fnv(&b) == self.model_hash)
    }

    /// The card's sentence on parity and memory: bit-exactness, flash, static RAM and stack.
    pub fn footprint(&self) -> String {
        let b = |n: u64| crate::report::bytes(n as usize);
        format!(
            "the device's outputs equal the host's bit for bit: {}. Flash {} (model {}), static RAM {} (arena {}, \
             sampler state {}) plus {} of stack.",
            self.bit_exact,
            b(self.flash),
            b(self.model),
            b(self.ram_static),
            b(self.arena),
            b(self.state),
            b(self.stack)
        )
    }

    /// The sentence a card puts after the command when the figures are stale.
    pub fn staleness(&self, dir: &Path, run: &DeviceRun) -> String {
        if self.current(dir, run) {
            String::new()
        } else {
            format!(" (measured on an earlier `{}`: refresh with the firmware toolchain installed)", run.file)
        }
    }
}

/// FNV-1a 64 of `bytes`, in hex.
fn fnv(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

/// Runs `run` on the QEMU Cortex-M4 when the firmware toolchain is installed and the committed
/// figures are stale, writing its [`DeviceRun::figures_file`] and [`DeviceRun::picture_file`]
/// (the device's last output, as glyphs in [0, 1] after `to_pixels`); prints why not otherwise. `None` without the device file.
pub fn refresh(dir: &Path, run: &DeviceRun, to_pixels: &dyn Fn(&[f32]) -> Vec<f32>) -> Result<Option<M4Figures>> {
    let model = dir.join(run.file);
    if !model.exists() {
        return Ok(None);
    }
    let old = M4Figures::read(dir, run);
    if old.as_ref().is_some_and(|o| o.current(dir, run)) {
        return Ok(old);
    }
    if let Some(missing) = firmware::missing_toolchain(true) {
        println!("note: {} not refreshed, the firmware toolchain is missing ({missing})", run.figures_file());
        return Ok(old);
    }
    let mut req = flash::Request::new(BOARD, &model);
    (req.steps, req.class, req.guidance) = (Some(run.steps), Some(run.class), Some(run.scale));
    req.timeout = std::time::Duration::from_secs(600);
    println!("running {} on QEMU {BOARD} ...", model.display());
    let o = flash::flash(&req).with_context(|| format!("flashing {}", model.display()))?;
    let dev = o.device.as_ref().ok_or_else(|| anyhow!("no device run on {BOARD}"))?;
    let drawn = dev.outputs.last().ok_or_else(|| anyhow!("the device returned no outputs"))?;
    let images = to_pixels(drawn);
    grid_png(&dir.join(run.picture_file()), &[&images], (images.len() / PIXELS).clamp(1, 8), 3)?;
    let f = M4Figures {
        command: run.command(),
        model_hash: fnv(&std::fs::read(&model)?),
        bit_exact: o.outputs_bit_exact() == Some(true),
        flash: o.image.flash(),
        model: o.image.model,
        ram_static: o.image.ram(),
        arena: o.image.arena,
        state: o.image.state,
        stack: dev.stack_bytes,
        sample_instructions: o.sample_instructions().unwrap_or(f64::NAN),
        decode_instructions: o.decode_instructions(),
        forward_instructions: o.forward_instructions().unwrap_or(f64::NAN),
    };
    std::fs::write(dir.join(run.figures_file()), serde_json::to_string_pretty(&f)?)?;
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_tells_files_apart() {
        assert_eq!(fnv(b""), "cbf29ce484222325");
        assert_ne!(fnv(b"a"), fnv(b"b"));
    }

    #[test]
    fn the_command_names_the_file_and_the_request() {
        let run = DeviceRun { family: "ldm", file: "model.int8.mote", steps: 4, class: 1, scale: 3.0, tag: "" };
        assert_eq!(
            run.command(),
            "mote flash --board mps2-an386 models/ldm/model.int8.mote --steps 4 --class 1 --guidance 3"
        );
        assert_eq!((run.figures_file().as_str(), run.picture_file().as_str()), ("m4.json", "device.png"));
        let one = DeviceRun { tag: "student1", ..run };
        assert_eq!(
            (one.figures_file().as_str(), one.picture_file().as_str()),
            ("m4.student1.json", "device.student1.png")
        );
    }
}
