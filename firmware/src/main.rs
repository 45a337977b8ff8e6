//! mote firmware: runs the `.mote` model embedded at build time (see `build.rs`) from
//! flash, with a static arena and state sized from the model header and no heap.
//!
//! It logs one `defmt` frame per fact (see `out.rs`): over semihosting on QEMU boards
//! (feature `semihosting`), then exits with the run's status; over RTT on real boards
//! (feature `rtt`). `mote flash` decodes the frames with the ELF's defmt table into lines:
//! - `MOTE out K N OFF [B, ...]`: output `K` of `forward` (N values), the f32 bit patterns
//!   of values `OFF..` as u32, in chunks;
//! - `MOTE ticks forward T` / `MOTE ticks overhead T`: SysTick ticks of one inference and
//!   of an empty measurement (instructions = ticks x clock period / icount period);
//! - `MOTE ticks parse T`: ticks of `Model::parse` (validation and CRC of the whole file);
//! - `MOTE ticks inverse T` / `MOTE ticks sample T` / `MOTE ticks decode T`: ticks of a flow's
//!   `inverse` run / of one diffusion sample / of decoding it (latent diffusion), each logged
//!   as the next output after `forward`'s;
//! - `MOTE token ID T`: a generated token and the ticks since the previous one;
//! - `MOTE stack B`: stack high-water mark in bytes; `MOTE end 0` or `MOTE error ...`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m as _; // critical-section implementation for the defmt transports
use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::{entry, exception};
use mote::generate::{Generator, Sampler};
use mote::{DType, Model, Session};

/// 16-byte alignment for the embedded model and the arena.
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

mod model {
    use super::Aligned;
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

mod out;

#[no_mangle]
static mut MOTE_ARENA: Aligned<[u8; model::ARENA_BYTES]> = Aligned([0; model::ARENA_BYTES]);
#[no_mangle]
static mut MOTE_STATE: Aligned<[u8; model::STATE_BYTES]> = Aligned([0; model::STATE_BYTES]);

/// Generated tokens logged (with their tick stamps) before being printed.
const MAX_TOKENS: usize = if model::MAX_NEW < 512 { model::MAX_NEW } else { 512 };
const RELOAD: u32 = 0x00FF_FFFF;
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Ticks since SysTick started (24-bit counter extended by the wrap count). A wrap whose
/// exception is still pending counts too, so the value never goes backwards.
fn ticks() -> u64 {
    loop {
        let w = WRAPS.load(Ordering::Relaxed);
        let cur = SYST::get_current();
        let pending = cortex_m::peripheral::SCB::is_pendst_pending();
        if WRAPS.load(Ordering::Relaxed) == w {
            // Pending with a high count: the counter reloaded after a wrap not yet counted.
            let extra = u64::from(pending && cur > RELOAD / 2);
            return (w as u64 + extra) * (RELOAD as u64 + 1) + (RELOAD - cur) as u64;
        }
    }
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().unwrap();
    stack::paint();
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(RELOAD);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();
    // The counter reads 0 until its first reload; measure only after it.
    while SYST::get_current() == 0 {}
    let status = match run() {
        Ok(()) => 0,
        Err(e) => {
            defmt::println!("MOTE error {}", defmt::Display2Format(&e));
            1
        }
    };
    defmt::println!("MOTE stack {=usize}", stack::high_water());
    defmt::println!("MOTE end {=i32}", status);
    out::exit(status)
}

fn run() -> mote::Result<()> {
    // SAFETY: `main` runs once and nothing else (no interrupt) touches the arena or state,
    // so these are the only references to them.
    let (arena, state): (&mut [u8], &mut [u8]) =
        unsafe { (&mut (*core::ptr::addr_of_mut!(MOTE_ARENA)).0, &mut (*core::ptr::addr_of_mut!(MOTE_STATE)).0) };
    let bytes: &'static [u8] = &model::MOTE_MODEL.0;
    let t_parse = ticks();
    let model = Model::parse(bytes)?;
    let parse_ticks = ticks().saturating_sub(t_parse);
    defmt::println!("MOTE ticks parse {=u64}", parse_ticks);
    defmt::println!(
        "MOTE model board={=str} file={=usize} arena={=usize} state={=usize}",
        model::BOARD,
        bytes.len(),
        model.arena_bytes(),
        model.state_bytes()
    );
    let mut session = Session::new(&model, arena, state)?;
    let t0 = ticks();
    let t1 = ticks();
    defmt::println!("MOTE ticks overhead {=u64}", t1.saturating_sub(t0));

    if model::HAS_INPUT {
        let entry = model.entry_by_name("forward")?;
        let info = model.entry(entry)?;
        feed(&model, &mut session, entry)?;
        let start = ticks();
        session.run(entry)?;
        let end = ticks();
        defmt::println!("MOTE ticks forward {=u64}", end.saturating_sub(start));
        for k in 0..info.n_outputs as usize {
            let v = session.output(entry, k)?;
            let n = v.desc.shape.numel();
            out::floats(k, n, (0..n).map(|i| v.get(i).to_bits()));
        }
    }

    // Flows: a sample from the `inverse` entry on seeded standard-normal latents, logged as
    // the outputs after `forward`'s (the host draws the same latents with the same generator).
    if let Ok(inverse) = model.entry_by_name("inverse") {
        let first = if model::HAS_INPUT { model.entry(model.entry_by_name("forward")?)?.n_outputs as usize } else { 0 };
        let mut rng = mote::rng::Rng::new(model::SEED);
        let mut z = [0f32; MAX_INPUT];
        for k in 0..model.entry(inverse)?.n_inputs as usize {
            let n = model.tensor(model.entry_input(inverse, k)?)?.desc.shape.numel();
            let z = z.get_mut(..n).ok_or(mote::Error::SizeMismatch)?;
            z.iter_mut().for_each(|v| *v = rng.gaussian());
            session.set_input_f32(inverse, k, z)?;
        }
        let start = ticks();
        session.run(inverse)?;
        defmt::println!("MOTE ticks inverse {=u64}", ticks().saturating_sub(start));
        for k in 0..model.entry(inverse)?.n_outputs as usize {
            let v = session.output(inverse, k)?;
            let n = v.desc.shape.numel();
            out::floats(first + k, n, (0..n).map(|i| v.get(i).to_bits()));
        }
    }

    if model::DIFFUSION_STEPS > 0 {
        let forward = model.entry_by_name("forward").and_then(|e| model.entry(e)).map_or(0, |i| i.n_outputs);
        diffuse(&model, &mut session, if model::HAS_INPUT { forward as usize } else { 0 })?;
    }

    if !model::PROMPT.is_empty() {
        session.reset();
        // Encoder–decoder models: the source side runs once, then generation starts.
        if let (Ok(encode), true) = (model.entry_by_name("encode"), model::HAS_INPUT) {
            feed(&model, &mut session, encode)?;
            let start = ticks();
            session.run(encode)?;
            defmt::println!("MOTE ticks encode {=u64}", ticks().saturating_sub(start));
        }
        let mut sampler = if model::TEMPERATURE == 0.0 {
            Sampler::greedy()
        } else {
            Sampler::top_k(model::TEMPERATURE, model::TOP_K, model::SEED)?
        };
        let mut generator = Generator::new(&mut session)?;
        let mut log = [(0i32, 0u64); MAX_TOKENS];
        let mut n = 0;
        let start = ticks();
        generator.generate(model::PROMPT, model::MAX_NEW.min(MAX_TOKENS), &mut sampler, |t| {
            let now = ticks();
            match log.get_mut(n) {
                Some(slot) => {
                    *slot = (t, now);
                    n += 1;
                    true
                }
                None => false,
            }
        })?;
        let mut prev = start;
        defmt::println!("MOTE prompt {=usize}", model::PROMPT.len());
        for &(t, at) in log.iter().take(n) {
            defmt::println!("MOTE token {=i32} {=u64}", t, at.saturating_sub(prev));
            prev = at;
        }
    }
    Ok(())
}

/// Diffusion models: draws one sample (DDIM, η = 0, every step) from the build's seed, class
/// and guidance, and logs it as output `index` (the host draws the same sample); latent
/// diffusion models decode it with their `decode` entry (output `index + 1`).
fn diffuse(model: &Model<'_>, session: &mut Session<'_, '_>, index: usize) -> mote::Result<()> {
    use mote::diffusion::{sample, Condition, Method, Request};
    let condition = match (model::CLASS, model::GUIDANCE) {
        (None, _) => Condition::Unconditional,
        (Some(c), None) => Condition::Class(c),
        (Some(class), Some(scale)) => Condition::Guided { class, scale },
    };
    let request =
        Request { method: Method::Ddim { eta: 0.0 }, steps: model::DIFFUSION_STEPS, seed: model::SEED, condition };
    let entry = model.entry_by_name("denoise").or_else(|_| model.entry_by_name("forward"))?;
    let n = model.tensor(model.entry_input(entry, 0)?)?.desc.shape.numel();
    let mut x = [0f32; MAX_INPUT];
    let x = x.get_mut(..n).ok_or(mote::Error::SizeMismatch)?;
    let start = ticks();
    sample(session, &request, x)?;
    defmt::println!("MOTE ticks sample {=u64}", ticks().saturating_sub(start));
    out::floats(index, n, x.iter().map(|v| v.to_bits()));
    // Latent diffusion: the `decode` entry turns (the first rows of) the sample into data.
    if let Ok(decode) = model.entry_by_name("decode") {
        let k = model.tensor(model.entry_input(decode, 0)?)?.desc.shape.numel();
        session.set_input_f32(decode, 0, x.get(..k).ok_or(mote::Error::SizeMismatch)?)?;
        let start = ticks();
        session.run(decode)?;
        defmt::println!("MOTE ticks decode {=u64}", ticks().saturating_sub(start));
        let v = session.output(decode, 0)?;
        let m = v.desc.shape.numel();
        out::floats(index + 1, m, (0..m).map(|i| v.get(i).to_bits()));
    }
    Ok(())
}

/// Sets every input of `entry` from the embedded `forward` inputs, matched by tensor name
/// (the blob holds `forward`'s inputs in order, 4 bytes per element).
fn feed(model: &Model<'_>, session: &mut Session<'_, '_>, entry: mote::EntryId) -> mote::Result<()> {
    let forward = model.entry_by_name("forward")?;
    for k in 0..model.entry(entry)?.n_inputs as usize {
        let t = model.tensor(model.entry_input(entry, k)?)?;
        let name = model.tensor_name(model.entry_input(entry, k)?);
        let mut blob: &[u8] = &model::MOTE_INPUT.0;
        let mut found = false;
        for j in 0..model.entry(forward)?.n_inputs as usize {
            let id = model.entry_input(forward, j)?;
            let n = model.tensor(id)?.desc.shape.numel();
            let (bytes, rest) = blob.split_at_checked(4 * n).ok_or(mote::Error::SizeMismatch)?;
            blob = rest;
            if model.tensor_name(id) == name && n == t.desc.shape.numel() {
                set_input(session, entry, k, t.desc.dtype, bytes)?;
                found = true;
                break;
            }
        }
        if !found {
            return Err(mote::Error::NotFound);
        }
    }
    Ok(())
}

fn set_input(
    session: &mut Session<'_, '_>,
    entry: mote::EntryId,
    k: usize,
    dtype: DType,
    raw: &[u8],
) -> mote::Result<()> {
    let n = raw.len() / 4;
    if n > MAX_INPUT {
        return Err(mote::Error::SizeMismatch);
    }
    if dtype == DType::I32 {
        set_input_i32(session, entry, k, raw)
    } else {
        set_input_f32(session, entry, k, raw)
    }
}

/// The most elements one input has (converted through a stack buffer of this size).
const MAX_INPUT: usize = model::MAX_INPUT;

fn word(raw: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]])
}

#[inline(never)]
fn set_input_i32(session: &mut Session<'_, '_>, entry: mote::EntryId, k: usize, raw: &[u8]) -> mote::Result<()> {
    let n = raw.len() / 4;
    let mut buf = [0i32; MAX_INPUT];
    for (i, b) in buf[..n].iter_mut().enumerate() {
        *b = word(raw, i) as i32;
    }
    session.set_input_i32(entry, k, &buf[..n])
}

#[inline(never)]
fn set_input_f32(session: &mut Session<'_, '_>, entry: mote::EntryId, k: usize, raw: &[u8]) -> mote::Result<()> {
    let n = raw.len() / 4;
    let mut buf = [0f32; MAX_INPUT];
    for (i, b) in buf[..n].iter_mut().enumerate() {
        *b = f32::from_bits(word(raw, i));
    }
    session.set_input_f32(entry, k, &buf[..n])
}

mod stack {
    //! Stack high-water mark: paint the free stack with a pattern, later find the lowest
    //! word that changed.
    const PAINT: u32 = 0xC0FF_EE55;
    extern "C" {
        static mut __sheap: u32;
        static mut _stack_start: u32;
    }

    fn bottom() -> *mut u32 {
        core::ptr::addr_of_mut!(__sheap)
    }

    fn top() -> usize {
        core::ptr::addr_of_mut!(_stack_start) as usize
    }

    /// Paints from the end of `.bss` up to 256 bytes below the current stack pointer.
    pub fn paint() {
        let sp = cortex_m::register::msp::read() as usize - 256;
        let mut p = bottom();
        while (p as usize) < sp {
            // SAFETY: [__sheap, sp - 256) is free RAM between .bss/.uninit and the stack.
            unsafe {
                p.write_volatile(PAINT);
                p = p.add(1);
            }
        }
    }

    /// Bytes of stack ever used since [`paint`].
    pub fn high_water() -> usize {
        let mut p = bottom();
        // SAFETY: reads stay within [__sheap, _stack_start), RAM owned by this program.
        unsafe {
            while (p as usize) < top() && p.read_volatile() == PAINT {
                p = p.add(1);
            }
        }
        top() - p as usize
    }
}
