//! Beam search over a model's `decode_step` entry: keeps the `width` most probable
//! continuations (by total log-probability) instead of one.
//!
//! Allocation-free: the caller lends a [`BeamMemory`] with room for two generations of
//! `width` beams (state snapshots, logits and tokens; [`BeamMemory::sizes`] says how much).
//! Each generated token costs `width` decode steps: a beam's state (its KV cache) is restored,
//! one token is fed, and the new state is saved. Scores are not length-normalised; a beam that
//! emits the stop token is finished and competes with its final score.

use crate::error::{Error, Result};
use crate::format::EntryId;
use crate::session::Session;

/// Most beams one search may keep.
pub const MAX_BEAMS: usize = 16;

/// Working memory of one search, for `width` beams over `vocab` logits and `max_new` tokens.
pub struct BeamMemory<'a> {
    /// `2 · width · state_bytes` bytes of state snapshots.
    pub states: &'a mut [u8],
    /// `2 · width · vocab` logits.
    pub logits: &'a mut [f32],
    /// `2 · width · max_new` tokens.
    pub tokens: &'a mut [i32],
}

impl BeamMemory<'_> {
    /// `(state bytes, logits, tokens)` a search needs.
    ///
    /// ```
    /// assert_eq!(mote::beam::BeamMemory::sizes(4, 1024, 40, 16), (8192, 320, 128));
    /// ```
    pub fn sizes(width: usize, state_bytes: usize, vocab: usize, max_new: usize) -> (usize, usize, usize) {
        (2 * width * state_bytes, 2 * width * vocab, 2 * width * max_new)
    }
}

/// The best beam: its length (tokens written to `out`) and total log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamOutcome {
    /// Tokens generated (including a final stop token).
    pub len: usize,
    /// Sum of the log-probabilities of those tokens.
    pub log_prob: f32,
}

/// One surviving beam of a step: its score, the beam it extends and the token it adds
/// (`None`: a finished beam carried unchanged).
#[derive(Clone, Copy)]
struct Candidate {
    score: f32,
    parent: usize,
    token: Option<i32>,
}

/// Inserts `c` into the best-first list `best[..*n]` of at most `width` (earlier wins ties).
fn offer(best: &mut [Candidate; MAX_BEAMS], n: &mut usize, width: usize, c: Candidate) {
    let at = best[..*n].iter().position(|b| c.score > b.score).unwrap_or(*n);
    if at >= width {
        return;
    }
    let end = (*n + 1).min(width);
    best.copy_within(at..end - 1, at + 1);
    best[at] = c;
    *n = end;
}

/// Feeds `prompt` from the session's current state, then runs a beam search of `width` beams
/// for up to `max_new` tokens, stopping early once every beam has emitted `stop`. Writes the
/// best beam to `out` and leaves the session in that beam's state.
///
/// Errors: [`Error::NotFound`] without a `decode_step` entry, [`Error::BadParams`] for a width
/// of 0 or over [`MAX_BEAMS`], [`Error::SizeMismatch`] for an empty prompt or buffers smaller
/// than [`BeamMemory::sizes`] / `max_new`.
pub fn beam_search(
    session: &mut Session<'_, '_>,
    prompt: &[i32],
    width: usize,
    max_new: usize,
    stop: Option<i32>,
    mem: &mut BeamMemory<'_>,
    out: &mut [i32],
) -> Result<BeamOutcome> {
    let model = session.model();
    let entry = model.entry_by_name("decode_step")?;
    let vocab = model.tensor(model.entry_output(entry, 0)?)?.desc.shape.last();
    let state_bytes = model.state_bytes();
    if width == 0 || width > MAX_BEAMS {
        return Err(Error::BadParams);
    }
    let (s_len, l_len, t_len) = BeamMemory::sizes(width, state_bytes, vocab, max_new);
    let small = mem.states.len() < s_len || mem.logits.len() < l_len || mem.tokens.len() < t_len;
    if prompt.is_empty() || small || out.len() < max_new || vocab == 0 {
        return Err(Error::SizeMismatch);
    }
    for &t in prompt {
        feed(session, entry, t)?;
    }
    // Slot `k` of generation `g` is index `g · width + k` of each buffer.
    let save = |session: &Session<'_, '_>, mem: &mut BeamMemory<'_>, slot: usize| -> Result<()> {
        mem.states[slot * state_bytes..(slot + 1) * state_bytes].copy_from_slice(session.state());
        read_logits(session, entry, vocab, &mut mem.logits[slot * vocab..(slot + 1) * vocab])
    };
    save(session, mem, 0)?;
    let mut scores = [0f32; MAX_BEAMS];
    let mut lens = [0usize; MAX_BEAMS];
    let mut finished = [false; MAX_BEAMS];
    let (mut n_beams, mut gen) = (1, 0);
    for _ in 0..max_new {
        let mut best = [Candidate { score: 0.0, parent: 0, token: None }; MAX_BEAMS];
        let mut n = 0;
        for b in 0..n_beams {
            if finished[b] {
                offer(&mut best, &mut n, width, Candidate { score: scores[b], parent: b, token: None });
                continue;
            }
            let row = &mem.logits[(gen * width + b) * vocab..(gen * width + b + 1) * vocab];
            let lse = log_sum_exp(row);
            for (v, &l) in row.iter().enumerate() {
                let c = Candidate { score: scores[b] + (l - lse), parent: b, token: Some(v as i32) };
                offer(&mut best, &mut n, width, c);
            }
        }
        if best[..n].iter().all(|c| c.token.is_none()) {
            break;
        }
        let next = 1 - gen;
        let (mut new_lens, mut new_finished) = ([0usize; MAX_BEAMS], [false; MAX_BEAMS]);
        for (k, c) in best[..n].iter().enumerate() {
            let (from, to) = (gen * width + c.parent, next * width + k);
            mem.tokens.copy_within(from * max_new..from * max_new + lens[c.parent], to * max_new);
            new_lens[k] = lens[c.parent];
            match c.token {
                None => {
                    mem.states.copy_within(from * state_bytes..(from + 1) * state_bytes, to * state_bytes);
                    mem.logits.copy_within(from * vocab..(from + 1) * vocab, to * vocab);
                    new_finished[k] = true;
                }
                Some(t) => {
                    session.restore_state(&mem.states[from * state_bytes..(from + 1) * state_bytes])?;
                    feed(session, entry, t)?;
                    save(session, mem, to)?;
                    mem.tokens[to * max_new + new_lens[k]] = t;
                    new_lens[k] += 1;
                    new_finished[k] = stop == Some(t);
                }
            }
            scores[k] = c.score;
        }
        (lens, finished, n_beams, gen) = (new_lens, new_finished, n, next);
    }
    // Beams are kept best-first: beam 0 wins.
    let slot = gen * width;
    session.restore_state(&mem.states[slot * state_bytes..(slot + 1) * state_bytes])?;
    out[..lens[0]].copy_from_slice(&mem.tokens[slot * max_new..slot * max_new + lens[0]]);
    Ok(BeamOutcome { len: lens[0], log_prob: scores[0] })
}

fn feed(session: &mut Session<'_, '_>, entry: EntryId, token: i32) -> Result<()> {
    session.set_input_i32(entry, 0, &[token])?;
    session.run(entry)
}

/// The last `vocab` values of output 0 (the logits of the newest position).
fn read_logits(session: &Session<'_, '_>, entry: EntryId, vocab: usize, out: &mut [f32]) -> Result<()> {
    let v = session.output(entry, 0)?;
    let base = v.desc.shape.numel().checked_sub(vocab).ok_or(Error::BadShape)?;
    for (i, o) in out.iter_mut().enumerate() {
        *o = v.get(base + i);
    }
    Ok(())
}

/// `ln Σ exp(x)`, computed stably.
fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + libm::logf(x.iter().map(|&v| libm::expf(v - max)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_keeps_the_best_first_and_earlier_on_ties() {
        let c = |score, parent| Candidate { score, parent, token: Some(0) };
        let mut best = [c(0.0, 0); MAX_BEAMS];
        let mut n = 0;
        for (i, s) in [-3.0f32, -1.0, -2.0, -1.0, -5.0, -0.5].iter().enumerate() {
            offer(&mut best, &mut n, 3, c(*s, i));
        }
        assert_eq!(n, 3);
        let kept: [(f32, usize); 3] = [(-0.5, 5), (-1.0, 1), (-1.0, 3)];
        for (b, (s, p)) in best[..3].iter().zip(kept) {
            assert_eq!((b.score, b.parent), (s, p));
        }
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[0.0, 0.0]) - core::f32::consts::LN_2).abs() < 1e-6);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + core::f32::consts::LN_2)).abs() < 1e-3);
    }
}
