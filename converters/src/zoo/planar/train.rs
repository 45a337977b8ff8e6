//! Training the planar flow on two moons by maximum likelihood (through the Newton inverses)
//! and writing its artefacts: `forward.onnx`, `inverse.onnx`, `data/test.npy`, `golden/` and
//! `calib/`. The data, seeds and metrics are those of the coupling flows
//! ([`crate::zoo::coupling::train`]), so the families are directly comparable.
//!
//! ```no_run
//! use mote_converters::zoo::planar::{train_planar, write_planar_card, PlanarTrainOptions};
//! let out = std::path::Path::new("models/planar");
//! let report = train_planar(out, &PlanarTrainOptions::default())?;
//! write_planar_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{PlanarConfig, PlanarFlow};
use crate::zoo::coupling::train::{
    latents, max_abs_points, nll_per_dim, write_flow_artefacts, FlowDirections, BASELINE_SEED, FLOOR_SEED, LATENT_SEED,
    TEST_SEED, TRAIN_SEED,
};
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::toy2d::{self, energy_distance, flatten, unflatten, Gaussian2, Point};
use crate::zoo::trainer::{schedule_of, Trainer};

/// Training budget, data and settings. [`PlanarTrainOptions::default`] is the zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanarTrainOptions {
    /// Architecture.
    pub config: PlanarConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Points per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay (0: the planar parameters are all vectors and biases).
    pub weight_decay: f64,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
    /// Two-moons noise (standard deviation before standardisation).
    pub noise: f32,
    /// Training points (a fixed set).
    pub train_points: usize,
    /// Held-out test points (NLL and the energy-distance reference).
    pub test_points: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for PlanarTrainOptions {
    fn default() -> Self {
        Self {
            config: PlanarConfig::default(),
            steps: 5000,
            batch_size: 256,
            lr: 1e-2,
            warmup: 100,
            weight_decay: 0.0,
            seed: 42,
            noise: 0.1,
            train_points: 16384,
            test_points: 2048,
            quiet: false,
        }
    }
}

impl PlanarTrainOptions {
    /// The training set (the coupling flows' two moons, seed [`TRAIN_SEED`]).
    pub fn train_set(&self) -> Vec<Point> {
        toy2d::two_moons(self.train_points, self.noise, TRAIN_SEED)
    }

    /// The held-out test set (seed [`TEST_SEED`]).
    pub fn test_set(&self) -> Vec<Point> {
        toy2d::two_moons(self.test_points, self.noise, TEST_SEED)
    }
}

/// What training measured in candle; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanarReport {
    /// `planar`.
    pub family: String,
    /// Training settings (with the architecture).
    pub options: PlanarTrainOptions,
    /// Trainable scalars (`u`, `w`, `b`: 5 per layer).
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training NLL at the end (nats/dim).
    pub final_train_nll: f64,
    /// `(step, smoothed train NLL nats/dim)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Test NLL of the candle model (nats/dim).
    pub test_nll: f64,
    /// Test NLL of a full-covariance Gaussian fitted on the training set (nats/dim).
    pub baseline_nll: f64,
    /// Energy distance of the candle model's samples (latents from [`LATENT_SEED`]) to the test set.
    pub energy_candle: f64,
    /// Energy distance of the Gaussian baseline's samples to the test set.
    pub energy_baseline: f64,
    /// Energy distance of a fresh data draw to the test set (the metric's noise floor).
    pub energy_floor: f64,
    /// max |inverse(forward(x)) − x| in candle on the test set.
    pub invertibility_candle: f32,
    /// max `|t + c·tanh(t) − r| / (1 + |r|)` after the last Newton step, over layers and test points.
    pub newton_residual: f32,
    /// Max |tract − candle| over the golden outputs of both exported graphs.
    pub onnx_vs_candle_max_abs: f32,
}

impl PlanarReport {
    /// Reads `train_report.json` from the family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn tensor(points: &[Point]) -> Result<Tensor> {
    Ok(Tensor::from_vec(flatten(points), (points.len(), 2), &Device::Cpu)?)
}

/// Candle `(z, log_prob, Newton residual)` of `points`.
pub fn candle_forward(flow: &PlanarFlow, points: &[Point]) -> Result<(Vec<Point>, Vec<f32>, f32)> {
    let (z, lp, check) = flow.forward_with_residual(&tensor(points)?)?;
    Ok((unflatten(&tensor_data(&z)?), tensor_data(&lp)?, check.residual))
}

/// Candle inverse (sampling direction) of `latents`.
pub fn candle_inverse(flow: &PlanarFlow, latents: &[Point]) -> Result<Vec<Point>> {
    Ok(unflatten(&tensor_data(&flow.inverse(&tensor(latents)?)?)?))
}

/// Trains the planar flow and writes its artefacts to `out_dir`.
pub fn train_planar(out_dir: &Path, o: &PlanarTrainOptions) -> Result<PlanarReport> {
    let flow = PlanarFlow::new(o.config, o.seed)?;
    let train = o.train_set();
    let test = o.test_set();

    let mut t = Trainer::new(flow.params(), "planar", schedule_of!(o))?.with_smoothing(0.97, 0.03);
    let mut rng = SplitMix64::new(o.seed ^ 0xba7c);
    for step in 0..o.steps {
        let lr = t.set_lr(step);
        let batch: Vec<Point> = (0..o.batch_size).map(|_| train[rng.below(train.len())]).collect();
        let (_, lp) = flow.forward(&tensor(&batch)?)?;
        let loss = (lp.mean_all()? * -0.5)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    let (train_seconds, final_train_nll, loss_curve) = t.finish("");

    let (z, lp, newton_residual) = candle_forward(&flow, &test)?;
    let back = candle_inverse(&flow, &z)?;
    let samples = candle_inverse(&flow, &latents(o.test_points, LATENT_SEED))?;
    let gauss = Gaussian2::fit(&train);
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &flow, o, &train, &test)?;
    Ok(PlanarReport {
        family: "planar".into(),
        options: o.clone(),
        params: flow.params().count(),
        train_seconds,
        final_train_nll,
        loss_curve,
        test_nll: nll_per_dim(&lp),
        baseline_nll: gauss.nll_per_dim(&test),
        energy_candle: energy_distance(&samples, &test),
        energy_baseline: energy_distance(&gauss.sample(o.test_points, BASELINE_SEED), &test),
        energy_floor: energy_distance(&toy2d::two_moons(o.test_points, o.noise, FLOOR_SEED), &test),
        invertibility_candle: max_abs_points(&back, &test),
        newton_residual,
        onnx_vs_candle_max_abs,
    })
}

/// Writes both ONNX graphs, the test set, golden candle outputs on one batch and calibration
/// batches (as the coupling flows do); returns tract vs candle max-abs over the golden outputs.
fn write_artefacts(
    out: &Path,
    flow: &PlanarFlow,
    o: &PlanarTrainOptions,
    train: &[Point],
    test: &[Point],
) -> Result<f32> {
    let flow_dirs = FlowDirections {
        forward_onnx: flow.export_forward()?,
        inverse_onnx: flow.export_inverse()?,
        forward: &|x| candle_forward(flow, x).map(|(z, lp, _)| (z, lp)),
        inverse: &|z| candle_inverse(flow, z),
    };
    write_flow_artefacts(out, &flow_dirs, flow.config().max_batch, o.seed, train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_learns_and_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_planar_{}", std::process::id()));
        let o = PlanarTrainOptions {
            config: PlanarConfig { layers: 8, ..PlanarConfig::default() },
            steps: 120,
            batch_size: 128,
            warmup: 10,
            train_points: 2048,
            test_points: 256,
            quiet: true,
            ..PlanarTrainOptions::default()
        };
        let r = train_planar(&dir, &o)?;
        assert!(r.test_nll.is_finite(), "{}", r.test_nll);
        let first = r.loss_curve[0].1;
        assert!(r.final_train_nll < first - 0.05, "does not learn: {first} → {}", r.final_train_nll);
        assert!(r.newton_residual < 1e-5, "{}", r.newton_residual);
        assert!(r.invertibility_candle < 1e-4, "{}", r.invertibility_candle);
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        for f in ["forward.onnx", "inverse.onnx", "data/test.npy", "golden/log_prob.npy", "calib/s7.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        super::super::write_planar_card(&dir, &r, "## extra\n")?;
        assert!(std::fs::read_to_string(dir.join("card.md"))?.contains("## extra"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
