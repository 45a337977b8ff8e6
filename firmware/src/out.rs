//! Output of facts: semihosting on QEMU boards, nothing on real boards without a probe.

#[cfg(feature = "semihosting")]
mod imp {
    use core::fmt::Write;
    use cortex_m_semihosting::{debug, hio};

    /// Writes one line.
    pub fn line(args: core::fmt::Arguments<'_>) {
        if let Ok(mut h) = hio::hstdout() {
            let mut buf = Buf::new();
            let _ = buf.write_fmt(args);
            let _ = buf.write_str("\n");
            let _ = h.write_all(buf.as_bytes());
        }
    }

    /// Writes `MOTE out K N` followed by the hex of every value, in chunks.
    pub fn floats(k: usize, n: usize, values: impl Iterator<Item = u32>) {
        let Ok(mut h) = hio::hstdout() else { return };
        let mut buf = Buf::new();
        let _ = write!(buf, "MOTE out {k} {n} ");
        for v in values {
            if buf.len + 9 > buf.data.len() {
                let _ = h.write_all(buf.as_bytes());
                buf.len = 0;
            }
            let _ = write!(buf, "{v:08x}");
        }
        let _ = buf.write_str("\n");
        let _ = h.write_all(buf.as_bytes());
    }

    /// Ends the QEMU run with `status`.
    pub fn exit(status: i32) -> ! {
        debug::exit(if status == 0 { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
        loop {
            cortex_m::asm::wfi();
        }
    }

    struct Buf {
        data: [u8; 512],
        len: usize,
    }

    impl Buf {
        fn new() -> Self {
            Buf { data: [0; 512], len: 0 }
        }
        fn as_bytes(&self) -> &[u8] {
            &self.data[..self.len]
        }
    }

    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let b = s.as_bytes();
            let room = self.data.len() - self.len;
            let n = b.len().min(room);
            self.data[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            Ok(())
        }
    }
}

#[cfg(not(feature = "semihosting"))]
mod imp {
    /// No output channel without a probe.
    pub fn line(_args: core::fmt::Arguments<'_>) {}
    /// No output channel without a probe.
    pub fn floats(_k: usize, _n: usize, _values: impl Iterator<Item = u32>) {}
    /// Parks the core.
    pub fn exit(_status: i32) -> ! {
        loop {
            cortex_m::asm::wfi();
        }
    }
}

pub use imp::{exit, floats, line};

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    line(format_args!("MOTE error panic"));
    exit(101)
}
