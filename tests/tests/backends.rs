//! The same `Backend` calls drive the native `.mote` session and tract on the ONNX model.

use mote::backend::{Backend, EntryRunner, TractBackend};
use mote_converters::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::host;
use mote_tests::{gpt_options, scratch, untrained_gpt};

/// Application code written once against the trait.
fn next_token_logits(b: &mut impl Backend, tokens: &[i32], out: &mut [f32]) -> mote::Result<()> {
    b.set_input_i32(0, tokens)?;
    b.run()?;
    b.output_f32(0, out)
}

#[test]
fn native_and_tract_backends_agree() {
    let onnx = untrained_gpt(&scratch("backends"), 11);
    let bytes = convert::convert(&onnx, &gpt_options(QuantMode::F32, 16)).unwrap().bytes;
    let tokens: Vec<i32> = (0..16i32).map(|i| i * 7 % 25).collect();

    let model = mote::Model::parse(&bytes).unwrap();
    let mut mem = host::Memory::for_model(&model);
    let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state).unwrap();
    let entry = model.entry_by_name("forward").unwrap();
    let mut native = vec![0f32; 16 * 25];
    next_token_logits(&mut EntryRunner { session: &mut session, entry }, &tokens, &mut native).unwrap();

    let mut tract = TractBackend::load(&onnx, &[&[1, 16]]).unwrap();
    let mut reference = vec![0f32; 16 * 25];
    next_token_logits(&mut tract, &tokens, &mut reference).unwrap();

    let worst = native.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("native vs tract backend max-abs {worst:e}");
    assert!(worst < 1e-4);
    assert_eq!(tract.set_input_i32(0, &[1, 2]), Err(mote::Error::SizeMismatch));
}
