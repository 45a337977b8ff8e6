//! The procedural text-to-text task: `reverse:` and `sort:` over short letter strings.
//!
//! A prompt is `<task>:<src>=`, left-padded with `_` to [`PROMPT_LEN`] characters so the
//! prefix (the fully visible part) has one fixed length; the answer follows and ends with `.`.
//!
//! ```
//! use mote_converters::zoo::t5::task::{answer, prompt, Task};
//! assert_eq!(prompt(Task::Reverse, "abc"), "____reverse:abc=");
//! assert_eq!(answer(Task::Sort, "cab"), "abc.");
//! ```

use serde::{Deserialize, Serialize};

use crate::zoo::rng::SplitMix64;
use crate::zoo::seq2seq::TaskExample;

/// Every symbol, in id order: pad, separators, end marker, lower-case letters.
pub const VOCAB: &str = "_:=.abcdefghijklmnopqrstuvwxyz";
/// Id of the end marker `.` that closes every answer.
pub const END: u32 = 3;
/// Fixed prompt (prefix) length.
pub const PROMPT_LEN: usize = 16;
/// Shortest source string.
pub const MIN_LEN: usize = 3;
/// Longest source string.
pub const MAX_LEN: usize = 6;
/// Letters the source strings draw from.
pub const LETTERS: &str = "abcdefghijkl";
/// Seed of the training examples.
pub const TRAIN_SEED: u64 = 0x75_0001;
/// Seed of the held-out probes.
pub const HELDOUT_SEED: u64 = 0x75_0002;

/// A task prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Reverse the string.
    Reverse,
    /// Sort the letters.
    Sort,
}

impl Task {
    /// Every task.
    pub const ALL: [Task; 2] = [Task::Reverse, Task::Sort];

    /// The prompt word.
    pub fn word(self) -> &'static str {
        match self {
            Task::Reverse => "reverse",
            Task::Sort => "sort",
        }
    }
}

/// `<task>:<src>=`, left-padded with `_` to [`PROMPT_LEN`].
pub fn prompt(task: Task, src: &str) -> String {
    let p = format!("{}:{src}=", task.word());
    format!("{}{p}", "_".repeat(PROMPT_LEN.saturating_sub(p.len())))
}

/// The answer with its end marker.
pub fn answer(task: Task, src: &str) -> String {
    let mut c: Vec<char> = src.chars().collect();
    match task {
        Task::Reverse => c.reverse(),
        Task::Sort => c.sort_unstable(),
    }
    c.push('.');
    c.into_iter().collect()
}

/// One example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Which task.
    pub task: Task,
    /// The source string.
    pub src: String,
}

impl Example {
    /// The padded prompt.
    pub fn prompt(&self) -> String {
        prompt(self.task, &self.src)
    }

    /// The answer with its end marker.
    pub fn answer(&self) -> String {
        answer(self.task, &self.src)
    }
}

impl TaskExample for Example {
    /// The generated text before the end marker.
    type Answer = String;

    const TRAIN_SEED: u64 = TRAIN_SEED;
    const HELDOUT_SEED: u64 = HELDOUT_SEED;

    fn examples(seed: u64, n: usize) -> Vec<Self> {
        examples(seed, n)
    }

    fn score(examples: &[Self], answers: &[String]) -> (f64, f64) {
        score(examples, answers)
    }

    /// The source string.
    fn copied(&self) -> String {
        self.src.clone()
    }

    /// The padded prompt and the answer.
    fn sample(&self, answer: &String) -> (String, String) {
        (self.prompt(), answer.clone())
    }
}

/// `n` random examples from `seed` (tasks alternate, lengths and letters uniform).
pub fn examples(seed: u64, n: usize) -> Vec<Example> {
    let mut r = SplitMix64::new(seed);
    let letters: Vec<char> = LETTERS.chars().collect();
    (0..n)
        .map(|i| {
            let len = MIN_LEN + r.below(MAX_LEN - MIN_LEN + 1);
            let src: String = (0..len).map(|_| letters[r.below(letters.len())]).collect();
            Example { task: Task::ALL[i % Task::ALL.len()], src }
        })
        .collect()
}

/// Ids of `s` in [`VOCAB`] (`None` for a character outside it).
pub fn encode(s: &str) -> Option<Vec<u32>> {
    s.chars().map(|c| VOCAB.chars().position(|v| v == c).map(|i| i as u32)).collect()
}

/// Characters of `ids`.
pub fn decode(ids: &[u32]) -> String {
    let v: Vec<char> = VOCAB.chars().collect();
    ids.iter().filter_map(|&i| v.get(i as usize)).collect()
}

/// Exact-match and token accuracy of `outputs` against the examples' answers (without the
/// end marker): returns `(exact, token)` as fractions.
pub fn score(examples: &[Example], outputs: &[String]) -> (f64, f64) {
    let (mut exact, mut tok, mut total) = (0usize, 0usize, 0usize);
    for (e, o) in examples.iter().zip(outputs) {
        let want = e.answer();
        let want = want.trim_end_matches('.');
        exact += usize::from(o == want);
        tok += want.chars().zip(o.chars()).filter(|(a, b)| a == b).count();
        total += want.chars().count();
    }
    (exact as f64 / examples.len().max(1) as f64, tok as f64 / total.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_the_fixed_length_and_encode() {
        for e in examples(1, 50) {
            let p = e.prompt();
            assert_eq!(p.chars().count(), PROMPT_LEN, "{p}");
            assert!(p.ends_with('='));
            let ids = encode(&format!("{p}{}", e.answer())).unwrap();
            assert!(ids.len() <= PROMPT_LEN + MAX_LEN + 1);
            assert_eq!(decode(&ids[..PROMPT_LEN]), p);
        }
        assert_eq!(decode(&[END]), ".");
        let e = Example { task: Task::Reverse, src: "abd".into() };
        let (exact, tok) = score(&[e.clone(), e], &["dba".into(), "dbx".into()]);
        assert_eq!((exact, tok), (0.5, 5.0 / 6.0));
    }
}
