//! Output of facts through `defmt`: over semihosting on QEMU boards (feature `semihosting`,
//! decoded by `mote flash` with the ELF's defmt table), over RTT on real boards (feature
//! `rtt`, read by a probe), nowhere otherwise.
//!
//! Every fact is one `defmt::println!` frame whose decoded text is a `MOTE ...` line.

#[cfg(feature = "semihosting")]
use defmt_semihosting as _;

#[cfg(all(feature = "rtt", not(feature = "semihosting")))]
use defmt_rtt as _;

/// No transport: frames go nowhere (a firmware built with neither feature still links).
#[cfg(not(any(feature = "semihosting", feature = "rtt")))]
#[defmt::global_logger]
struct Nowhere;

#[cfg(not(any(feature = "semihosting", feature = "rtt")))]
// SAFETY: nothing is written, so nothing needs exclusive access.
unsafe impl defmt::Logger for Nowhere {
    fn acquire() {}
    unsafe fn flush() {}
    unsafe fn release() {}
    unsafe fn write(_bytes: &[u8]) {}
}

/// Values of one output per frame (a stack buffer of this many words).
const CHUNK: usize = 64;

/// Logs output `k` of `n` values as frames `MOTE out K N OFFSET [bits, ...]`: the f32 bit
/// patterns (decimal u32) of values `OFFSET..OFFSET + len`, in order.
pub fn floats(k: usize, n: usize, values: impl Iterator<Item = u32>) {
    let mut buf = [0u32; CHUNK];
    let mut len = 0;
    let mut offset = 0;
    for v in values {
        buf[len] = v;
        len += 1;
        if len == CHUNK {
            defmt::println!("MOTE out {=usize} {=usize} {=usize} {=[?]}", k, n, offset, &buf[..len]);
            offset += len;
            len = 0;
        }
    }
    if len > 0 || n == 0 {
        defmt::println!("MOTE out {=usize} {=usize} {=usize} {=[?]}", k, n, offset, &buf[..len]);
    }
}

/// Ends the QEMU run with `status`.
#[cfg(feature = "semihosting")]
pub fn exit(status: i32) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if status == 0 { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

/// Parks the core (real boards: the probe reads the RTT buffer).
#[cfg(not(feature = "semihosting"))]
pub fn exit(_status: i32) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::println!("MOTE error panic");
    exit(101)
}
