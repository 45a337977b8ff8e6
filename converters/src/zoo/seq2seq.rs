//! What the zoo's two sequence-to-sequence families share: the Transformer encoder–decoder
//! ([`super::encdec`]) and T5 in its prefix-LM form ([`super::t5`]). Both read a source (a
//! padded sequence, or a prompt), generate an answer greedily and are scored by exact match and
//! token accuracy against a copy-the-source baseline; they are trained, exported, measured on the
//! runtime and published the same way.
//!
//! Each family keeps its task, its model and what only it measures; this module holds the rest,
//! one concept per submodule:
//! - [`layers`]: the attention with its own projections, the scoped residual add, id batches;
//! - [`train`]: the training budget, the loop, the answer loss, greedy decoding in candle and
//!   the training report's accuracy;
//! - [`artefacts`]: `model.onnx`, `golden/` and `calib/` as training writes them;
//! - [`card`]: the model card's shared sections;
//! - [`figures`]: the runtime figures of a folder (its converted files, golden parity, greedy
//!   scores);
//! - [`publish`]: the card's runtime section and the int8 file written after training.
//!
//! [`TaskExample`] is what the shared training and scoring need to know about a family's task.

pub mod artefacts;
pub mod card;
pub mod figures;
pub mod layers;
pub mod publish;
pub mod train;

/// An example of a sequence-to-sequence family's procedural task: how examples are drawn, how
/// greedy answers to them are scored, what the copy-the-source baseline answers and how a sample
/// is shown.
pub trait TaskExample: Sized {
    /// A generated answer (ids or text, without the end marker).
    type Answer: PartialEq;

    /// Seed of the training stream.
    const TRAIN_SEED: u64;
    /// Seed of the held-out examples.
    const HELDOUT_SEED: u64;

    /// `n` random examples drawn from `seed`.
    fn examples(seed: u64, n: usize) -> Vec<Self>;

    /// The four golden examples training writes with candle's logits (from the held-out seed).
    fn goldens() -> Vec<Self> {
        Self::examples(Self::HELDOUT_SEED ^ 0x601d, 4)
    }

    /// The eight calibration examples training writes (from the training seed).
    fn calibration() -> Vec<Self> {
        Self::examples(Self::TRAIN_SEED ^ 0xca11b, 8)
    }

    /// `(exact match, token accuracy)` of `answers` against the examples' answers, as fractions.
    fn score(examples: &[Self], answers: &[Self::Answer]) -> (f64, f64);

    /// The copy baseline's answer: the source itself.
    fn copied(&self) -> Self::Answer;

    /// A sample as the card shows it: `(source or prompt, answer)`.
    fn sample(&self, answer: &Self::Answer) -> (String, String);
}

/// How many greedy samples the training report and the figures keep.
pub const SAMPLES: usize = 6;

/// The first [`SAMPLES`] examples with their answers, as the card shows them.
pub fn samples<E: TaskExample>(examples: &[E], answers: &[E::Answer]) -> Vec<(String, String)> {
    examples.iter().zip(answers).take(SAMPLES).map(|(e, a)| e.sample(a)).collect()
}

/// The copy baseline's answers to `examples`.
pub fn copies<E: TaskExample>(examples: &[E]) -> Vec<E::Answer> {
    examples.iter().map(E::copied).collect()
}
