//! A procedural character corpus: a small English-like grammar with number agreement
//! (including agreement across a relative clause) mixed with arithmetic facts.
//!
//! Everything is generated from a seed, so train and held-out streams are reproducible and
//! disjoint in randomness (different seeds).
//!
//! ```
//! use mote_converters::zoo::corpus::{generate, Vocab, TRAIN_SEED};
//! let text = generate(TRAIN_SEED, 200);
//! let vocab = Vocab::standard();
//! let ids = vocab.encode(&text).unwrap();
//! assert_eq!(vocab.decode(&ids), text);
//! ```

use super::rng::SplitMix64;

/// Seed of the training stream.
pub const TRAIN_SEED: u64 = 0x6d6f_7465_0001;
/// Seed of the held-out stream.
pub const HELDOUT_SEED: u64 = 0x6d6f_7465_0002;
/// Seed of the probe sets (agreement and sums) used for task metrics.
pub const PROBE_SEED: u64 = 0x6d6f_7465_0003;

/// Line separator between sentences / facts.
pub const SEPARATOR: char = '\n';

/// (singular, plural) nouns.
const NOUNS: &[(&str, &str)] = &[
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("fox", "foxes"),
    ("girl", "girls"),
    ("boy", "boys"),
    ("frog", "frogs"),
];
/// (plural/base, singular) transitive verbs.
const VERBS_T: &[(&str, &str)] =
    &[("see", "sees"), ("like", "likes"), ("chase", "chases"), ("find", "finds"), ("help", "helps")];
/// (plural/base, singular) intransitive verbs.
const VERBS_I: &[(&str, &str)] = &[("run", "runs"), ("sleep", "sleeps"), ("jump", "jumps"), ("sing", "sings")];
const ADJS: &[&str] = &["small", "big", "red", "old", "happy"];
const DET_SG: &[&str] = &["the", "a", "one", "this"];
const DET_PL: &[&str] = &["the", "two", "some", "these"];

/// The character vocabulary: id `i` is the `i`-th char of [`Vocab::as_string`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    /// The vocabulary of this corpus: separator, space, punctuation, digits, then the letters
    /// that the grammar uses, in sorted order.
    pub fn standard() -> Self {
        let mut letters: Vec<char> = NOUNS
            .iter()
            .flat_map(|(a, b)| [*a, *b])
            .chain(VERBS_T.iter().flat_map(|(a, b)| [*a, *b]))
            .chain(VERBS_I.iter().flat_map(|(a, b)| [*a, *b]))
            .chain(ADJS.iter().copied())
            .chain(DET_SG.iter().copied())
            .chain(DET_PL.iter().copied())
            .chain(["that", "is", "are"])
            .flat_map(|w| w.chars())
            .collect();
        letters.sort_unstable();
        letters.dedup();
        let mut chars: Vec<char> = vec![SEPARATOR, ' ', '.', ';', '+', '-', '='];
        chars.extend('0'..='9');
        chars.extend(letters);
        Self { chars }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty (never, for [`Vocab::standard`]).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The symbols in id order.
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// The symbols in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<u32> {
        self.chars.iter().position(|&x| x == c).map(|i| i as u32)
    }

    /// Encodes `text`; `None` if a character is outside the vocabulary.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        text.chars().map(|c| self.id(c)).collect()
    }

    /// Decodes ids (ids out of range become `?`).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.chars.get(i as usize).copied().unwrap_or('?')).collect()
    }
}

/// A noun phrase with its number: (text, plural?).
fn noun_phrase(r: &mut SplitMix64, plural: bool) -> String {
    let det = if plural { r.pick(DET_PL) } else { r.pick(DET_SG) };
    let (sg, pl) = *r.pick(NOUNS);
    let noun = if plural { pl } else { sg };
    if r.chance(0.35) {
        format!("{det} {} {noun}", r.pick(ADJS))
    } else {
        format!("{det} {noun}")
    }
}

fn verb(pair: (&'static str, &'static str), plural_subject: bool) -> &'static str {
    if plural_subject {
        pair.0
    } else {
        pair.1
    }
}

/// One grammatical sentence (without separator).
pub fn sentence(r: &mut SplitMix64) -> String {
    let pl = r.chance(0.5);
    let subj = noun_phrase(r, pl);
    match r.below(4) {
        0 | 1 => {
            let obj_pl = r.chance(0.5);
            let obj = noun_phrase(r, obj_pl);
            format!("{subj} {} {obj} .", verb(*r.pick(VERBS_T), pl))
        }
        2 => {
            // Relative clause with an attractor of the other number most of the time.
            let inner_pl = if r.chance(0.7) { !pl } else { pl };
            let inner = noun_phrase(r, inner_pl);
            let rel = verb(*r.pick(VERBS_T), pl);
            let main = verb(*r.pick(VERBS_I), pl);
            format!("{subj} that {rel} {inner} {main} .")
        }
        _ => {
            let cop = if pl { "are" } else { "is" };
            format!("{subj} {cop} {} .", r.pick(ADJS))
        }
    }
}

/// One arithmetic fact such as `12+7=19;` or `19-7=12;`.
pub fn fact(r: &mut SplitMix64) -> String {
    let a = r.below(50);
    let b = r.below(50);
    if r.chance(0.6) {
        format!("{a}+{b}={};", a + b)
    } else {
        let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
        format!("{hi}-{lo}={};", hi - lo)
    }
}

/// Generates whole lines (75% sentences, 25% facts), each ending in [`SEPARATOR`], until at
/// least `min_chars` characters exist.
pub fn generate(seed: u64, min_chars: usize) -> String {
    let mut r = SplitMix64::new(seed);
    let mut out = String::with_capacity(min_chars + 64);
    while out.len() < min_chars {
        let line = if r.chance(0.75) { sentence(&mut r) } else { fact(&mut r) };
        out.push_str(&line);
        out.push(SEPARATOR);
    }
    out
}

/// An agreement probe: a prefix ending just before the main verb of a relative-clause
/// sentence, the correct verb form and the wrong one (e.g. `"the cats that see a dog "`,
/// `"run"`, `"runs"`). The attractor noun always has the other number.
#[derive(Clone, Debug)]
pub struct AgreementProbe {
    /// Text up to and including the space before the main verb (starts after a separator).
    pub prefix: String,
    /// Correctly agreeing continuation.
    pub good: String,
    /// Wrongly agreeing continuation.
    pub bad: String,
}

/// `n` agreement probes from `seed`.
pub fn agreement_probes(seed: u64, n: usize) -> Vec<AgreementProbe> {
    let mut r = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let pl = r.chance(0.5);
            let subj = noun_phrase(&mut r, pl);
            let rel = verb(*r.pick(VERBS_T), pl);
            let inner = noun_phrase(&mut r, !pl);
            let main = *r.pick(VERBS_I);
            AgreementProbe {
                prefix: format!("{SEPARATOR}{subj} that {rel} {inner} "),
                good: format!("{} ", verb(main, pl)),
                bad: format!("{} ", verb(main, !pl)),
            }
        })
        .collect()
}

/// `n` addition prompts such as `"\n12+7="` with their answers (`"19;"`).
pub fn sum_probes(seed: u64, n: usize) -> Vec<(String, String)> {
    let mut r = SplitMix64::new(seed ^ 0x5eed);
    (0..n)
        .map(|_| {
            let a = r.below(50);
            let b = r.below(50);
            (format!("{SEPARATOR}{a}+{b}="), format!("{};", a + b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_vocab() {
        let a = generate(TRAIN_SEED, 5000);
        let b = generate(TRAIN_SEED, 5000);
        assert_eq!(a, b);
        let h = generate(HELDOUT_SEED, 5000);
        assert_ne!(a[..200], h[..200]);
        let v = Vocab::standard();
        assert!(v.len() <= 48, "vocab {} too big", v.len());
        assert!(v.encode(&a).is_some() && v.encode(&h).is_some());
        assert_eq!(v.id(SEPARATOR), Some(0));
        for p in agreement_probes(PROBE_SEED, 50) {
            assert!(v.encode(&(p.prefix.clone() + &p.good + &p.bad)).is_some());
            assert_ne!(p.good, p.bad);
        }
        for (p, ans) in sum_probes(PROBE_SEED, 20) {
            assert!(v.encode(&(p + &ans)).is_some());
        }
        // Agreement holds in generated text: "cats" never takes "sees"-style singular after it.
        assert!(!a.contains("the cats sees") && !a.contains("a cat see "));
    }

    #[test]
    fn arithmetic_is_correct() {
        let mut r = SplitMix64::new(3);
        for _ in 0..200 {
            let f = fact(&mut r);
            let f = f.trim_end_matches(';');
            let (lhs, rhs) = f.split_once('=').unwrap();
            let rhs: i64 = rhs.parse().unwrap();
            let v = if let Some((a, b)) = lhs.split_once('+') {
                a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap()
            } else {
                let (a, b) = lhs.split_once('-').unwrap();
                a.parse::<i64>().unwrap() - b.parse::<i64>().unwrap()
            };
            assert_eq!(v, rhs);
        }
    }
}
