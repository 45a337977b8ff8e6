//! Diffusion models on the device: the sampling run the firmware makes (DDIM, η = 0, from the
//! flash request's seed, then `decode` for latent diffusion) and the same run on the host
//! runtime, to compare bit for bit.

use super::Request;
use crate::host;
use anyhow::{anyhow, bail, Result};
use mote::diffusion::{self, Condition, Method, Schedule, StepCounts};
use mote::Model;

/// Steps when the request names none and the model lists none (an undistilled teacher).
pub const DEFAULT_STEPS: usize = 4;

/// The sampling request for `model`, or None when it is not a diffusion model. Errors name
/// what is wrong with the flash request (unsupported steps, guidance without a class, ...).
pub fn plan(model: &Model<'_>, req: &Request) -> Result<Option<diffusion::Request>> {
    let Ok(schedule) = Schedule::of_model(model) else {
        if req.steps.is_some() || req.class.is_some() || req.guidance.is_some() {
            bail!("--steps, --class and --guidance apply to diffusion models; this model has no noise schedule");
        }
        return Ok(None);
    };
    let steps = req.steps.unwrap_or(match schedule.step_counts() {
        StepCounts::Listed { counts, .. } => counts[0] as usize,
        StepCounts::UpTo(max) => DEFAULT_STEPS.min(max as usize),
    });
    let condition = match (req.class, req.guidance) {
        (None, None) => Condition::Unconditional,
        (Some(c), None) => Condition::Class(c),
        (Some(class), Some(scale)) => Condition::Guided { class, scale },
        (None, Some(_)) => bail!("--guidance needs --class: guidance steers towards a class"),
    };
    let request = diffusion::Request { method: Method::Ddim { eta: 0.0 }, steps, seed: req.seed, condition };
    // The host run below reports any error with the runtime's own message first.
    Ok(Some(request))
}

/// The sample the host runtime draws for `request` (what the firmware must reproduce), then,
/// for latent diffusion models, its decoding by the `decode` entry (of the sample's first
/// values, as many as `decode` takes).
pub fn host_sample(model: &Model<'_>, request: &diffusion::Request) -> Result<Vec<Vec<f32>>> {
    let entry = model.entry_by_name("denoise").or_else(|_| model.entry_by_name("forward"))?;
    let n = model.tensor(model.entry_input(entry, 0)?)?.desc.shape.numel();
    let mut mem = host::Memory::for_model(model);
    let mut session = mote::Session::new(model, &mut mem.arena, &mut mem.state)?;
    let mut x = vec![0f32; n];
    diffusion::sample(&mut session, request, &mut x).map_err(|e| anyhow!("cannot sample: {e}"))?;
    let mut outputs = vec![x];
    if let Ok(decode) = model.entry_by_name("decode") {
        let k = model.tensor(model.entry_input(decode, 0)?)?.desc.shape.numel();
        let z = outputs[0].get(..k).ok_or_else(|| anyhow!("'decode' takes {k} values; a sample has {n}"))?;
        session.set_input_f32(decode, 0, z)?;
        session.run(decode)?;
        let out = session.output(decode, 0)?;
        outputs.push((0..out.desc.shape.numel()).map(|i| out.get(i)).collect());
    }
    Ok(outputs)
}

/// `MOTE_STEPS`, `MOTE_CLASS`, `MOTE_GUIDANCE` for the firmware build (empty: not set).
pub fn env(request: Option<&diffusion::Request>) -> [(&'static str, String); 3] {
    let (steps, class, guidance) = match request.map(|r| (r.steps, r.condition)) {
        None => (String::new(), String::new(), String::new()),
        Some((steps, Condition::Unconditional)) => (steps.to_string(), String::new(), String::new()),
        Some((steps, Condition::Class(c))) => (steps.to_string(), c.to_string(), String::new()),
        Some((steps, Condition::Guided { class, scale })) => {
            (steps.to_string(), class.to_string(), format!("{scale:?}"))
        }
    };
    [("MOTE_STEPS", steps), ("MOTE_CLASS", class), ("MOTE_GUIDANCE", guidance)]
}
