//! A procedural stream where predictions need the previous segment: "stories" that
//! introduce a name with a number, run through one sentence of the zoo grammar,
//! then recall the name and its number.
//!
//! ```text
//! fox=482;
//! the small cats chase a dog .
//! =fox=482;
//! ```
//!
//! The recall line starts with `=`; after it the name and the three digits are fully
//! determined by the introduction 25–40 characters earlier, which is usually in the previous
//! segment: a model without memory can only guess them.
//!
//! ```
//! use mote_converters::zoo::xl::data::{recall_stream, stories};
//! let text = recall_stream(7, 300);
//! assert!(text.len() >= 300);
//! assert!(stories(&text).iter().all(|s| s.intro == s.recall));
//! ```

use crate::zoo::corpus::{sentence, SEPARATOR};
use crate::zoo::rng::SplitMix64;

/// Seed of the training stream.
pub const TRAIN_SEED: u64 = 0x6d6f_7465_0a01;
/// Seed of the held-out stream.
pub const HELDOUT_SEED: u64 = 0x6d6f_7465_0a02;

/// Longest sentence put between an introduction and its recall (so the recalled digits sit
/// 25–40 characters after the introduced ones: within one segment of memory).
pub const MAX_FILLER: usize = 28;

/// Names that are introduced and recalled.
pub const NAMES: &[&str] = &["cat", "dog", "bird", "fox", "girl", "boy", "frog"];

/// One story: its introduced `name=number` and what the recall line repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Story {
    /// `name=ddd` as introduced.
    pub intro: String,
    /// `name=ddd` as recalled.
    pub recall: String,
    /// Byte offset of the recall's name (just after the leading `=`).
    pub recall_at: usize,
}

/// One story's text: introduction, one sentence, recall (each line ends with the separator).
pub fn story(r: &mut SplitMix64) -> String {
    let name = r.pick(NAMES);
    let number = r.below(1000);
    let mut s = format!("{name}={number:03};{SEPARATOR}");
    // One grammar line between introduction and recall: no digits or `=` in between, so the
    // recall's context is unambiguous, at a distance that memory (M + S keys) can reach.
    let line = loop {
        let l = sentence(r);
        if l.len() <= MAX_FILLER {
            break l;
        }
    };
    s.push_str(&line);
    s.push(SEPARATOR);
    s.push_str(&format!("={name}={number:03};{SEPARATOR}"));
    s
}

/// Concatenated stories until at least `min_chars` characters exist.
pub fn recall_stream(seed: u64, min_chars: usize) -> String {
    let mut r = SplitMix64::new(seed);
    let mut out = String::with_capacity(min_chars + 128);
    while out.len() < min_chars {
        out.push_str(&story(&mut r));
    }
    out
}

/// The stories of a stream, with where each recall starts.
pub fn stories(text: &str) -> Vec<Story> {
    let mut out = Vec::new();
    let mut intro: Option<String> = None;
    let mut at = 0;
    for line in text.split_inclusive(SEPARATOR) {
        let body = line.trim_end_matches(SEPARATOR).trim_end_matches(';');
        if let Some(rest) = body.strip_prefix('=') {
            if let Some(i) = intro.take() {
                out.push(Story { intro: i, recall: rest.to_string(), recall_at: at + 1 });
            }
        } else if body.contains('=') && NAMES.iter().any(|n| body.starts_with(&format!("{n}="))) {
            intro = Some(body.to_string());
        }
        at += line.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::corpus::Vocab;

    #[test]
    fn stories_recall_their_introduction_from_afar() {
        let text = recall_stream(TRAIN_SEED, 20_000);
        assert_eq!(text, recall_stream(TRAIN_SEED, 20_000));
        assert!(Vocab::standard().encode(&text).is_some());
        let st = stories(&text);
        assert!(st.len() > 200);
        for s in &st {
            assert_eq!(s.intro, s.recall);
            assert_eq!(&text[s.recall_at..s.recall_at + s.recall.len()], s.recall);
            let intro_at = text[..s.recall_at].rfind(&format!("{};\n", s.intro)).unwrap();
            // Name to name: far enough that a 32-char segment rarely holds both, close enough
            // for one segment of memory.
            let d = s.recall_at - intro_at;
            assert!((24..=40).contains(&d), "distance {d}");
        }
    }
}
