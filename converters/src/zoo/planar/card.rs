//! The planar-flow model card (`card.md`): data, architecture, training objective and the
//! candle figures, with the runtime section (measured by the CLI) appended.
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::planar::PlanarReport) -> anyhow::Result<()> {
//! mote_converters::zoo::planar::write_planar_card(std::path::Path::new("models/planar"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::train::PlanarReport;
use crate::zoo::coupling::train::{BASELINE_SEED, FLOOR_SEED, LATENT_SEED, TEST_SEED, TRAIN_SEED};

/// Renders the card text (without writing it).
pub fn render_planar_card(r: &PlanarReport, extra_markdown: &str) -> String {
    let o = &r.options;
    let c = &o.config;
    let mut s = String::new();
    let _ = writeln!(s, "# planar — planar normalizing flow on two moons\n");
    let _ = writeln!(
        s,
        "A planar flow (Rezende & Mohamed, 2015) trained from scratch in candle by `mote-converters` (zoo) and \
         exported to ONNX by the same code in both directions. The flow is defined generatively, `x = f_K ∘ … ∘ \
         f_1(z)`, `z ~ N(0, I)`, `f(v) = v + û·tanh(wᵀv + b)`:\n\n\
         - `inverse.onnx` (`z [n,2]` → `x [n,2]`, sampling) is the cheap direction: K planar layers;\n\
         - `forward.onnx` (`x [n,2]` → `z [n,2]`, `log_prob [n,1]`) inverts every layer with {} unrolled Newton \
         steps on the scalar equation `t + c·tanh(t) = wᵀy + b` (`t = wᵀv + b`, `c = wᵀû`), then `v = y − \
         û·tanh(t)`; `log_prob = log N(z; 0, I) − Σ_k log(1 + c_k·(1 − tanh²(t_k)))` (ONNX `Log`).\n\n\
         Both become entry points `forward` and `inverse` of one `.mote` file whose layer parameters are \
         stored once.\n",
        c.newton_steps
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "The coupling flows' data: two moons (`zoo::toy2d::two_moons`), noise σ = {} before standardisation by \
         the analytic mean and standard deviations. Training: {} points (seed {TRAIN_SEED:#x}); held-out test: \
         {} points (seed {TEST_SEED:#x}, committed as `data/test.npy`). Samples are scored on latents drawn by \
         `mote::rng::Rng::gaussian` (seed {LATENT_SEED:#x}); the Gaussian baseline samples with seed \
         {BASELINE_SEED:#x}; a fresh data draw (seed {FLOOR_SEED:#x}) gives the metric's noise floor.\n",
        o.noise, o.train_points, o.test_points
    );
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| layers | K = {} planar layers, `h = tanh` |", c.layers);
    let _ = writeln!(
        s,
        "| invertibility | `û = u + (m(wᵀu) − wᵀu)·w/‖w‖²`, `m(a) = −1 + softplus(a)`, so `c = wᵀû > −1` and \
         `det ∂f/∂v = 1 + c·(1 − tanh²) > 0` |"
    );
    let _ = writeln!(
        s,
        "| layer inverse | {} Newton steps from `t₀ = r/(1 + c)` (between 0 and the root on the side where Newton \
         on `t + c·tanh t` converges monotonically, for every `c > −1`) |",
        c.newton_steps
    );
    let _ = writeln!(
        s,
        "| parameters | {} trainable (`u`, `w`, `b` per layer); exported per layer: `w`, `b`, `û`, `c`, `1 + c`, \
         `1/(1 + c)` |",
        r.params
    );
    let _ = writeln!(s, "| exported batch bound | n ≤ {} (`--dim n={}`) |\n", c.max_batch, c.max_batch);
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "Objective: exact maximum likelihood of the data, i.e. the mean of `log_prob` of the `forward` direction \
         (the density needs the inverse of every layer). All Newton steps but the last run on detached values; \
         the last step, taken from the converged iterate, carries the gradient, which is then the \
         implicit-function gradient `∂t/∂r = 1/(1 + c·sech² t)`; the values are those of the full unrolled \
         iteration in the ONNX graph. {} AdamW steps of {} points (lr {} with {} warm-up steps then cosine to \
         10%, weight decay {}), seed {}: {:.0} s wall. Final smoothed train NLL {:.4} nats/dim.\n",
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
    let _ = writeln!(
        s,
        "| Newton residual: max abs(t + c·tanh t − r) / (1 + abs r) after {} steps (all layers, test set) | {:.1e} |",
        c.newton_steps, r.newton_residual
    );
    let _ =
        writeln!(s, "| tract (both ONNX graphs) vs candle, max-abs on golden | {:.1e} |\n", r.onnx_vs_candle_max_abs);
    let _ = writeln!(
        s,
        "Golden files (`golden/`): `x.npy` (first {n} test points) with candle's `z.npy` and `log_prob.npy`; \
         `latent.npy` (the first {n} latents of seed {LATENT_SEED:#x}) with candle's `sample.npy` = inverse. \
         Written by `mote zoo train planar` from the trained candle model.\n",
        n = c.max_batch
    );
    s.push_str(extra_markdown);
    s
}

/// Writes `card.md` in `dir`.
pub fn write_planar_card(dir: &Path, r: &PlanarReport, extra_markdown: &str) -> Result<()> {
    let p = dir.join("card.md");
    std::fs::write(&p, render_planar_card(r, extra_markdown)).with_context(|| format!("writing {}", p.display()))
}
