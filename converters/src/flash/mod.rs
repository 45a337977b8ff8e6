//! `mote flash`: check a model against a board's budgets, build the firmware with it, run
//! it (QEMU boards) and report outputs, flash/RAM use from the linked ELF and instruction
//! counts. Boards come from `firmware/boards.toml`.

pub mod board;
mod diffusion;
pub mod elf;
pub mod firmware;
pub mod qemu;

use crate::array::{Array, Data};
use crate::report::{self, Inspection};
use crate::{convert, host, tokenizer};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mote::generate::{Generator, Sampler};
use mote::{DType, EntryId, Model, Op};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use board::Board;
pub use elf::ImageSizes;
pub use qemu::DeviceRun;

/// Arguments of `mote flash`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Board name from firmware/boards.toml (e.g. mps2-an386, mps3-an547, nrf52840).
    #[arg(long, default_value = "mps2-an386")]
    pub board: String,
    /// The .mote model to embed.
    pub model: PathBuf,
    /// Input .npy files of `forward`, in entry-input order (default: deterministic inputs).
    #[arg(long = "input", short = 'i')]
    pub inputs: Vec<PathBuf>,
    /// Prompt text for on-device generation (models with decode_step and a tokenizer).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to generate on the device.
    #[arg(long, default_value_t = 16)]
    pub max_new: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens when sampling.
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
    /// PRNG seed (same seed, same tokens or samples on host and device).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Diffusion models: sampling steps (default: the first count a distilled model lists,
    /// else 4).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Diffusion models: the class to sample (class-conditional models).
    #[arg(long)]
    pub class: Option<i32>,
    /// Diffusion models: classifier-free guidance scale (needs --class).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Seconds before a QEMU run is killed and reported as a timeout.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// QEMU `-icount shift=N` (one instruction every 2^N ns of virtual time).
    #[arg(long, default_value_t = 5)]
    pub icount_shift: u32,
    /// Optimise the firmware for speed (opt-level 3: about 2x the code, ~8% fewer instructions)
    /// instead of size (opt-level "s", the default).
    #[arg(long)]
    pub speed: bool,
}

/// One `mote flash` job.
#[derive(Debug, Clone)]
pub struct Request {
    /// Board name.
    pub board: String,
    /// Model path.
    pub model: PathBuf,
    /// `forward` inputs (None: deterministic defaults).
    pub inputs: Option<Vec<Array>>,
    /// Prompt token ids (None: the first tokens of the forward input, for LMs).
    pub prompt: Option<Vec<i32>>,
    /// Tokens to generate (capped by the model's context).
    pub max_new: usize,
    /// Sampler temperature.
    pub temperature: f32,
    /// Sampler top-k.
    pub top_k: usize,
    /// Sampler seed.
    pub seed: u64,
    /// Diffusion sampling steps (None: the model's default).
    pub steps: Option<usize>,
    /// Diffusion class (None: unconditional).
    pub class: Option<i32>,
    /// Diffusion guidance scale (None: no guidance).
    pub guidance: Option<f32>,
    /// QEMU timeout.
    pub timeout: Duration,
    /// `-icount shift`.
    pub icount_shift: u32,
    /// Build for speed (opt-level 3) rather than size (opt-level "s").
    pub speed: bool,
}

impl Request {
    /// Defaults for `model` on `board`.
    pub fn new(board: &str, model: &Path) -> Self {
        Request {
            board: board.into(),
            model: model.into(),
            inputs: None,
            prompt: None,
            max_new: 16,
            temperature: 0.8,
            top_k: 8,
            seed: 1,
            steps: None,
            class: None,
            guidance: None,
            timeout: Duration::from_secs(120),
            icount_shift: 5,
            speed: false,
        }
    }
}

/// What `mote flash` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The board.
    pub board: Board,
    /// The model's report.
    pub inspection: Inspection,
    /// The linked ELF.
    pub elf: PathBuf,
    /// Sizes of the linked image.
    pub image: ImageSizes,
    /// `forward` inputs used.
    pub inputs: Vec<Array>,
    /// Host runtime outputs of `forward` on the same inputs, then (flows) of `inverse` on seeded
    /// standard-normal latents, then (diffusion models) the seeded sample and (latent diffusion)
    /// its decoding.
    pub host_outputs: Vec<Vec<f32>>,
    /// Prompt token ids and the host's generated tokens (empty when the model has no decode_step).
    pub prompt: Vec<i32>,
    /// Host generation.
    pub host_tokens: Vec<i32>,
    /// The device run (None for real boards).
    pub device: Option<DeviceRun>,
    /// Instructions per SysTick tick under the chosen `-icount` shift.
    pub instructions_per_tick: f64,
    /// Seconds spent building.
    pub build_seconds: f64,
}

impl Outcome {
    /// Whether every device output equals the host's bit for bit.
    pub fn outputs_bit_exact(&self) -> Option<bool> {
        let d = self.device.as_ref()?;
        Some(
            d.outputs.len() == self.host_outputs.len()
                && d.outputs
                    .iter()
                    .zip(&self.host_outputs)
                    .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())),
        )
    }

    /// Whether the device generated the host's tokens.
    pub fn tokens_match(&self) -> Option<bool> {
        let d = self.device.as_ref()?;
        Some(d.tokens.iter().map(|t| t.0).eq(self.host_tokens.iter().copied()))
    }

    /// Instructions of one `forward` run (overhead subtracted).
    pub fn forward_instructions(&self) -> Option<f64> {
        let d = self.device.as_ref()?;
        Some(d.forward_ticks?.saturating_sub(d.overhead_ticks) as f64 * self.instructions_per_tick)
    }

    /// Instructions of one `inverse` run (flows: one sample).
    pub fn inverse_instructions(&self) -> Option<f64> {
        let d = self.device.as_ref()?;
        Some(d.inverse_ticks?.saturating_sub(d.overhead_ticks) as f64 * self.instructions_per_tick)
    }

    /// Instructions of one diffusion sample (all its steps).
    pub fn sample_instructions(&self) -> Option<f64> {
        let d = self.device.as_ref()?;
        Some(d.sample_ticks?.saturating_sub(d.overhead_ticks) as f64 * self.instructions_per_tick)
    }

    /// Instructions of decoding a latent diffusion sample.
    pub fn decode_instructions(&self) -> Option<f64> {
        let d = self.device.as_ref()?;
        Some(d.decode_ticks?.saturating_sub(d.overhead_ticks) as f64 * self.instructions_per_tick)
    }

    /// Instructions of the `encode` run before generation (encoder–decoder models).
    pub fn encode_instructions(&self) -> Option<f64> {
        let d = self.device.as_ref()?;
        Some(d.encode_ticks?.saturating_sub(d.overhead_ticks) as f64 * self.instructions_per_tick)
    }

    /// Mean instructions per generated token after the first (one decode_step + sampling).
    pub fn token_instructions(&self) -> Option<f64> {
        let d = self.device.as_ref()?;
        let rest = d.tokens.get(1..)?;
        if rest.is_empty() {
            return None;
        }
        let total: u64 = rest.iter().map(|t| t.1.saturating_sub(d.overhead_ticks)).sum();
        Some(total as f64 / rest.len() as f64 * self.instructions_per_tick)
    }
}

/// The CLI entry point.
pub fn run_cli(a: FlashArgs) -> Result<()> {
    let mut req = Request::new(&a.board, &a.model);
    if !a.inputs.is_empty() {
        req.inputs = Some(a.inputs.iter().map(|p| Array::read_npy(p)).collect::<Result<_>>()?);
    }
    if let Some(text) = &a.prompt {
        let bytes = host::read_model(&a.model)?;
        let model = Model::parse(&bytes)?;
        req.prompt = Some(tokenizer::of_model(&model)?.encode(text)?);
    }
    req.max_new = a.max_new;
    req.temperature = a.temperature;
    req.top_k = a.top_k;
    req.seed = a.seed;
    req.steps = a.steps;
    req.class = a.class;
    req.guidance = a.guidance;
    req.timeout = Duration::from_secs(a.timeout.max(1));
    req.icount_shift = a.icount_shift;
    req.speed = a.speed;
    let o = flash_with(&req, &mut |s| println!("{s}"))?;
    if o.outputs_bit_exact() == Some(false) || o.tokens_match() == Some(false) {
        bail!("the device disagrees with the host runtime (see above)");
    }
    Ok(())
}

/// Runs a request, printing nothing.
pub fn flash(req: &Request) -> Result<Outcome> {
    flash_with(req, &mut |_| {})
}

/// Checks, builds, runs and measures; `say` receives the human-readable report line by line.
pub fn flash_with(req: &Request, say: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let board = board::find(&req.board)?;
    let bytes = host::read_model(&req.model)?;
    let model = Model::parse(&bytes)?;
    let inspection = report::inspect(&model)?;
    let is_qemu = board.is_qemu();
    say(&format!(
        "board {}: {} [{}]",
        board.name,
        board.get("description").unwrap_or(""),
        board::text(&board, "target")?
    ));

    // Budgets before anything is built.
    let ram_budget = board::number(&board, "ram_budget")? as usize;
    let flash_budget = board::number(&board, "flash_budget")? as usize;
    if let Err(e) = convert::check_budgets(&inspection, Some(ram_budget), Some(flash_budget)) {
        let table = report::render(&inspection);
        bail!("refusing to flash {} onto {}: it does not fit.\n{table}\n{e}", req.model.display(), board.name);
    }
    say(&format!(
        "budgets: RAM arena {} + state {} of {}; flash model {} of {}: fits",
        report::bytes(inspection.arena_bytes),
        report::bytes(inspection.state_bytes),
        report::bytes(ram_budget),
        report::bytes(inspection.file_bytes),
        report::bytes(flash_budget)
    ));

    // Inputs and generation settings, and what the host runtime says for them.
    let forward = model.entry_by_name("forward").map_err(|_| anyhow!("the model has no 'forward' entry"))?;
    let inputs = match &req.inputs {
        Some(i) => i.clone(),
        None => default_inputs(&model, forward)?,
    };
    let mut host_outputs: Vec<Vec<f32>> = host::run(&bytes, "forward", &inputs)?.iter().map(|a| a.to_f32()).collect();
    host_outputs.extend(host_sample(&model, &bytes, req.seed)?);
    let sampling = diffusion::plan(&model, req)?;
    if let Some(r) = &sampling {
        host_outputs.extend(diffusion::host_sample(&model, r)?);
    }
    let blob = input_blob(&model, forward, &inputs)?;
    let (prompt, max_new) = generation_plan(&model, req, &inputs)?;
    let host_tokens =
        if prompt.is_empty() { Vec::new() } else { host_generate(&model, &inputs, &prompt, max_new, req)? };
    if let Some(missing) = firmware::missing_toolchain(is_qemu) {
        bail!("cannot build firmware: {missing}");
    }

    say(&format!(
        "building firmware for {} with {} (optimised for {}) ...",
        board.name,
        req.model.display(),
        if req.speed { "speed, opt-level 3" } else { "size, opt-level s" }
    ));
    let payload = firmware::Payload {
        input: Some(blob),
        prompt: prompt.clone(),
        max_new,
        seed: req.seed,
        temperature: req.temperature,
        top_k: req.top_k,
        speed: req.speed,
        diffusion: sampling,
    };
    let t = Instant::now();
    let elf = firmware::build(&board, &req.model, &payload)?;
    let build_seconds = t.elapsed().as_secs_f64();
    let image = elf::sizes(&elf)?;
    say(&format!("built {} in {build_seconds:.1} s", elf.display()));
    say_image(&image, say);

    let sysclk = board::number(&board, "sysclk_hz")? as f64;
    let instructions_per_tick = 1e9 / sysclk / (1u64 << req.icount_shift) as f64;
    let mut outcome = Outcome {
        board: board.clone(),
        inspection,
        elf: elf.clone(),
        image,
        inputs,
        host_outputs,
        prompt,
        host_tokens,
        device: None,
        instructions_per_tick,
        build_seconds,
    };
    if !is_qemu {
        say(&format!(
            "{} is a real board ({}): no probe runner is set up here, so the image was built and its budgets reported only; flash it with `probe-rs run --chip {} {}`.",
            board.name,
            board.get("probe_chip").unwrap_or("?"),
            board.get("probe_chip").unwrap_or("CHIP"),
            elf.display()
        ));
        return Ok(outcome);
    }
    say(&format!("running on QEMU {} (-icount shift={}) ...", board::text(&board, "qemu_machine")?, req.icount_shift));
    let run = qemu::run(&board, &elf, req.icount_shift, req.timeout)?;
    say(&format!(
        "RAM total {} = static {} + stack high-water {}",
        report::bytes((outcome.image.ram() + run.stack_bytes) as usize),
        report::bytes(outcome.image.ram() as usize),
        report::bytes(run.stack_bytes as usize)
    ));
    outcome.device = Some(run);
    say_results(&model, &outcome, say);
    Ok(outcome)
}

fn say_image(i: &ImageSizes, say: &mut dyn FnMut(&str)) {
    let b = |n: u64| report::bytes(n as usize);
    say(&format!(
        "flash {} = .vector_table {} + .text {} (code) + .rodata {} (model {}, other {}) + .data {}",
        b(i.flash()),
        b(i.vector_table),
        b(i.text),
        b(i.rodata),
        b(i.model),
        b(i.rodata.saturating_sub(i.model)),
        b(i.data)
    ));
    say(&format!(
        "      .text {} = runtime {} (mote, libm, half, crc32fast) + firmware/board {} + core/compiler-builtins {}",
        b(i.text),
        b(i.text_runtime),
        b(i.text_firmware),
        b(i.text.saturating_sub(i.text_runtime + i.text_firmware))
    ));
    say(&format!(
        "RAM   {} static = .data {} + .bss {} (arena {}, state {}, other {}) + .uninit {}",
        b(i.ram()),
        b(i.data),
        b(i.bss),
        b(i.arena),
        b(i.state),
        b(i.bss.saturating_sub(i.arena + i.state)),
        b(i.uninit)
    ));
}

fn say_results(model: &Model<'_>, o: &Outcome, say: &mut dyn FnMut(&str)) {
    let Some(d) = &o.device else { return };
    let n_forward = model.entry_by_name("forward").and_then(|e| model.entry(e)).map_or(0, |i| i.n_outputs as usize);
    for (k, v) in d.outputs.iter().enumerate() {
        let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.5}")).collect();
        let label = match k.checked_sub(n_forward) {
            None => format!("output {k}"),
            Some(j) if model.entry_by_name("inverse").is_ok() => format!("inverse output {j}"),
            Some(0) => "diffusion sample".to_string(),
            Some(_) => "decoded sample".to_string(),
        };
        say(&format!("{label} ({} values): [{}{}]", v.len(), head.join(", "), if v.len() > 8 { ", ..." } else { "" }));
    }
    match o.outputs_bit_exact() {
        Some(true) => say("outputs: bit-exact with the host runtime"),
        _ => {
            let worst = d
                .outputs
                .iter()
                .flatten()
                .zip(o.host_outputs.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            say(&format!("outputs: DIFFER from the host runtime (max abs diff {worst:e})"));
        }
    }
    if let Some(t) = d.parse_ticks {
        say(&format!(
            "instructions to parse and validate the model (CRC included): {:.0}",
            t.saturating_sub(d.overhead_ticks) as f64 * o.instructions_per_tick
        ));
    }
    if let Some(n) = o.forward_instructions() {
        say(&format!(
            "instructions per forward inference: {:.0} ({} SysTick ticks x {:.3})",
            n,
            d.forward_ticks.unwrap_or(0),
            o.instructions_per_tick
        ));
    }
    if let Some(n) = o.inverse_instructions() {
        say(&format!("instructions per inverse run (a sample from seeded latents): {n:.0}"));
    }
    if let Some(n) = o.sample_instructions() {
        say(&format!("instructions per diffusion sample (all steps): {n:.0}"));
    }
    if let Some(n) = o.decode_instructions() {
        say(&format!("instructions to decode the sample (latent diffusion): {n:.0}"));
    }
    if !d.tokens.is_empty() {
        let ids: Vec<i32> = d.tokens.iter().map(|t| t.0).collect();
        let text = tokenizer::of_model(model).and_then(|t| t.decode(&ids)).unwrap_or_default();
        let prompt = tokenizer::of_model(model).and_then(|t| t.decode(&o.prompt)).unwrap_or_default();
        say(&format!("generated on the device: {prompt:?} -> {text:?} {ids:?}"));
        say(&format!(
            "generation: {}",
            if o.tokens_match() == Some(true) {
                "same tokens as the host runtime"
            } else {
                "DIFFERS from the host runtime"
            }
        ));
        if let Some(n) = o.encode_instructions() {
            say(&format!("instructions to encode the source (once): {n:.0}"));
        }
        if let Some(n) = o.token_instructions() {
            say(&format!("instructions per generated token: {n:.0} (mean over {} decode steps)", d.tokens.len() - 1));
        }
    }
}

/// Deterministic default inputs: token ids within their embedding tables, floats ~ N(0, 1).
pub fn default_inputs(model: &Model<'_>, entry: EntryId) -> Result<Vec<Array>> {
    let mut rng = mote::rng::Rng::new(7);
    let n = model.entry(entry)?.n_inputs as usize;
    (0..n)
        .map(|k| {
            let id = model.entry_input(entry, k)?;
            let t = model.tensor(id)?;
            let shape: Vec<usize> = t.desc.shape.dims().iter().map(|&d| d as usize).collect();
            let len = t.desc.shape.numel();
            Ok(if t.desc.dtype == DType::I32 {
                let hi = index_bound(model, entry, id).unwrap_or(2).max(1) as u32;
                Array::i64(shape, (0..len).map(|_| (rng.next_u32() % hi) as i64).collect())
            } else {
                Array::f32(shape, (0..len).map(|_| rng.gaussian()).collect())
            })
        })
        .collect()
}

/// Rows of the table that integer tensor `id` indexes (a Gather's data input).
fn index_bound(model: &Model<'_>, entry: EntryId, id: mote::TensorId) -> Option<usize> {
    let info = model.entry(entry).ok()?;
    (info.first_op..info.first_op + info.n_ops).find_map(|i| {
        let op = model.op(i as usize).ok()?;
        match op.op {
            Op::Gather { axis } if model.op_input(&op, 1).ok()? == id => {
                let table = model.tensor(model.op_input(&op, 0).ok()?).ok()?;
                table.desc.shape.dims().get(axis as usize).map(|&d| d as usize)
            }
            _ => None,
        }
    })
}

/// The `forward` inputs as the firmware's blob: 4 bytes per element (i32 or f32), LE.
fn input_blob(model: &Model<'_>, entry: EntryId, inputs: &[Array]) -> Result<Vec<u8>> {
    let mut blob = Vec::new();
    for (k, a) in inputs.iter().enumerate() {
        let t = model.tensor(model.entry_input(entry, k)?)?;
        match (&a.data, t.desc.dtype) {
            (Data::I64(v), DType::I32) => {
                for &x in v {
                    let x = i32::try_from(x).map_err(|_| anyhow!("input {k}: {x} does not fit in i32"))?;
                    blob.extend_from_slice(&x.to_le_bytes());
                }
            }
            (_, DType::I32) => bail!("input {k} needs integers, got floats"),
            _ => a.to_f32().iter().for_each(|x| blob.extend_from_slice(&x.to_le_bytes())),
        }
    }
    Ok(blob)
}

/// Prompt and token count for on-device generation (none without a decode_step entry). The
/// default prompt is the first 4 input tokens, or `bos` (`mote.special_tokens`) for
/// encoder–decoder models, whose source is the `forward` input.
fn generation_plan(model: &Model<'_>, req: &Request, inputs: &[Array]) -> Result<(Vec<i32>, usize)> {
    if model.entry_by_name("decode_step").is_err() {
        return Ok((Vec::new(), 0));
    }
    let bos = model
        .metadata("mote.special_tokens")
        .and_then(|s| s.split(',').find_map(|kv| kv.strip_prefix("bos=")).and_then(|v| v.parse::<i32>().ok()));
    let prompt = match (&req.prompt, model.entry_by_name("encode").is_ok()) {
        (Some(p), _) => p.clone(),
        (None, true) => vec![bos.ok_or_else(|| anyhow!("the model names no bos token: pass --prompt"))?],
        (None, false) => match inputs.first().map(|a| &a.data) {
            Some(Data::I64(v)) => v.iter().take(4).map(|&x| x as i32).collect(),
            _ => return Ok((Vec::new(), 0)),
        },
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let bounds = model.metadata("mote.dims").and_then(|d| convert::parse_bounds(d).ok()).unwrap_or_default();
    let decoded = model.metadata("mote.decode").and_then(|d| bounds.get(d));
    let capacity = decoded.or(bounds.values().next()).copied().unwrap_or(usize::MAX);
    let room = capacity.saturating_sub(prompt.len());
    if room == 0 {
        bail!("the prompt ({} tokens) fills the model's context of {capacity}", prompt.len());
    }
    Ok((prompt, req.max_new.min(room)))
}

fn sampler(req: &Request) -> Result<Sampler> {
    if req.temperature == 0.0 {
        Ok(Sampler::greedy())
    } else {
        Sampler::top_k(req.temperature, req.top_k, req.seed)
            .map_err(|_| anyhow!("--temperature must be >= 0 and --top-k in 1..={}", mote::generate::MAX_TOP_K))
    }
}

/// Outputs of the `inverse` entry (flows) on seeded standard-normal latents, drawn as the
/// firmware draws them: input after input from one [`mote::rng::Rng`]. None without `inverse`.
fn host_sample(model: &Model<'_>, bytes: &[u8], seed: u64) -> Result<Vec<Vec<f32>>> {
    let Ok(inverse) = model.entry_by_name("inverse") else { return Ok(Vec::new()) };
    let mut rng = mote::rng::Rng::new(seed);
    let mut latents = Vec::new();
    for k in 0..model.entry(inverse)?.n_inputs as usize {
        let shape: Vec<usize> =
            model.tensor(model.entry_input(inverse, k)?)?.desc.shape.dims().iter().map(|&d| d as usize).collect();
        let n = shape.iter().product();
        latents.push(Array::f32(shape, (0..n).map(|_| rng.gaussian()).collect()));
    }
    Ok(host::run(bytes, "inverse", &latents)?.iter().map(|a| a.to_f32()).collect())
}

/// Generates as the firmware does: `encode` on the `forward` inputs first when the model has
/// one, then the prompt and `max_new` tokens through `decode_step`.
fn host_generate(
    model: &Model<'_>,
    inputs: &[Array],
    prompt: &[i32],
    max_new: usize,
    req: &Request,
) -> Result<Vec<i32>> {
    let mut mem = host::Memory::for_model(model);
    let mut session = mote::Session::new(model, &mut mem.arena, &mut mem.state)?;
    if let Ok(encode) = model.entry_by_name("encode") {
        let forward = model.entry_by_name("forward")?;
        host::set_inputs(&mut session, encode, &host::inputs_by_name(model, forward, encode, inputs)?)?;
        session.run(encode)?;
    }
    let mut generator = Generator::new(&mut session).context("decode_step")?;
    let mut s = sampler(req)?;
    let mut out = Vec::new();
    generator.generate(prompt, max_new, &mut s, |t| {
        out.push(t);
        true
    })?;
    Ok(out)
}
