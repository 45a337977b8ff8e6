//! The `ddpm2d` model card (`card.md`): data, architecture, parameterisation, training and
//! distillation (candle figures), with the runtime section (the acceptance table, measured by
//! the CLI) appended.
//!
//! ```no_run
//! use mote_converters::zoo::diffusion::{card::write_card, TeacherReport};
//! let dir = std::path::Path::new("models/ddpm2d");
//! write_card(dir, &TeacherReport::read(dir)?, None, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::distill::{DistillOptions, DistillReport, Round};
use super::train::TeacherReport;

/// Renders the card text (without writing it).
pub fn render_card(t: &TeacherReport, d: Option<&DistillReport>, extra_markdown: &str) -> String {
    let o = &t.options;
    let c = &o.config;
    let mut s = String::new();
    let _ = writeln!(s, "# ddpm2d — class-conditional diffusion on two moons, distilled to few steps\n");
    let _ = writeln!(
        s,
        "A v-predicting diffusion model trained from scratch in candle by `mote-converters` (zoo), distilled \
         progressively (Salimans & Ho, 2022) into 4-, 2- and 1-step students, and sampled with classifier-free \
         guidance (Ho & Salimans, 2021) by the runtime's `mote::diffusion::sample`. Every file is one ONNX \
         graph `x [n,2]` f32, `t [n]` int64, `class [n]` int64 → `v [n,2]` whose metadata carries the \
         schedule (`mote.diffusion.alpha_bar`), `mote.diffusion.prediction = v`, `mote.diffusion.null_class = {}` \
         and, for a student, `mote.diffusion.steps`.\n",
        c.null_class()
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "Two moons (`zoo::toy2d::two_moons`, noise σ = {}, standardised), class 0 = upper moon, class 1 = \
         lower moon. Training: {} points; held-out: {} points (`data/test.npy`), the flows' seeds. The single \
         sample-quality metric is the energy distance to the held-out points (`zoo::toy2d::energy_distance`, \
         lower is better); a fresh draw of the data gives its floor. Class accuracy of conditional samples is \
         measured by a 15-nearest-neighbour classifier fitted on the labelled training points.\n",
        o.noise, o.train_points, o.test_points
    );
    let _ = writeln!(s, "## Model\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| schedule | cosine (Nichol & Dhariwal, s = 0.008), T = {} discrete steps, ᾱ_t at u = (t+1)/T, clipped at \
         ᾱ ≥ 1e-5 so ᾱ_{{T−1}} ≈ 0 (x_{{T−1}} is pure noise, as Salimans & Ho require for few-step sampling) |",
        c.timesteps
    );
    let _ = writeln!(
        s,
        "| timestep embedding | a fixed sinusoidal table `[T, {}]` (an initializer gathered by `t`; no Sin/Cos at \
         run time), then Linear → {} |",
        c.time_features, c.hidden
    );
    let _ = writeln!(
        s,
        "| class embedding | learned `[{}, {}]` table; id {} is the null (unconditional) class |",
        c.classes + 1,
        c.hidden,
        c.null_class()
    );
    let _ = writeln!(
        s,
        "| denoiser | e = SiLU(time + class); h = Linear 2 → {h}; {} residual blocks h ← h + W₂·SiLU(W₁·SiLU(h) + P·e); \
         v̂ = Linear {h} → 2 (SiLU(h)) |",
        c.blocks,
        h = c.hidden
    );
    let _ = writeln!(
        s,
        "| parameters | {} trainable; each file also stores the fixed sinusoidal table ({} values) |",
        t.params,
        c.timesteps * c.time_features
    );
    let _ = writeln!(s, "| exported batch bound | n ≤ {} rows per call (`--dim n={}`) |\n", c.max_batch, c.max_batch);
    let _ = writeln!(s, "## Parameterisation: why v\n");
    let _ = writeln!(
        s,
        "The teacher and every student predict v = α·ε − σ·x₀ (α = √ᾱ_t, σ = √(1−ᾱ_t)), so x̂₀ = α·x_t − σ·v̂ and \
         ε̂ = σ·x_t + α·v̂ never divide by a vanishing coefficient. With ε-prediction x̂₀ = (x_t − σ·ε̂)/α: at the \
         first step of a few-step sampler α ≈ 0.003 here, so any error in ε̂ is amplified ~300× in x̂₀, and a \
         1-step student (which must output x̂₀ from pure noise) cannot be expressed at all. The squared error in v \
         weights the x₀ error by 1 + SNR, which stays ≥ 1 at high noise (Salimans & Ho's \"SNR+1\" weighting).\n"
    );
    let _ = writeln!(s, "## Teacher training\n");
    let _ = writeln!(
        s,
        "{} AdamW steps of {} points (lr {} with {} warm-up steps then cosine to 10%, weight decay {}), t uniform \
         in 0..T, class dropped to the null class with probability {} (one network learns the conditional and the \
         unconditional model), seed {}: {:.0} s wall. Final smoothed v-loss {:.4}.\n",
        o.steps,
        o.batch_size,
        o.lr,
        o.warmup,
        o.weight_decay,
        o.label_dropout,
        o.seed,
        t.train_seconds,
        t.final_train_loss
    );
    let _ = writeln!(s, "| step | v-loss (smoothed) |\n|---|---|");
    for (step, l) in t.loss_curve.iter().step_by(4) {
        let _ = writeln!(s, "| {step} | {l:.4} |");
    }
    let _ = writeln!(s);
    let energies: Vec<String> = t.energy_candle.iter().map(|(n, e)| format!("{n} steps {e:.5}")).collect();
    let _ = writeln!(
        s,
        "Candle, unconditional DDIM, energy distance to held-out: {} (floor {:.5}); tract vs candle on the golden \
         batch {:.1e}.\n",
        energies.join(", "),
        t.energy_floor,
        t.onnx_vs_candle_max_abs
    );
    let _ = writeln!(s, "## Progressive distillation\n");
    let _ = writeln!(
        s,
        "Each round halves the step count: a student initialised from its teacher (first the trained model \
         sampled with N₀ DDIM steps, then the previous student) learns to match two deterministic DDIM steps of \
         the teacher, t → t' → t'', with one step t → t'' (the N-step grid t_i = T·(N−i)/N − 1 is every other \
         point of the 2N-step grid). From z_t = α_t·x + σ_t·ε the teacher reaches z_t''; one student DDIM step \
         with prediction x̃ lands on α_t''·x̃ + σ_t''·(z_t − α_t·x̃)/σ_t, so the target is \
         x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t) (x̃ = z_t'' for the last step, t'' = −1), \
         regressed as ṽ = (α_t·z_t − x̃)/σ_t. The teacher steps use exactly the runtime's DDIM update. Label \
         dropout continues, so every student keeps the unconditional path and guidance works on it.\n"
    );
    match d {
        None => {
            let _ = writeln!(s, "Not run yet: `mote zoo distill ddpm2d --to 1`.\n");
        }
        Some(d) => {
            let p = &d.options;
            let _ = writeln!(
                s,
                "N₀ = {}, {} rounds of {} AdamW steps of {} points (lr {}, {} warm-up steps, cosine), seed {}; \
                 total {:.0} s wall. Candle, unconditional DDIM, energy distance to held-out:\n",
                p.from_steps,
                d.rounds.len(),
                p.steps,
                p.batch_size,
                p.lr,
                p.warmup,
                p.seed,
                d.rounds.iter().map(|r| r.train_seconds).sum::<f64>()
            );
            write_rounds_table(&mut s, &d.rounds, 5);
            s.push_str(&grid_sentence(p));
        }
    }
    s.push_str(extra_markdown);
    s
}

/// Writes the distillation table to `s`, a row per round: the student's step count (with its
/// timesteps when the report records them), its loss at the start and the end, the energy distances of the student and of the teacher at the same steps (candle,
/// `digits` decimals) and the exported file, followed by a blank line.
pub fn write_rounds_table(s: &mut String, rounds: &[Round], digits: usize) {
    let _ = writeln!(
        s,
        "| student steps | loss start → end | student | teacher at the same steps | exported |\n|---|---|---|---|---|"
    );
    for r in rounds {
        let exported = r
            .onnx_vs_candle_max_abs
            .map_or("—".to_string(), |e| format!("student{}.onnx (tract vs candle {e:.1e})", r.steps));
        let _ = writeln!(
            s,
            "| {} | {:.1e} → {:.1e} | {:.digits$} | {:.digits$} | {exported} |",
            student_steps(r),
            r.loss_first_last.0,
            r.loss_first_last.1,
            r.energy_candle,
            r.energy_teacher_candle
        );
    }
    let _ = writeln!(s);
}

/// A round's student step count, with its timesteps when the report records them (up to 8).
pub fn student_steps(r: &Round) -> String {
    if r.timesteps.is_empty() || r.timesteps.len() > 8 {
        return r.steps.to_string();
    }
    format!("{} (t = {})", r.steps, r.timesteps.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))
}

/// The card's paragraph on an explicit step grid (empty without one).
pub fn grid_sentence(o: &DistillOptions) -> String {
    if o.grid.is_empty() {
        return String::new();
    }
    format!(
        "The {}-step student steps on an explicit grid, t = {} (stored in its file as `mote.diffusion.grid` and \
         followed by the runtime's sampler), each of its steps learning every teacher step inside it; the rounds \
         after it halve that grid (every other timestep). The grid spends the steps at high noise, where the \
         sample's shape is decided.\n\n",
        o.grid.len(),
        o.grid.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// Writes `card.md` in `dir`.
pub fn write_card(dir: &Path, t: &TeacherReport, d: Option<&DistillReport>, extra_markdown: &str) -> Result<()> {
    let p = dir.join("card.md");
    std::fs::write(&p, render_card(t, d, extra_markdown)).with_context(|| format!("writing {}", p.display()))
}
