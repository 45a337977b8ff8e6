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

/// Masked-token evaluation of an MLM over held-out examples.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MlmEval {
    /// Fraction of masked positions whose argmax is the original token.
    pub accuracy: f64,
    /// Mean cross-entropy at masked positions (nats).
    pub loss: f64,
    /// Masked positions scored.
    pub positions: usize,
    /// Argmax at every masked position, in row-major order.
    #[serde(skip)]
    pub predictions: Vec<usize>,
}

/// Scores `forward` of a `.mote` MLM: `inputs` are its entry inputs as `[N, S]` integer
/// arrays (one row per example), `labels` `[N, S]` holds the original token at masked
/// positions and a negative value elsewhere.
pub fn mlm_eval(bytes: &[u8], inputs: &[Array], labels: &Array) -> Result<MlmEval> {
    let Data::I64(labels_v) = &labels.data else { bail!("labels must be integers") };
    let [n, s] = labels.shape[..] else { bail!("labels must be [N, S], got {:?}", labels.shape) };
    let mut rows = Vec::new();
    for a in inputs {
        let Data::I64(v) = &a.data else { bail!("MLM inputs must be integers") };
        if a.shape != labels.shape {
            bail!("input shape {:?} differs from the labels' {:?}", a.shape, labels.shape);
        }
        rows.push(v);
    }
    let (mut hits, mut total) = (0usize, 0f64);
    let mut predictions = Vec::new();
    for i in 0..n {
        let ins: Vec<Array> = rows.iter().map(|v| Array::i64(vec![1, s], v[i * s..(i + 1) * s].to_vec())).collect();
        let logits = host::run(bytes, "forward", &ins)?.remove(0).to_f32();
        let vocab = logits.len() / s;
        for (p, &target) in labels_v[i * s..(i + 1) * s].iter().enumerate() {
            if target < 0 {
                continue;
            }
            let l = &logits[p * vocab..(p + 1) * vocab];
            let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = max as f64 + l.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
            total += lse - l[target as usize] as f64;
            let argmax = l.iter().enumerate().fold(0, |best, (k, &v)| if v > l[best] { k } else { best });
            hits += usize::from(argmax == target as usize);
            predictions.push(argmax);
        }
    }
    let positions = predictions.len();
    Ok(MlmEval {
        accuracy: hits as f64 / positions.max(1) as f64,
        loss: total / positions.max(1) as f64,
        positions,
        predictions,
    })
}
