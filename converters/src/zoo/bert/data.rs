//! Masked-token recovery examples from the procedural corpus, and the trivial baselines.
//!
//! An example is a window of the character stream that starts at a line start and has a
//! random length (so batches mix lengths and are padded to `max_seq`). Segment 0 runs up to
//! and including the first line break, segment 1 after it (BERT's sentence pair). Each real
//! position is masked with probability `mask_prob` (at least one per example): its id becomes
//! `[MASK]` and its label is the original character; other labels are [`IGNORE`].
//!
//! ```
//! use mote_converters::zoo::bert::data::{ExampleSource, MlmVocab, IGNORE};
//! use mote_converters::zoo::corpus::{generate, TRAIN_SEED};
//! use mote_converters::zoo::rng::SplitMix64;
//! let vocab = MlmVocab::standard();
//! let src = ExampleSource::new(&vocab, &generate(TRAIN_SEED, 5_000))?;
//! let ex = src.example(&mut SplitMix64::new(1), 48, 16, 0.15);
//! assert_eq!(ex.ids.len(), 48);
//! assert!(ex.labels.iter().any(|&l| l != IGNORE));
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{ensure, Context, Result};

use crate::zoo::corpus::{Vocab, SEPARATOR};
use crate::zoo::rng::SplitMix64;

/// Label of positions that are not scored (Hugging Face's `-100`).
pub const IGNORE: i64 = -100;

/// The character vocabulary of the corpus followed by `[PAD]` and `[MASK]`.
#[derive(Clone, Debug)]
pub struct MlmVocab {
    chars: Vocab,
}

impl MlmVocab {
    /// [`Vocab::standard`] plus the two special tokens.
    pub fn standard() -> Self {
        Self { chars: Vocab::standard() }
    }

    /// The character part.
    pub fn chars(&self) -> &Vocab {
        &self.chars
    }

    /// Total ids (characters and special tokens).
    pub fn len(&self) -> usize {
        self.chars.len() + 2
    }

    /// Whether there are no ids (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Id of `[PAD]`.
    pub fn pad(&self) -> u32 {
        self.chars.len() as u32
    }

    /// Id of `[MASK]`.
    pub fn mask(&self) -> u32 {
        self.chars.len() as u32 + 1
    }

    /// The `mote.special_tokens` metadata value, e.g. `pad=41,mask=42`.
    pub fn special(&self) -> String {
        format!("pad={},mask={}", self.pad(), self.mask())
    }

    /// Readable text of ids: `_` for `[PAD]`, `?` for `[MASK]`, `⏎` for a line break.
    pub fn show(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| match i {
                i if i == self.pad() => '_',
                i if i == self.mask() => '?',
                i => self.chars.chars().get(i as usize).map_or('?', |&c| if c == SEPARATOR { '⏎' } else { c }),
            })
            .collect()
    }
}

/// One padded MLM example; every vector has `max_seq` entries.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Input ids: characters, `[MASK]` at masked positions, `[PAD]` after the end.
    pub ids: Vec<u32>,
    /// 1 at real positions, 0 at padding.
    pub attention: Vec<u32>,
    /// Segment 0 up to and including the first line break, 1 after it; 0 at padding.
    pub segments: Vec<u32>,
    /// The original character at masked positions, [`IGNORE`] elsewhere.
    pub labels: Vec<i64>,
}

impl Example {
    /// Number of real (unpadded) positions.
    pub fn len(&self) -> usize {
        self.attention.iter().filter(|&&a| a != 0).count()
    }

    /// Whether the example has no real positions (never, for generated examples).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Draws examples from one character stream.
#[derive(Clone, Debug)]
pub struct ExampleSource {
    stream: Vec<u32>,
    line_starts: Vec<usize>,
    sep: u32,
    pad: u32,
    mask: u32,
}

impl ExampleSource {
    /// A source over `text` (which must be inside the vocabulary).
    pub fn new(vocab: &MlmVocab, text: &str) -> Result<Self> {
        let stream = vocab.chars().encode(text).context("corpus text outside the vocabulary")?;
        let sep = vocab.chars().id(SEPARATOR).context("no separator in the vocabulary")?;
        let mut line_starts = vec![0];
        line_starts.extend(stream.iter().enumerate().filter(|(_, &c)| c == sep).map(|(i, _)| i + 1));
        ensure!(line_starts.len() > 2, "the corpus needs several lines");
        Ok(Self { stream, line_starts, sep, pad: vocab.pad(), mask: vocab.mask() })
    }

    /// The character ids of the stream.
    pub fn stream(&self) -> &[u32] {
        &self.stream
    }

    /// An example of `min_len..=max_seq` real positions, padded to `max_seq`.
    pub fn example(&self, rng: &mut SplitMix64, max_seq: usize, min_len: usize, mask_prob: f64) -> Example {
        let usable: Vec<usize> =
            self.line_starts.iter().copied().filter(|&s| s + max_seq <= self.stream.len()).collect();
        let start = usable[rng.below(usable.len())];
        let len = min_len.min(max_seq) + rng.below(max_seq - min_len.min(max_seq) + 1);
        let text = &self.stream[start..start + len];
        let mut ex = Example {
            ids: vec![self.pad; max_seq],
            attention: vec![0; max_seq],
            segments: vec![0; max_seq],
            labels: vec![IGNORE; max_seq],
        };
        let mut segment = 0;
        for (p, &c) in text.iter().enumerate() {
            ex.ids[p] = c;
            ex.attention[p] = 1;
            ex.segments[p] = segment;
            if c == self.sep {
                segment = 1;
            }
        }
        let mut masked: Vec<usize> = (0..len).filter(|_| rng.chance(mask_prob)).collect();
        if masked.is_empty() {
            masked.push(rng.below(len));
        }
        for p in masked {
            ex.labels[p] = ex.ids[p] as i64;
            ex.ids[p] = self.mask;
        }
        ex
    }

    /// `n` examples from `seed`.
    pub fn examples(&self, seed: u64, n: usize, max_seq: usize, min_len: usize, mask_prob: f64) -> Vec<Example> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| self.example(&mut rng, max_seq, min_len, mask_prob)).collect()
    }
}

/// Scored positions of `examples`: `(example, position, target)`.
pub fn masked_positions(examples: &[Example]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (i, ex) in examples.iter().enumerate() {
        for (p, &l) in ex.labels.iter().enumerate() {
            if l != IGNORE {
                out.push((i, p, l as usize));
            }
        }
    }
    out
}

/// What the trivial predictors score on the held-out masked positions.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baselines {
    /// Accuracy of always predicting the most frequent masked character of training.
    pub majority_accuracy: f64,
    /// Cross-entropy (nats) of the training unigram distribution of masked characters.
    pub unigram_loss: f64,
    /// Accuracy of the most frequent training character given the visible left and right
    /// neighbours (`[MASK]`, `[PAD]` and the sequence edge count as neighbours too).
    pub neighbours_accuracy: f64,
}

/// The neighbours of position `p` as table indices (`vocab` stands for the sequence edge).
fn neighbours(ex: &Example, p: usize, vocab: usize) -> (usize, usize) {
    let left = if p == 0 { vocab } else { ex.ids[p - 1] as usize };
    let right = ex.ids.get(p + 1).map_or(vocab, |&r| r as usize);
    (left, right)
}

/// Fits the baselines on `train` examples and scores them on `heldout`.
pub fn baselines(train: &[Example], heldout: &[Example], vocab: usize) -> Baselines {
    let mut uni = vec![1.0f64; vocab];
    let side = vocab + 1;
    let mut ctx = vec![0u32; side * side * vocab];
    for (i, p, t) in masked_positions(train) {
        uni[t] += 1.0;
        let (l, r) = neighbours(&train[i], p, vocab);
        ctx[(l * side + r) * vocab + t] += 1;
    }
    let total: f64 = uni.iter().sum();
    let argmax = |v: &[f64]| v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b });
    let majority = argmax(&uni);
    let (mut hit_major, mut hit_ctx, mut loss, mut n) = (0usize, 0usize, 0f64, 0usize);
    for (i, p, t) in masked_positions(heldout) {
        let (l, r) = neighbours(&heldout[i], p, vocab);
        let row = &ctx[(l * side + r) * vocab..(l * side + r + 1) * vocab];
        let guess = if row.iter().all(|&c| c == 0) {
            majority
        } else {
            row.iter().enumerate().fold(0, |b, (k, &c)| if c > row[b] { k } else { b })
        };
        hit_major += usize::from(t == majority);
        hit_ctx += usize::from(t == guess);
        loss -= (uni[t] / total).ln();
        n += 1;
    }
    let n = n.max(1) as f64;
    Baselines {
        majority_accuracy: hit_major as f64 / n,
        unigram_loss: loss / n,
        neighbours_accuracy: hit_ctx as f64 / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::corpus::{generate, HELDOUT_SEED, TRAIN_SEED};

    #[test]
    fn examples_are_padded_segmented_and_masked() -> Result<()> {
        let vocab = MlmVocab::standard();
        let src = ExampleSource::new(&vocab, &generate(TRAIN_SEED, 20_000))?;
        let exs = src.examples(3, 200, 48, 12, 0.15);
        let lens: Vec<usize> = exs.iter().map(Example::len).collect();
        assert!(lens.iter().all(|&l| (12..=48).contains(&l)));
        assert!(lens.iter().any(|&l| l < 30) && lens.contains(&48), "lengths vary");
        for ex in &exs {
            let n = ex.len();
            assert!(ex.attention[..n].iter().all(|&a| a == 1) && ex.attention[n..].iter().all(|&a| a == 0));
            assert!(ex.ids[n..].iter().all(|&i| i == vocab.pad()));
            assert!(ex.labels[n..].iter().all(|&l| l == IGNORE));
            for (p, &l) in ex.labels.iter().enumerate() {
                assert_eq!(l != IGNORE, ex.ids[p] == vocab.mask());
                assert!(l == IGNORE || (l as u32) < vocab.pad());
            }
            // Segments: a run of zeros then ones, switching after the first line break.
            let first_one = ex.segments[..n].iter().position(|&s| s == 1).unwrap_or(n);
            assert!(ex.segments[first_one..n].iter().all(|&s| s == 1));
        }
        assert!(exs.iter().any(|e| e.segments.contains(&1)));
        let masked = masked_positions(&exs).len() as f64;
        let real: f64 = lens.iter().sum::<usize>() as f64;
        assert!((0.12..0.2).contains(&(masked / real)), "mask rate {}", masked / real);
        Ok(())
    }

    #[test]
    fn baselines_are_sensible() -> Result<()> {
        let vocab = MlmVocab::standard();
        let train = ExampleSource::new(&vocab, &generate(TRAIN_SEED, 50_000))?.examples(1, 2000, 48, 12, 0.15);
        let held = ExampleSource::new(&vocab, &generate(HELDOUT_SEED, 20_000))?.examples(2, 300, 48, 12, 0.15);
        let b = baselines(&train, &held, vocab.len());
        assert!(b.majority_accuracy > 0.05 && b.majority_accuracy < 0.4, "{b:?}");
        assert!(b.neighbours_accuracy > b.majority_accuracy, "{b:?}");
        assert!(b.unigram_loss > 1.0 && b.unigram_loss < (vocab.len() as f64).ln(), "{b:?}");
        Ok(())
    }
}
