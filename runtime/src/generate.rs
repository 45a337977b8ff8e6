//! Autoregressive generation: the same allocation-free loop on host and firmware.

use crate::error::{Error, Result};
use crate::format::EntryId;
use crate::rng::Rng;
use crate::session::Session;

/// The most candidates top-k sampling keeps.
pub const MAX_TOP_K: usize = 64;

/// How the next token is chosen from the logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (1..=[`MAX_TOP_K`]).
    pub top_k: usize,
    rng: Rng,
}

impl Sampler {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Sampler { temperature: 0.0, top_k: 1, rng: Rng::new(0) }
    }

    /// Temperature plus top-k sampling with a seeded, portable PRNG.
    pub fn top_k(temperature: f32, top_k: usize, seed: u64) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) || top_k == 0 || top_k > MAX_TOP_K {
            return Err(Error::BadParams);
        }
        Ok(Sampler { temperature, top_k, rng: Rng::new(seed) })
    }

    /// Picks a token from `logits(i)` for `i < vocab`.
    pub fn pick(&mut self, vocab: usize, logits: impl Fn(usize) -> f32) -> usize {
        let k = if self.temperature == 0.0 { 1 } else { self.top_k.min(vocab) };
        // Insertion-sorted top-k (descending); ties keep the lower token id.
        let mut best = [(f32::NEG_INFINITY, 0usize); MAX_TOP_K];
        let mut n = 0;
        for i in 0..vocab {
            let v = logits(i);
            if n == k && v.partial_cmp(&best[k - 1].0) != Some(core::cmp::Ordering::Greater) {
                continue;
            }
            let mut j = if n < k { n } else { k - 1 };
            while j > 0 && v > best[j - 1].0 {
                best[j] = best[j - 1];
                j -= 1;
            }
            best[j] = (v, i);
            n = (n + 1).min(k);
        }
        if k == 1 || n == 1 {
            return best[0].1;
        }
        let max = best[0].0;
        let mut total = 0.0f32;
        let mut w = [0f32; MAX_TOP_K];
        for (wi, (v, _)) in w.iter_mut().zip(&best[..n]) {
            *wi = libm::expf((v - max) / self.temperature);
            total += *wi;
        }
        let mut u = self.rng.uniform() * total;
        for (wi, (_, id)) in w.iter().zip(&best[..n]) {
            if u < *wi {
                return *id;
            }
            u -= wi;
        }
        best[n - 1].1
    }
}

/// Drives a `decode_step` entry point (one token in, logits out, KV cache in the state).
pub struct Generator<'s, 'm, 'b> {
    session: &'s mut Session<'m, 'b>,
    entry: EntryId,
    vocab: usize,
}

impl<'s, 'm, 'b> Generator<'s, 'm, 'b> {
    /// Uses the model's `decode_step` entry; fails with [`Error::NotFound`] if it has none.
    pub fn new(session: &'s mut Session<'m, 'b>) -> Result<Self> {
        let model = session.model();
        let entry = model.entry_by_name("decode_step")?;
        let input = model.tensor(model.entry_input(entry, 0)?)?;
        let output = model.tensor(model.entry_output(entry, 0)?)?;
        if input.desc.shape.numel() != 1 {
            return Err(Error::BadShape);
        }
        let vocab = output.desc.shape.last();
        Ok(Generator { session, entry, vocab })
    }

    /// Vocabulary size (the logits' last dimension).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Clears the KV cache and position.
    pub fn reset(&mut self) {
        self.session.reset();
    }

    /// Feeds one token at the current position; the logits for the next token are then
    /// available through [`Generator::logit`].
    pub fn feed(&mut self, token: i32) -> Result<()> {
        self.session.set_input_i32(self.entry, 0, &[token])?;
        self.session.run(self.entry)
    }

    /// Logit `i` of the last [`Generator::feed`].
    pub fn logit(&self, i: usize) -> Result<f32> {
        let v = self.session.output(self.entry, 0)?;
        if i >= self.vocab {
            return Err(Error::IndexOutOfRange);
        }
        Ok(v.get(v.desc.shape.numel() - self.vocab + i))
    }

    /// Feeds `prompt`, then samples up to `max_new` tokens, passing each to `emit`
    /// (return `false` from `emit` to stop early). Returns the number generated.
    pub fn generate(
        &mut self,
        prompt: &[i32],
        max_new: usize,
        sampler: &mut Sampler,
        mut emit: impl FnMut(i32) -> bool,
    ) -> Result<usize> {
        if prompt.is_empty() {
            return Err(Error::SizeMismatch);
        }
        for &t in prompt {
            self.feed(t)?;
        }
        for n in 0..max_new {
            let v = self.session.output(self.entry, 0)?;
            let base = v.desc.shape.numel() - self.vocab;
            let next = sampler.pick(self.vocab, |i| v.get(base + i)) as i32;
            if !emit(next) {
                return Ok(n + 1);
            }
            if n + 1 < max_new {
                self.feed(next)?;
            }
        }
        Ok(max_new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_top_k_stays_in_the_top_k() {
        let logits = [0.1f32, 3.0, -1.0, 2.5, 2.9];
        assert_eq!(Sampler::greedy().pick(5, |i| logits[i]), 1);
        let mut s = Sampler::top_k(1.0, 3, 9).unwrap();
        let mut seen = [0usize; 5];
        for _ in 0..2000 {
            seen[s.pick(5, |i| logits[i])] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0, "only the top 3 may be drawn: {seen:?}");
        assert!(seen[1] > seen[3], "higher logits are drawn more often: {seen:?}");
        assert!(seen[3] > 300, "{seen:?}");
    }

    #[test]
    fn bad_sampler_settings_are_errors() {
        assert!(Sampler::top_k(-1.0, 5, 0).is_err());
        assert!(Sampler::top_k(1.0, 0, 0).is_err());
        assert!(Sampler::top_k(f32::NAN, 5, 0).is_err());
        assert!(Sampler::top_k(1.0, MAX_TOP_K + 1, 0).is_err());
    }
}
