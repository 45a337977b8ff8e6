//! Flash and RAM use read from the linked firmware ELF (32-bit little-endian ARM):
//! section sizes and the sizes of the model, arena and state symbols.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Sizes from the linked image, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSizes {
    /// `.vector_table`.
    pub vector_table: u64,
    /// `.text`: code.
    pub text: u64,
    /// `.rodata`: the model (weights and tables) plus constants.
    pub rodata: u64,
    /// `.data` (in flash and in RAM).
    pub data: u64,
    /// `.bss` (arena and state included).
    pub bss: u64,
    /// `.uninit`.
    pub uninit: u64,
    /// The embedded `.mote` file (`MOTE_MODEL`).
    pub model: u64,
    /// The static arena (`MOTE_ARENA`).
    pub arena: u64,
    /// The static state (`MOTE_STATE`).
    pub state: u64,
    /// `.text` of functions from the runtime and its math/format crates (`mote`, `libm`,
    /// `half`, `crc32fast`).
    pub text_runtime: u64,
    /// `.text` of the firmware harness, board support and logging (`mote_firmware`,
    /// `cortex_m*`, `*semihosting`, `defmt*`).
    pub text_firmware: u64,
}

impl ImageSizes {
    /// Bytes of flash: vector table, code, read-only data and `.data`'s load image.
    pub fn flash(&self) -> u64 {
        self.vector_table + self.text + self.rodata + self.data
    }

    /// Bytes of static RAM (without the stack).
    pub fn ram(&self) -> u64 {
        self.data + self.bss + self.uninit
    }
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(b.get(o..o + 2).context("truncated ELF")?.try_into()?))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(b.get(o..o + 4).context("truncated ELF")?.try_into()?))
}

fn cstr(b: &[u8], o: usize) -> &str {
    let s = b.get(o..).unwrap_or(&[]);
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).unwrap_or("")
}

struct Section {
    name: String,
    kind: u32,
    offset: usize,
    size: usize,
    link: usize,
}

/// Reads the sizes of a linked firmware image.
pub fn sizes(path: &Path) -> Result<ImageSizes> {
    let b = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&1) || b.get(5) != Some(&1) {
        bail!("{} is not a 32-bit little-endian ELF", path.display());
    }
    let shoff = u32_at(&b, 0x20)? as usize;
    let shentsize = u16_at(&b, 0x2E)? as usize;
    let shnum = u16_at(&b, 0x30)? as usize;
    let shstrndx = u16_at(&b, 0x32)? as usize;
    let mut raw = Vec::new();
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        raw.push((u32_at(&b, h)?, u32_at(&b, h + 4)?, u32_at(&b, h + 16)?, u32_at(&b, h + 20)?, u32_at(&b, h + 24)?));
    }
    let names_off = raw.get(shstrndx).context("bad section name index")?.2 as usize;
    let sections: Vec<Section> = raw
        .iter()
        .map(|&(name, kind, offset, size, link)| Section {
            name: cstr(&b, names_off + name as usize).to_string(),
            kind,
            offset: offset as usize,
            size: size as usize,
            link: link as usize,
        })
        .collect();
    let size_of = |n: &str| sections.iter().filter(|s| s.name == n).map(|s| s.size as u64).sum::<u64>();
    let mut out = ImageSizes {
        vector_table: size_of(".vector_table"),
        text: size_of(".text"),
        rodata: size_of(".rodata"),
        data: size_of(".data"),
        bss: size_of(".bss"),
        uninit: size_of(".uninit"),
        ..Default::default()
    };
    const SYMTAB: u32 = 2;
    let text_index = sections.iter().position(|s| s.name == ".text");
    if let Some(symtab) = sections.iter().find(|s| s.kind == SYMTAB) {
        let strtab = sections.get(symtab.link).context("bad symbol string table")?;
        for k in 0..symtab.size / 16 {
            let e = symtab.offset + 16 * k;
            let name = cstr(&b, strtab.offset + u32_at(&b, e)? as usize);
            let size = u32_at(&b, e + 8)? as u64;
            let is_func = b.get(e + 12).is_some_and(|i| i & 0xF == 2);
            if is_func && Some(u16_at(&b, e + 14)? as usize) == text_index {
                match crate_of(name) {
                    Some("mote" | "libm" | "half" | "crc32fast") => out.text_runtime += size,
                    Some(
                        "mote_firmware"
                        | "cortex_m"
                        | "cortex_m_rt"
                        | "cortex_m_semihosting"
                        | "semihosting"
                        | "defmt"
                        | "defmt_semihosting"
                        | "defmt_rtt",
                    ) => out.text_firmware += size,
                    _ => {}
                }
            }
            match name {
                "MOTE_MODEL" => out.model = size,
                "MOTE_ARENA" => out.arena = size,
                "MOTE_STATE" => out.state = size,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The first crate named in a v0- or legacy-mangled Rust symbol (`_RNv...Cs..._4mote...`,
/// `_ZN4mote...`), or `None` for other symbols.
pub fn crate_of(symbol: &str) -> Option<&str> {
    let rest = if let Some(r) = symbol.strip_prefix("_R") {
        // v0: the crate root is `C`, an optional `s<base62>_` disambiguator, then `<len><ident>`.
        let c = r.find('C')?;
        let mut t = &r[c + 1..];
        if let Some(d) = t.strip_prefix('s') {
            t = &d[d.find('_')? + 1..];
        }
        t
    } else {
        symbol.strip_prefix("_ZN")?
    };
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let len: usize = rest[..digits].parse().ok()?;
    rest.get(digits..digits + len)
}
