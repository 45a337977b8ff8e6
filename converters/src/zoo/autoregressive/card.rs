//! The model card (`card.md`) of an autoregressive flow (MAF, IAF, distilled IAF student).
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::autoregressive::FlowReport) -> anyhow::Result<()> {
//! mote_converters::zoo::autoregressive::write_flow_card(std::path::Path::new("models/maf"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::data;
use super::train::FlowReport;
use super::FlowKind;

/// Renders the card text (without writing it); `extra_markdown` (the runtime section) is
/// appended.
pub fn render_flow_card(r: &FlowReport, extra_markdown: &str) -> String {
    let c = &r.config;
    let o = &r.options;
    let mut s = String::new();
    let title = match (r.family.as_str(), c.kind) {
        ("pwn", _) => {
            "pwn — IAF student distilled from the MAF teacher (Parallel-WaveNet probability-density distillation)"
        }
        (_, FlowKind::Maf) => "maf — masked autoregressive flow",
        (_, FlowKind::Iaf) => "iaf — inverse autoregressive flow (maximum likelihood)",
    };
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "Trained from scratch in candle by `mote-converters` (zoo, `mote zoo train {}`) and exported by the same \
         layer code as two ONNX graphs over the same weights: `forward.onnx` (`x [n, {d}]` → `z [n, {d}]`, \
         `log_prob [n, 1]`, the exact log-likelihood) and `inverse.onnx` (`z [n, {d}]` → `x [n, {d}]`, a sample \
         when `z ~ N(0, I)`). `model.int8.mote` holds both as the entries `forward` and `inverse`; shared weights \
         are stored once.\n",
        r.family,
        d = c.dim
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "`moons8` (procedural, `converters/src/zoo/autoregressive/data.rs`): coordinates 0–1 are standardised two \
         moons (noise {}), coordinates 2–7 nonlinear functions of them and of each other plus N(0, {}²) noise \
         (`x2 = 0.8·x0 − 0.6·x1`, `x3 = x0·x1`, `x4 = sin 1.5·x0`, `x5 = x1² − 1`, `x6 = (x2 + x4)/2`, \
         `x7 = tanh 2·x1 − x3/2`). {} training points (seed {:#x}), {} test points for the NLL (seed {:#x}), \
         {} held-out points for the energy distance (seed {:#x}). D = 8 makes the sequential direction cost \
         8 MADE passes per layer.\n",
        data::MOONS_NOISE,
        data::EXTRA_NOISE,
        o.train_points,
        data::TRAIN_SEED,
        o.eval_points,
        data::TEST_SEED,
        o.eval_points,
        data::HELDOUT_SEED
    );
    let _ = writeln!(s, "## Architecture\n");
    let (one, seq) = match c.kind {
        FlowKind::Maf => ("forward (density)", "inverse (sampling)"),
        FlowKind::Iaf => ("inverse (sampling)", "forward (density of arbitrary x)"),
    };
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| layers | {} affine autoregressive layers `x_i = z_i·exp(α_i) + μ_i`, order reversed in odd layers |",
        c.layers
    );
    let _ = writeln!(
        s,
        "| conditioner | MADE on the {} side: {} masked ReLU layers of {}, masked heads for μ and α; \
         α = {}·tanh(raw/{}) |",
        if c.kind == FlowKind::Maf { "data" } else { "latent" },
        c.hidden_layers,
        c.hidden,
        c.alpha_bound,
        c.alpha_bound
    );
    let _ = writeln!(s, "| one pass per layer | {one} |");
    let _ = writeln!(s, "| {} passes per layer (unrolled in the ONNX graph) | {seq} |", c.dim);
    let _ = writeln!(
        s,
        "| parameters | {} stored (masks baked in: masked weights are exact zeros), {} effective |\n",
        r.params, r.effective_params
    );
    let _ = writeln!(s, "## Training\n");
    match &r.distill {
        Some(d) => {
            let _ = writeln!(
                s,
                "Probability-density distillation: the teacher is the MAF in `models/{}` (its `forward.onnx` had \
                 FNV-1a 64 `{}`), frozen. Each step draws {} latents z ~ N(0, I), samples x = student(z) in one \
                 pass with log q(x) from the same pass, and minimises KL(q ‖ p_teacher) = E[log q(x) − log p(x)] \
                 (teacher density in one MAF pass). Over the first {:.0}% of the steps the teacher term is \
                 annealed, E[log q − β log p] with β rising from 0.05 to 1: without it the student collapsed onto \
                 one region of the moons early (reverse KL is mode-seeking) and stayed there. {} steps, AdamW lr \
                 {} (warm-up {}, cosine), {:.0} s on CPU; final KL {:.4} nats/dim (β = 1, fresh latents).\n",
                d.teacher,
                d.teacher_forward_fnv64,
                o.batch_size,
                100.0 * o.anneal_fraction,
                o.steps,
                o.lr,
                o.warmup,
                r.train_seconds,
                d.kl_per_dim
            );
        }
        None => {
            let _ = writeln!(
                s,
                "Maximum likelihood on the training set: {} steps of {} points, AdamW lr {} (warm-up {}, cosine), \
                 {:.0} s on CPU; final smoothed train NLL {:.4} nats/dim.{}\n",
                o.steps,
                o.batch_size,
                o.lr,
                o.warmup,
                r.train_seconds,
                r.final_train_loss,
                if c.kind == FlowKind::Iaf {
                    " The IAF's density of data is its sequential direction, so every training step unrolls 8 \
                     passes per layer (and back-propagates through them)."
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(s, "## Metrics in candle\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| test NLL, nats/dim: model / fitted full-covariance Gaussian | {:.4} / {:.4} |",
        r.test_nll_per_dim, r.gaussian_nll_per_dim
    );
    let _ = writeln!(
        s,
        "| energy distance to held-out: model samples / Gaussian samples / a second data sample (floor) | {:.4} / \
         {:.4} / {:.4} |",
        r.energy_candle, r.energy_gaussian, r.energy_floor
    );
    if let Some(d) = &r.distill {
        let _ = writeln!(
            s,
            "| teacher: test NLL / energy distance of its samples | {:.4} / {:.4} |",
            d.teacher_test_nll_per_dim, d.teacher_energy_candle
        );
        let _ = writeln!(
            s,
            "| teacher NLL of student samples / of its own samples (nats/dim) | {:.4} / {:.4} |",
            d.teacher_nll_of_student_samples, d.teacher_nll_of_teacher_samples
        );
    }
    let _ = writeln!(
        s,
        "| exported ONNX in tract vs candle (z, log_prob, inverse), max-abs | {:.2e} |\n",
        r.onnx_vs_candle_max_abs
    );
    let _ = writeln!(
        s,
        "`scatter.png`: coordinates 0–1 of held-out data (grey), of candle samples (blue), and of the latent \
         z = forward(test) (purple; it should look like N(0, I)). Energy distance: 2E|X−Y| − E|X−X'| − E|Y−Y'| \
         in 8-D between {n} samples and {n} held-out points (V-statistic); it is zero only for equal \
         distributions, and two independent data samples of this size give the floor above.\n",
        n = o.eval_points
    );
    s.push_str(extra_markdown);
    if !extra_markdown.is_empty() && !extra_markdown.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Writes `card.md` to `out_dir`.
pub fn write_flow_card(out_dir: &Path, r: &FlowReport, extra_markdown: &str) -> Result<()> {
    let path = out_dir.join("card.md");
    std::fs::write(&path, render_flow_card(r, extra_markdown)).with_context(|| format!("writing {}", path.display()))
}
