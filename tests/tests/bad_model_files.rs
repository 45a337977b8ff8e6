//! Corrupted `.mote` files give typed errors, never panics: truncation, bit flips with and
//! without a valid checksum, and a wrong format version.

use mote::format::reseal;
use mote::Error;
use mote_converters::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::host;
use mote_tests::{gpt_options, scratch, untrained_gpt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// One conversion shared by the tests: each writing the same scratch ONNX file while another
/// test's import had it mapped was a race (SIGBUS when the file was truncated under the map).
fn model_bytes() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let onnx = untrained_gpt(&scratch("mutations"), 5);
            convert::convert(&onnx, &gpt_options(QuantMode::Int8, 16)).unwrap().bytes
        })
        .clone()
}

/// Parses and, if that succeeds, runs every entry once; returns whether it parsed.
fn parse_and_run(bytes: &[u8]) -> Result<bool, Error> {
    let model = mote::Model::parse(bytes)?;
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    for e in 0..model.entry_count() as u32 {
        let _ = s.run(mote::EntryId(e));
    }
    Ok(true)
}

#[test]
fn random_mutations_never_panic() {
    let good = model_bytes();
    assert_eq!(parse_and_run(&good), Ok(true));
    let mut rng = mote::rng::Rng::new(2024);
    let (mut truncated, mut flipped, mut resealed, mut resealed_ok) = (0, 0, 0, 0);
    for case in 0..3000u32 {
        let mut bytes = good.clone();
        let kind = case % 3;
        match kind {
            0 => {
                let len = rng.next_u32() as usize % good.len();
                bytes.truncate(len);
            }
            _ => {
                for _ in 0..1 + rng.next_u32() % 4 {
                    // Bias half of the flips towards the header and tables, where validation lives.
                    let span = if rng.next_u32().is_multiple_of(2) { 2048.min(bytes.len()) } else { bytes.len() };
                    let i = rng.next_u32() as usize % span;
                    bytes[i] ^= 1 << (rng.next_u32() % 8);
                }
                if kind == 2 {
                    reseal(&mut bytes);
                }
            }
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| parse_and_run(&bytes)));
        let result = outcome.unwrap_or_else(|_| panic!("case {case} (kind {kind}) panicked"));
        match kind {
            0 => {
                truncated += 1;
                assert!(result.is_err(), "case {case}: truncated file parsed");
            }
            1 => {
                flipped += 1;
                assert!(
                    matches!(
                        result,
                        Err(Error::ChecksumMismatch
                            | Error::BadMagic
                            | Error::VersionMismatch { .. }
                            | Error::Truncated
                            | Error::OutOfBounds)
                    ),
                    "case {case}: bit flip without reseal gave {result:?}"
                );
            }
            _ => {
                resealed += 1;
                resealed_ok += result.is_ok() as u32;
            }
        }
    }
    println!("truncated {truncated}, flipped {flipped}, flipped+resealed {resealed} ({resealed_ok} still valid: flips in weights or names)");
    assert!(resealed_ok < resealed, "resealed mutations must mostly be caught by validation");
}

#[test]
fn wrong_version_is_reported_as_such() {
    let mut bytes = model_bytes();
    bytes[4] = 99;
    reseal(&mut bytes);
    assert_eq!(
        mote::Model::parse(&bytes).err(),
        Some(Error::VersionMismatch { found: 99, expected: mote::format::FORMAT_VERSION })
    );
    assert_eq!(mote::Model::parse(b"NOPE").err(), Some(Error::BadMagic));
    assert_eq!(mote::Model::parse(b"MO").err(), Some(Error::Truncated));
}
