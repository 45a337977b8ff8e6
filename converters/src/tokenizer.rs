//! The character tokenizer that zoo language models carry in their metadata
//! (`mote.tokenizer = "chars:<alphabet>"`: token id `i` is the `i`-th character).

use anyhow::{anyhow, bail, Result};

/// Maps characters to token ids and back.
#[derive(Debug, Clone, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
}

impl CharTokenizer {
    /// Parses the metadata value.
    pub fn from_metadata(value: &str) -> Result<Self> {
        let alphabet = value
            .strip_prefix("chars:")
            .ok_or_else(|| anyhow!("unsupported tokenizer '{value}' (expected 'chars:<alphabet>')"))?;
        Ok(CharTokenizer { chars: alphabet.chars().collect() })
    }

    /// Token ids of `text`; characters outside the alphabet are errors.
    pub fn encode(&self, text: &str) -> Result<Vec<i32>> {
        text.chars()
            .map(|c| {
                self.chars.iter().position(|&x| x == c).map(|i| i as i32).ok_or_else(|| {
                    let shown: String = self.chars.iter().filter(|c| !c.is_control()).collect();
                    anyhow!("character {c:?} is not in the model's vocabulary: {shown:?}")
                })
            })
            .collect()
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[i32]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                self.chars.get(i as usize).copied().ok_or_else(|| anyhow!("token id {i} is outside the vocabulary"))
            })
            .collect()
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }
}

/// Reads the tokenizer of a model, with a clear error when it has none.
pub fn of_model(model: &mote::Model<'_>) -> Result<CharTokenizer> {
    match model.metadata("mote.tokenizer") {
        Some(v) => CharTokenizer::from_metadata(v),
        None => bail!("the model carries no tokenizer (metadata 'mote.tokenizer'); it is not a text model"),
    }
}
