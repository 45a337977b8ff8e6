//! Task metrics computed with the host runtime (language-model loss and agreement).

use crate::array::{Array, Data};
use crate::host;
use anyhow::{bail, Result};

/// Next-token evaluation of a causal LM over held-out windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LmEval {
    /// Mean cross-entropy in nats per token.
    pub loss: f64,
    /// Positions scored.
    pub positions: usize,
    /// Argmax prediction at every position, row-major.
    #[serde(skip)]
    pub predictions: Vec<usize>,
}

/// Scores `forward` of a `.mote` LM on windows `[N, S+1]`: inputs are the first S tokens,
/// targets the last S.
pub fn lm_eval(bytes: &[u8], windows: &Array) -> Result<LmEval> {
    let Data::I64(tokens) = &windows.data else { bail!("held-out windows must be integers") };
    let [n, s1] = windows.shape[..] else { bail!("held-out windows must be [N, S+1], got {:?}", windows.shape) };
    let s = s1 - 1;
    let mut total = 0f64;
    let mut predictions = Vec::with_capacity(n * s);
    for row in tokens.chunks(s1) {
        let input = Array::i64(vec![1, s], row[..s].to_vec());
        let logits = host::run(bytes, "forward", &[input])?.remove(0).to_f32();
        let vocab = logits.len() / s;
        for (p, l) in logits.chunks(vocab).enumerate() {
            let target = row[p + 1] as usize;
            let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = max as f64 + l.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
            total += lse - l[target] as f64;
            let argmax = l.iter().enumerate().fold(0, |best, (i, &v)| if v > l[best] { i } else { best });
            predictions.push(argmax);
        }
    }
    Ok(LmEval { loss: total / (n * s) as f64, positions: n * s, predictions })
}

/// Fraction of positions where two evaluations predict the same next token.
pub fn top1_agreement(a: &LmEval, b: &LmEval) -> f64 {
    let same = a.predictions.iter().zip(&b.predictions).filter(|(x, y)| x == y).count();
    same as f64 / a.predictions.len().max(1) as f64
}
