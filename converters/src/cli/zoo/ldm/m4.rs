//! The Cortex-M4 run of the `ldm` device file: `mote flash --board mps2-an386
//! models/ldm/model.int8.mote --steps 4 --class 1 --guidance 3` driven from `mote zoo refresh
//! ldm` when the firmware toolchain is installed, its figures kept in `m4.json` and its decoded
//! glyphs in `device.png`.

use crate::flash::{self, firmware};
use crate::zoo::vae::glyphs::grid_png;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Board of the run.
pub const BOARD: &str = "mps2-an386";
/// Steps, class and guidance scale of the run (the flash request's seed is `mote flash`'s default).
pub const REQUEST: (usize, i32, f32) = (4, 1, 3.0);

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
    /// Instructions of one guided 4-step sample (8 latents, two denoiser calls per step).
    pub sample_instructions: f64,
    /// Instructions of decoding it (8 glyphs).
    pub decode_instructions: f64,
    /// Instructions of one denoiser call.
    pub forward_instructions: f64,
}

impl M4Figures {
    /// Reads `m4.json` of `dir`, if any.
    pub fn read(dir: &Path) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(dir.join("m4.json")).ok()?).ok()
    }

    /// Whether the figures were measured on the current `model.int8.mote` of `dir`.
    pub fn current(&self, dir: &Path) -> bool {
        std::fs::read(dir.join("model.int8.mote")).is_ok_and(|b| fnv(&b) == self.model_hash)
    }
}

/// FNV-1a 64 of `bytes`, in hex.
fn fnv(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

/// Runs the device file on the QEMU Cortex-M4 when the firmware toolchain is installed and the
/// committed figures are stale, writing `m4.json` and `device.png`; prints why not otherwise.
pub fn refresh(dir: &Path) -> Result<Option<M4Figures>> {
    let model = dir.join("model.int8.mote");
    let old = M4Figures::read(dir);
    if !model.exists() {
        return Ok(None);
    }
    if let Some(old) = old.filter(|o| o.current(dir)) {
        return Ok(Some(old));
    }
    if let Some(missing) = firmware::missing_toolchain(true) {
        println!("note: m4.json not refreshed, the firmware toolchain is missing ({missing})");
        return Ok(M4Figures::read(dir));
    }
    let (steps, class, scale) = REQUEST;
    let mut req = flash::Request::new(BOARD, &model);
    (req.steps, req.class, req.guidance) = (Some(steps), Some(class), Some(scale));
    println!("running {} on QEMU {BOARD} ...", model.display());
    let o = flash::flash(&req).with_context(|| format!("flashing {}", model.display()))?;
    let dev = o.device.as_ref().ok_or_else(|| anyhow!("no device run on {BOARD}"))?;
    let decoded = dev.outputs.last().ok_or_else(|| anyhow!("the device returned no outputs"))?;
    grid_png(&dir.join("device.png"), &[decoded], 8, 3)?;
    let f = M4Figures {
        command: format!(
            "mote flash --board {BOARD} models/ldm/model.int8.mote --steps {steps} --class {class} --guidance {scale}"
        ),
        model_hash: fnv(&std::fs::read(&model)?),
        bit_exact: o.outputs_bit_exact() == Some(true),
        flash: o.image.flash(),
        model: o.image.model,
        ram_static: o.image.ram(),
        arena: o.image.arena,
        state: o.image.state,
        stack: dev.stack_bytes,
        sample_instructions: o.sample_instructions().unwrap_or(f64::NAN),
        decode_instructions: o.decode_instructions().unwrap_or(f64::NAN),
        forward_instructions: o.forward_instructions().unwrap_or(f64::NAN),
    };
    std::fs::write(dir.join("m4.json"), serde_json::to_string_pretty(&f)?)?;
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
}
