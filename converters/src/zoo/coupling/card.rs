//! The coupling-flow model card (`card.md`): data, architecture, training and the candle
//! figures, with the runtime section (measured by the CLI) appended.
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::coupling::FlowReport) -> anyhow::Result<()> {
//! mote_converters::zoo::coupling::write_flow_card(std::path::Path::new("models/nice"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::train::{FlowReport, BASELINE_SEED, FLOOR_SEED, LATENT_SEED, TEST_SEED, TRAIN_SEED};
use super::CouplingKind;

/// Renders the card text (without writing it).
pub fn render_flow_card(r: &FlowReport, extra_markdown: &str) -> String {
    let c = &r.config;
    let o = &r.options;
    let mut s = String::new();
    let (what, coupling) = match c.kind {
        CouplingKind::Nice => (
            "NICE (additive coupling + diagonal scaling)",
            "additive coupling `b' = b + t(a)` (unit Jacobian); after the last coupling a learned diagonal \
             scaling `z = h ⊙ scale`, so log-det = Σ log scale (a constant)",
        ),
        CouplingKind::RealNvp => (
            "RealNVP (affine coupling)",
            "affine coupling `b' = b ⊙ exp(s(a)) + t(a)` with `s = σ·tanh(raw)` (σ learned per layer), \
             log-det = Σ s",
        ),
    };
    let _ = writeln!(s, "# {} — {what} on two moons\n", r.family);
    let _ = writeln!(
        s,
        "A normalizing flow trained from scratch in candle by `mote-converters` (zoo) by maximum likelihood \
         under a standard normal prior, and exported to ONNX by the same code in both directions: \
         `forward.onnx` (`x [n,2]` → `z [n,2]`, `log_prob [n,1]` = log N(z; 0, I) + log|det ∂z/∂x|) and \
         `inverse.onnx` (`z [n,2]` → `x [n,2]`). Both become entry points `forward` and `inverse` of one \
         `.mote` file whose coupling nets are stored once.\n"
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "Two moons (`zoo::toy2d::two_moons`), noise σ = {} before standardisation by the analytic mean and \
         standard deviations. Training: {} points (seed {TRAIN_SEED:#x}); held-out test: {} points (seed \
         {TEST_SEED:#x}, committed as `data/test.npy`). Samples are scored on latents drawn by \
         `mote::rng::Rng::gaussian` (seed {LATENT_SEED:#x}); the Gaussian baseline samples with seed \
         {BASELINE_SEED:#x}; a fresh data draw (seed {FLOOR_SEED:#x}) gives the metric's noise floor.\n",
        o.noise, o.train_points, o.test_points
    );
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| couplings | {} layers, the conditioning coordinate alternates (x₀, x₁, x₀, …) |", c.layers);
    let _ = writeln!(s, "| transform | {coupling} |");
    let _ = writeln!(
        s,
        "| coupling net | 1 → {h} → {h} → {} (ReLU) |",
        if c.kind == CouplingKind::Nice { 1 } else { 2 },
        h = c.hidden
    );
    let _ = writeln!(s, "| parameters | {} |", r.params);
    let _ = writeln!(s, "| exported batch bound | n ≤ {} (`--dim n={}`) |\n", c.max_batch, c.max_batch);
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "{} AdamW steps of {} points (lr {} with {} warm-up steps then cosine to 10%, weight decay {}), \
         seed {}: {:.0} s wall. Final smoothed train NLL {:.4} nats/dim.\n",
        o.steps, o.batch_size, o.lr, o.warmup, o.weight_decay, o.seed, r.train_seconds, r.final_train_nll
    );
    let _ = writeln!(s, "| step | train NLL (nats/dim, smoothed) |\n|---|---|");
    for (step, l) in r.loss_curve.iter().step_by(4) {
        let _ = writeln!(s, "| {step} | {l:.4} |");
    }
    let _ = writeln!(s, "\n## Metrics in candle (held-out)\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(s, "| test NLL, nats/dim: flow / Gaussian baseline | {:.4} / {:.4} |", r.test_nll, r.baseline_nll);
    let _ = writeln!(
        s,
        "| energy distance to the test set: flow samples / Gaussian samples / fresh data (floor) | {:.5} / {:.5} / {:.5} |",
        r.energy_candle, r.energy_baseline, r.energy_floor
    );
    let _ = writeln!(s, "| max abs inverse(forward(x)) − x | {:.1e} |", r.invertibility_candle);
    let _ =
        writeln!(s, "| tract (both ONNX graphs) vs candle, max-abs on golden | {:.1e} |\n", r.onnx_vs_candle_max_abs);
    let _ = writeln!(
        s,
        "Golden files (`golden/`): `x.npy` (first 64 test points) with candle's `z.npy` and `log_prob.npy`; \
         `latent.npy` (the first 64 latents of seed {LATENT_SEED:#x}) with candle's `sample.npy` = inverse. \
         Written by `mote zoo train {}` from the trained candle model.\n",
        r.family
    );
    s.push_str(extra_markdown);
    s
}

/// Writes `card.md` in `dir`.
pub fn write_flow_card(dir: &Path, r: &FlowReport, extra_markdown: &str) -> Result<()> {
    let p = dir.join("card.md");
    std::fs::write(&p, render_flow_card(r, extra_markdown)).with_context(|| format!("writing {}", p.display()))
}
