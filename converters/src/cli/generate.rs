//! `mote generate`: text generation through the runtime's allocation-free loop.

use crate::{host, tokenizer};
use anyhow::{anyhow, Result};
use clap::Args;
use mote::generate::{Generator, Sampler};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `mote generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A .mote language model with a decode_step entry.
    pub model: PathBuf,
    /// Text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_new: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens when sampling.
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
    /// PRNG seed (same seed, same text, on every target).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Generates `max_new` tokens after `prompt`; returns the generated text.
pub fn complete(
    bytes: &[u8],
    prompt: &str,
    max_new: usize,
    sampler: &mut Sampler,
    mut on_text: impl FnMut(&str),
) -> Result<String> {
    let model = mote::Model::parse(bytes)?;
    let tok = tokenizer::of_model(&model)?;
    let ids = tok.encode(prompt)?;
    if ids.is_empty() {
        return Err(anyhow!("the prompt is empty"));
    }
    let mut mem = host::Memory::for_model(&model);
    let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let mut generator = Generator::new(&mut session)
        .map_err(|_| anyhow!("the model has no decode_step entry (convert it without --no-decode)"))?;
    let mut out = String::new();
    let capacity = model
        .metadata("mote.dims")
        .and_then(|d| crate::convert::parse_bounds(d).ok())
        .and_then(|b| b.values().next().copied())
        .unwrap_or(usize::MAX);
    let room = capacity.saturating_sub(ids.len());
    if max_new > room {
        return Err(anyhow!("prompt ({} tokens) + --max-new {max_new} exceeds the model's context of {capacity}; lower --max-new to {room}", ids.len()));
    }
    let mut err = None;
    generator.generate(&ids, max_new, sampler, |t| match tok.decode(&[t]) {
        Ok(s) => {
            on_text(&s);
            out.push_str(&s);
            true
        }
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let bytes = host::read_model(&a.model)?;
    let mut sampler = if a.temperature == 0.0 {
        Sampler::greedy()
    } else {
        Sampler::top_k(a.temperature, a.top_k, a.seed)
            .map_err(|_| anyhow!("--temperature must be >= 0 and --top-k in 1..={}", mote::generate::MAX_TOP_K))?
    };
    print!("{}", a.prompt);
    complete(&bytes, &a.prompt, a.max_new, &mut sampler, |s| {
        print!("{s}");
        let _ = std::io::stdout().flush();
    })?;
    println!();
    Ok(())
}
