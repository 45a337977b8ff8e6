//! The procedural "toy translation" task of the encoder–decoder: reverse a sequence of symbols.
//!
//! Ids: `PAD = 0`, `BOS = 1`, `EOS = 2`, then [`SYMBOLS`] symbols. A source is
//! [`MIN_LEN`]..=[`MAX_LEN`] random symbols, padded with `PAD` to [`SRC_LEN`] (its mask is 0 on
//! padding); the target is `BOS`, the reversed source, `EOS`. The decoder reads the target
//! without its last token and predicts it shifted by one.
//!
//! ```
//! use mote_converters::zoo::encdec::task::{decode, Example, BOS, EOS};
//! let e = Example { src: vec![3, 4, 5] };
//! assert_eq!(e.target(), vec![BOS, 5, 4, 3, EOS]);
//! assert_eq!(decode(&e.src), "abc");
//! ```

use serde::{Deserialize, Serialize};

use crate::zoo::rng::SplitMix64;
use crate::zoo::seq2seq::TaskExample;

/// Padding id (source padding; decoder input and labels past `EOS`).
pub const PAD: u32 = 0;
/// Begin-of-sequence id: the first decoder input.
pub const BOS: u32 = 1;
/// End-of-sequence id: the last target token.
pub const EOS: u32 = 2;
/// Number of content symbols (ids `3..3 + SYMBOLS`).
pub const SYMBOLS: usize = 12;
/// Every id as one character, in id order: pad, BOS, EOS, the symbols.
pub const VOCAB: &str = "_^$abcdefghijkl";
/// Shortest source.
pub const MIN_LEN: usize = 3;
/// Longest source.
pub const MAX_LEN: usize = 12;
/// Source bound (`src` dim): sources are padded to this length.
pub const SRC_LEN: usize = MAX_LEN;
/// Target bound (`tgt` dim): `BOS` + the longest answer + `EOS`.
pub const TGT_LEN: usize = MAX_LEN + 2;
/// Seed of the training stream.
pub const TRAIN_SEED: u64 = 0xed_0001;
/// Seed of the held-out examples.
pub const HELDOUT_SEED: u64 = 0xed_0002;

/// One example: the source symbols (ids, no padding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Source ids, each in `3..3 + SYMBOLS`.
    pub src: Vec<u32>,
}

impl Example {
    /// `(ids, mask)` of the source padded to [`SRC_LEN`].
    pub fn src_row(&self) -> (Vec<u32>, Vec<u32>) {
        let mut ids = self.src.clone();
        let mut mask = vec![1u32; ids.len()];
        ids.resize(SRC_LEN, PAD);
        mask.resize(SRC_LEN, 0);
        (ids, mask)
    }

    /// The answer: the reversed source (without `BOS`/`EOS`).
    pub fn answer(&self) -> Vec<u32> {
        self.src.iter().rev().copied().collect()
    }

    /// `BOS`, the answer, `EOS`.
    pub fn target(&self) -> Vec<u32> {
        let mut t = vec![BOS];
        t.extend(self.answer());
        t.push(EOS);
        t
    }

    /// The decoder input (`target[:-1]`) padded with `PAD` to `len`.
    pub fn decoder_input(&self, len: usize) -> Vec<u32> {
        let t = self.target();
        let mut d = t[..t.len() - 1].to_vec();
        d.resize(len, PAD);
        d
    }
}

impl TaskExample for Example {
    /// Generated ids before `EOS`.
    type Answer = Vec<u32>;

    const TRAIN_SEED: u64 = TRAIN_SEED;
    const HELDOUT_SEED: u64 = HELDOUT_SEED;

    fn examples(seed: u64, n: usize) -> Vec<Self> {
        examples(seed, n)
    }

    fn score(examples: &[Self], answers: &[Vec<u32>]) -> (f64, f64) {
        score(examples, answers)
    }

    /// The source unreversed.
    fn copied(&self) -> Vec<u32> {
        self.src.clone()
    }

    /// The source and the answer as characters.
    fn sample(&self, answer: &Vec<u32>) -> (String, String) {
        (decode(&self.src), decode(answer))
    }
}

/// `n` random examples from `seed` (lengths and symbols uniform).
pub fn examples(seed: u64, n: usize) -> Vec<Example> {
    let mut r = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let len = MIN_LEN + r.below(MAX_LEN - MIN_LEN + 1);
            Example { src: (0..len).map(|_| 3 + r.below(SYMBOLS) as u32).collect() }
        })
        .collect()
}

/// Characters of `ids` (unknown ids are skipped).
pub fn decode(ids: &[u32]) -> String {
    let v: Vec<char> = VOCAB.chars().collect();
    ids.iter().filter_map(|&i| v.get(i as usize)).collect()
}

/// Exact-match and token accuracy of `outputs` (generated ids before `EOS`) against the
/// examples' answers: returns `(exact, token)` as fractions.
pub fn score(examples: &[Example], outputs: &[Vec<u32>]) -> (f64, f64) {
    let (mut exact, mut tok, mut total) = (0usize, 0usize, 0usize);
    for (e, o) in examples.iter().zip(outputs) {
        let want = e.answer();
        exact += usize::from(*o == want);
        tok += want.iter().zip(o).filter(|(a, b)| a == b).count();
        total += want.len();
    }
    (exact as f64 / examples.len().max(1) as f64, tok as f64 / total.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_pad_and_shift() {
        for e in examples(1, 50) {
            assert!((MIN_LEN..=MAX_LEN).contains(&e.src.len()));
            let (ids, mask) = e.src_row();
            assert_eq!((ids.len(), mask.len()), (SRC_LEN, SRC_LEN));
            assert_eq!(mask.iter().sum::<u32>() as usize, e.src.len());
            assert!(ids[e.src.len()..].iter().all(|&i| i == PAD));
            let d = e.decoder_input(TGT_LEN);
            assert_eq!(d.len(), TGT_LEN);
            assert_eq!(&d[1..=e.src.len()], &e.answer()[..]);
        }
        let e = Example { src: vec![3, 4, 5] };
        let (exact, tok) = score(&[e.clone(), e], &[vec![5, 4, 3], vec![5, 4, 9]]);
        assert_eq!((exact, tok), (0.5, 5.0 / 6.0));
    }
}
