//! Running a firmware image in QEMU with a timeout and reading what it logs: `defmt` frames
//! over semihosting, decoded with the table in the image's ELF into `MOTE ...` lines.

use super::board::{self, Board};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the firmware reported.
#[derive(Debug, Clone, Default)]
pub struct DeviceRun {
    /// Outputs of `forward`, as f32 values (bit patterns preserved).
    pub outputs: Vec<Vec<f32>>,
    /// SysTick ticks of one `forward` run, if it ran.
    pub forward_ticks: Option<u64>,
    /// SysTick ticks of one `encode` run (encoder–decoder models, before generation).
    pub encode_ticks: Option<u64>,
    /// SysTick ticks of one `inverse` run (flows: one sample from seeded latents).
    pub inverse_ticks: Option<u64>,
    /// SysTick ticks of one diffusion sample (every step).
    pub sample_ticks: Option<u64>,
    /// SysTick ticks of decoding that sample (latent diffusion).
    pub decode_ticks: Option<u64>,
    /// SysTick ticks of `Model::parse` (validation, CRC) on the device.
    pub parse_ticks: Option<u64>,
    /// Ticks of an empty measurement (already small; subtract it from each figure).
    pub overhead_ticks: u64,
    /// Number of prompt tokens fed before generation.
    pub prompt_len: usize,
    /// Generated tokens with the ticks since the previous one (the first: since the start,
    /// prompt included).
    pub tokens: Vec<(i32, u64)>,
    /// Stack high-water mark in bytes.
    pub stack_bytes: u64,
    /// Every line the firmware logged (its defmt frames, decoded).
    pub log: String,
}

/// The QEMU command line for `board`.
pub fn command(board: &Board, elf: &Path, icount_shift: u32) -> Result<Command> {
    let mut c = Command::new("qemu-system-arm");
    c.args(["-machine", board::text(board, "qemu_machine")?, "-cpu", board::text(board, "qemu_cpu")?])
        .args(["-nographic", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native,chardev=sh0", "-chardev", "stdio,id=sh0,mux=off"])
        .args(["-icount", &format!("shift={icount_shift}")])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(c)
}

/// Runs `elf` on the QEMU `board`; a run longer than `timeout` is killed and reported.
pub fn run(board: &Board, elf: &Path, icount_shift: u32, timeout: Duration) -> Result<DeviceRun> {
    let mut child = command(board, elf, icount_shift)?.spawn().context("cannot start qemu-system-arm")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let partial = decode_lossy(elf, &out_thread.join().unwrap_or_default());
            let last: Vec<&str> = partial.lines().rev().take(5).collect();
            bail!(
                "QEMU timed out after {:.0} s on board '{}' (the firmware hung or the model is too slow; raise --timeout). Last lines: {:?}",
                timeout.as_secs_f64(),
                board.name,
                last
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let raw = out_thread.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).to_string();
    let out = decode(elf, &raw)
        .with_context(|| format!("cannot decode the firmware's defmt log on board '{}'", board.name))?;
    let run = parse(&out)?;
    if let Some(e) = out.lines().find_map(|l| l.strip_prefix("MOTE error ")) {
        bail!("the firmware reported an error on board '{}': {e}", board.name);
    }
    if !out.lines().any(|l| l == "MOTE end 0") || !status.success() {
        bail!("the firmware did not finish cleanly on board '{}' ({status}):\n{}{}", board.name, out, err);
    }
    Ok(run)
}

/// The defmt frames in `bytes`, decoded with the table of `elf`, one message per line.
pub fn decode(elf: &Path, bytes: &[u8]) -> Result<String> {
    let image = std::fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let table = defmt_decoder::Table::parse(&image)
        .with_context(|| format!("{}: bad defmt table", elf.display()))?
        .ok_or_else(|| anyhow!("{} has no defmt table (not built with defmt?)", elf.display()))?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut text = String::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                text.push_str(&frame.display_message().to_string());
                text.push('\n');
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                bail!("malformed defmt frame after {} decoded lines:\n{text}", text.lines().count())
            }
        }
    }
    Ok(text)
}

/// [`decode`] for diagnostics: what could be decoded, else the reason.
fn decode_lossy(elf: &Path, bytes: &[u8]) -> String {
    decode(elf, bytes).unwrap_or_else(|e| format!("{e:#}"))
}

/// Parses the firmware's `MOTE ...` lines (decoded defmt frames).
pub fn parse(text: &str) -> Result<DeviceRun> {
    let mut r = DeviceRun { log: text.to_string(), ..Default::default() };
    // Declared length of each output; its values arrive in chunks.
    let mut lengths: Vec<usize> = Vec::new();
    let num = |s: Option<&str>| -> Result<u64> {
        s.ok_or_else(|| anyhow!("short line"))?.parse().map_err(|e| anyhow!("{e}"))
    };
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("MOTE") {
            continue;
        }
        match (w.next(), w.next()) {
            (Some("ticks"), Some("overhead")) => r.overhead_ticks = num(w.next())?,
            (Some("ticks"), Some("forward")) => r.forward_ticks = Some(num(w.next())?),
            (Some("ticks"), Some("parse")) => r.parse_ticks = Some(num(w.next())?),
            (Some("ticks"), Some("encode")) => r.encode_ticks = Some(num(w.next())?),
            (Some("ticks"), Some("inverse")) => r.inverse_ticks = Some(num(w.next())?),
            (Some("ticks"), Some("sample")) => r.sample_ticks = Some(num(w.next())?),
            (Some("ticks"), Some("decode")) => r.decode_ticks = Some(num(w.next())?),
            (Some("prompt"), n) => r.prompt_len = num(n)? as usize,
            (Some("token"), Some(t)) => r.tokens.push((t.parse()?, num(w.next())?)),
            (Some("stack"), n) => r.stack_bytes = num(n)?,
            (Some("out"), Some(k)) => {
                // `MOTE out K N OFF [B, ...]`: f32 bit patterns of values OFF.. of output K.
                let k: usize = k.parse()?;
                let n = num(w.next())? as usize;
                let off = num(w.next())? as usize;
                let list = line
                    .split_once('[')
                    .and_then(|(_, rest)| rest.strip_suffix(']'))
                    .ok_or_else(|| anyhow!("output line without a value list: {line}"))?;
                if r.outputs.len() <= k {
                    r.outputs.resize(k + 1, Vec::new());
                    lengths.resize(k + 1, 0);
                }
                lengths[k] = n;
                let v = &mut r.outputs[k];
                if v.len() != off {
                    bail!("output {k}: values at {off} follow {} values", v.len());
                }
                for b in list.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                    v.push(f32::from_bits(b.parse::<u32>().map_err(|e| anyhow!("output {k}: '{b}': {e}"))?));
                }
            }
            _ => {}
        }
    }
    for (k, (v, &n)) in r.outputs.iter().zip(&lengths).enumerate() {
        if v.len() != n {
            bail!("output {k}: the firmware logged {} of its {n} values", v.len());
        }
    }
    Ok(r)
}
