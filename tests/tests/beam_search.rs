//! Beam search over the committed zoo GPT's `decode_step`: width 1 is greedy decoding, wider
//! beams find sequences at least as probable, and the reported log-probability matches an
//! independent re-scoring of the returned tokens.

use mote::beam::{beam_search, BeamMemory, MAX_BEAMS};
use mote::generate::{Generator, Sampler};
use mote::{Error, Model, Session};
use mote_tests::model_dir;

fn model_bytes() -> Vec<u8> {
    std::fs::read(model_dir("gpt").join("model.int8.mote")).expect("committed gpt")
}

struct Buffers {
    states: Vec<u8>,
    logits: Vec<f32>,
    tokens: Vec<i32>,
}

impl Buffers {
    fn new(model: &Model<'_>, width: usize, max_new: usize) -> Self {
        let e = model.entry_by_name("decode_step").unwrap();
        let vocab = model.tensor(model.entry_output(e, 0).unwrap()).unwrap().desc.shape.last();
        let (s, l, t) = BeamMemory::sizes(width, model.state_bytes(), vocab, max_new);
        Buffers { states: vec![0; s], logits: vec![0.0; l], tokens: vec![0; t] }
    }

    fn memory(&mut self) -> BeamMemory<'_> {
        BeamMemory { states: &mut self.states, logits: &mut self.logits, tokens: &mut self.tokens }
    }
}

/// Sum of next-token log-probabilities of `tokens` after `prompt`, from a fresh session (f64).
fn rescore(model: &Model<'_>, prompt: &[i32], tokens: &[i32]) -> f64 {
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(model, &mut arena, &mut state).unwrap();
    let mut g = Generator::new(&mut s).unwrap();
    for &t in prompt {
        g.feed(t).unwrap();
    }
    let mut total = 0.0;
    for &t in tokens {
        let logits: Vec<f64> = (0..g.vocab()).map(|i| g.logit(i).unwrap() as f64).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        total += logits[t as usize] - lse;
        g.feed(t).unwrap();
    }
    total
}

#[test]
fn beams_match_greedy_at_width_one_and_never_score_worse() {
    let bytes = model_bytes();
    let model = Model::parse(&bytes).unwrap();
    let prompt = [5, 12, 3, 9, 1];
    let max_new = 12;
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(&model, &mut arena, &mut state).unwrap();
    let mut greedy = Vec::new();
    Generator::new(&mut s)
        .unwrap()
        .generate(&prompt, max_new, &mut Sampler::greedy(), |t| {
            greedy.push(t);
            true
        })
        .unwrap();
    let greedy_score = rescore(&model, &prompt, &greedy);
    for width in [1usize, 2, 4] {
        let mut buf = Buffers::new(&model, width, max_new);
        let mut out = vec![0i32; max_new];
        s.reset();
        let o = beam_search(&mut s, &prompt, width, max_new, None, &mut buf.memory(), &mut out).unwrap();
        let tokens = &out[..o.len];
        let rescored = rescore(&model, &prompt, tokens);
        println!("width {width}: log-prob {:.4} (rescored {rescored:.4}, greedy {greedy_score:.4})", o.log_prob);
        assert_eq!(o.len, max_new);
        assert!((o.log_prob as f64 - rescored).abs() < 1e-3, "reported {} vs rescored {rescored}", o.log_prob);
        if width == 1 {
            assert_eq!(tokens, &greedy[..], "width 1 is greedy decoding");
        }
        assert!(rescored >= greedy_score - 1e-4, "width {width} found a less probable sequence");
        // The session is left in the best beam's state (its position counts prompt + beam).
        assert_eq!(s.position() as usize, prompt.len() + o.len);
    }
}

#[test]
fn wider_beams_find_more_probable_sequences_on_some_prompts() {
    let bytes = model_bytes();
    let model = Model::parse(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(&model, &mut arena, &mut state).unwrap();
    let max_new = 16;
    let (mut better, mut total_gain) = (0, 0.0);
    for seed in 0..12u64 {
        let mut rng = mote::rng::Rng::new(seed);
        let prompt: Vec<i32> = (0..4).map(|_| (rng.next_u32() % 30) as i32).collect();
        let mut scores = [0.0f64; 2];
        for (i, width) in [1usize, 4].into_iter().enumerate() {
            let mut buf = Buffers::new(&model, width, max_new);
            let mut out = vec![0i32; max_new];
            s.reset();
            let o = beam_search(&mut s, &prompt, width, max_new, None, &mut buf.memory(), &mut out).unwrap();
            scores[i] = rescore(&model, &prompt, &out[..o.len]);
        }
        assert!(scores[1] >= scores[0] - 1e-4, "prompt {prompt:?}: width 4 {} < greedy {}", scores[1], scores[0]);
        if scores[1] > scores[0] + 1e-3 {
            better += 1;
            total_gain += scores[1] - scores[0];
        }
    }
    println!("width 4 beat greedy on {better} of 12 prompts (total log-prob gain {total_gain:.3})");
    assert!(better > 0, "a 4-beam search should beat greedy somewhere");
}

#[test]
fn a_stop_token_ends_every_beam() {
    let bytes = model_bytes();
    let model = Model::parse(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(&model, &mut arena, &mut state).unwrap();
    let (prompt, max_new) = ([5, 12, 3], 20);
    let mut buf = Buffers::new(&model, 3, max_new);
    let mut out = vec![0i32; max_new];
    let free = beam_search(&mut s, &prompt, 3, max_new, None, &mut buf.memory(), &mut out).unwrap();
    // Stop on the best beam's third token: the result must end there.
    let stop = out[2];
    s.reset();
    let o = beam_search(&mut s, &prompt, 3, max_new, Some(stop), &mut buf.memory(), &mut out).unwrap();
    assert!(o.len <= free.len && out[o.len - 1] == stop, "ends with the stop token: {:?}", &out[..o.len]);
}

#[test]
fn bad_settings_are_typed_errors() {
    let bytes = model_bytes();
    let model = Model::parse(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(&model, &mut arena, &mut state).unwrap();
    let mut buf = Buffers::new(&model, 2, 4);
    let mut out = [0i32; 4];
    assert_eq!(beam_search(&mut s, &[1], 0, 4, None, &mut buf.memory(), &mut out), Err(Error::BadParams));
    assert_eq!(beam_search(&mut s, &[1], MAX_BEAMS + 1, 4, None, &mut buf.memory(), &mut out), Err(Error::BadParams));
    assert_eq!(beam_search(&mut s, &[], 2, 4, None, &mut buf.memory(), &mut out), Err(Error::SizeMismatch));
    assert_eq!(beam_search(&mut s, &[1], 3, 4, None, &mut buf.memory(), &mut out), Err(Error::SizeMismatch));
    assert_eq!(beam_search(&mut s, &[1], 2, 5, None, &mut buf.memory(), &mut out[..]), Err(Error::SizeMismatch));
}
