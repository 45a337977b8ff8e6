//! `convert`, `inspect`, `run` and `verify`.

use crate::array::Array;
use crate::convert::{self, Calibration, Options};
use crate::emit::dtypes::QuantMode;
use crate::import::Bounds;
use crate::verify::{self, Comparison};
use crate::{host, report};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `mote convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The ONNX model.
    pub onnx: PathBuf,
    /// Output .mote path.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Precision of weights and activations.
    #[arg(long, value_enum, default_value = "f32")]
    pub quant: QuantMode,
    /// Directory of .npy calibration inputs (int8).
    #[arg(long, conflicts_with = "calib_random")]
    pub calib: Option<PathBuf>,
    /// Number of random calibration inputs (int8).
    #[arg(long)]
    pub calib_random: Option<usize>,
    /// Bound of a symbolic dim, e.g. `--dim seq=64` (repeatable).
    #[arg(long = "dim", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Fail if arena + state exceed this (e.g. 256KiB).
    #[arg(long, value_parser = convert::parse_size)]
    pub ram_budget: Option<usize>,
    /// Fail if the file exceeds this (e.g. 1MiB).
    #[arg(long, value_parser = convert::parse_size)]
    pub flash_budget: Option<usize>,
    /// A further entry point from its own ONNX graph, `NAME=model.onnx` (repeatable), e.g.
    /// `--entry inverse=inverse.onnx` for a flow's sampling direction. Same `--dim` bounds;
    /// weights shared with other entries are stored once.
    #[arg(long = "entry", value_parser = parse_entry)]
    pub entries: Vec<(String, PathBuf)>,
    /// Do not add incremental-decoding entries for causal models (a KV-cached `decode_step`;
    /// `encode` too for encoder–decoder models).
    #[arg(long)]
    pub no_decode: bool,
    /// Skip the self-check against tract.
    #[arg(long)]
    pub no_verify: bool,
    /// Cosine-similarity floor of the self-check (default: 0.99999 f32, 0.999 f16, 0.98 int8).
    #[arg(long)]
    pub min_cosine: Option<f32>,
}

fn parse_dim(s: &str) -> std::result::Result<(String, usize), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=MAX (example: --dim seq=64)"))?;
    let v: usize = v.parse().map_err(|_| format!("'{v}' in '{s}' is not a positive integer"))?;
    if k.is_empty() || v == 0 {
        return Err(format!("'{s}' needs a name and a positive maximum"));
    }
    Ok((k.to_string(), v))
}

fn parse_entry(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(format!("'{s}' is not NAME=PATH (example: --entry inverse=inverse.onnx)")),
    }
}

/// Prints a comparison line.
pub fn print_comparison(label: &str, c: &Comparison) {
    println!("{label}: max-abs {:.3e}  max-rel {:.3e}  cosine {:.6}  ({} values)", c.max_abs, c.max_rel, c.cosine, c.n);
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    let bounds: Bounds = a.dims.iter().cloned().collect();
    let calibration = match (&a.calib, a.calib_random) {
        (Some(d), _) => Some(Calibration::Dir(d.clone())),
        (None, Some(n)) => Some(Calibration::Random(n)),
        _ => None,
    };
    let opts =
        Options { quant: a.quant, bounds: bounds.clone(), calibration, decode: !a.no_decode, extra_entries: a.entries };
    let c = convert::convert(&a.onnx, &opts)?;
    print!("{}", report::render(&c.inspection));
    for p in &c.plans {
        println!(
            "plan {:<12} arena {:>10}  lower bound {:>10}  ratio {:.3}  in-place ops {} (arena without: {})",
            p.entry,
            report::bytes(p.arena),
            report::bytes(p.lower_bound),
            p.arena as f64 / p.lower_bound.max(1) as f64,
            p.in_place,
            report::bytes(p.arena_without_in_place)
        );
    }
    if let Some(d) = &c.decode_dim {
        println!("decode_step: KV cache over '{d}' (capacity {})", bounds[d]);
        if c.plans.iter().any(|p| p.entry == "encode") {
            println!("encode: runs the source side once and keeps what the decoder reads in state");
        }
    }
    convert::check_budgets(&c.inspection, a.ram_budget, a.flash_budget)?;
    if !a.no_verify {
        let floor = a.min_cosine.unwrap_or(super::default_min_cosine(a.quant));
        let entries =
            std::iter::once(("forward", &a.onnx)).chain(opts.extra_entries.iter().map(|(n, p)| (n.as_str(), p)));
        for (entry, onnx) in entries {
            // `forward` is checked on calibration data when there is some (what int8 was tuned
            // for); other entries, and models without it, on random inputs.
            let calib = a.calib.as_deref().filter(|_| entry == "forward");
            let (worst, kind) = self_check(onnx, entry, &c.bytes, &bounds, calib)?;
            print_comparison(&format!("self-check of {entry} vs tract (2 {kind} inputs)"), &worst);
            if worst.cosine.is_nan() || worst.cosine < floor {
                bail!(
                    "{entry} drifted from tract: cosine {:.6} < {floor} (pass --min-cosine or --no-verify to accept)",
                    worst.cosine
                );
            }
        }
    }
    std::fs::write(&a.output, &c.bytes).with_context(|| format!("cannot write {}", a.output.display()))?;
    println!("wrote {} ({})", a.output.display(), report::bytes(c.bytes.len()));
    Ok(())
}

/// Worst comparison (over all outputs) of `entry` against tract running `onnx`, over the
/// first 2 samples of the calibration directory `calib` (models without state inputs) or 2
/// random inputs; also says which ("calibration" or "random").
pub fn self_check(
    onnx: &Path,
    entry: &str,
    bytes: &[u8],
    bounds: &Bounds,
    calib: Option<&Path>,
) -> Result<(Comparison, &'static str)> {
    let g = crate::import::OnnxModel::load(onnx)?.instantiate(bounds)?;
    let is_state = |&t: &usize| crate::state_io::is_state_input(&g.tensors[t].name);
    let (samples, kind) = match calib {
        Some(dir) if !g.inputs.iter().any(is_state) => {
            let mut s = convert::calibration_samples(&Calibration::Dir(dir.to_path_buf()), &g)?;
            s.truncate(2);
            (s, "calibration")
        }
        _ => ((0..2).map(|s| convert::random_inputs(&g, 77 + s)).collect(), "random"),
    };
    let mut worst: Option<Comparison> = None;
    for mut inputs in samples {
        // State inputs are zero, as in a fresh session, and only tract is given them.
        for (a, t) in inputs.iter_mut().zip(&g.inputs) {
            if is_state(t) {
                *a = Array::f32(a.shape.clone(), vec![0.0; a.len()]);
            }
        }
        let want = verify::tract_reference(onnx, &inputs)?;
        let own: Vec<Array> =
            inputs.iter().zip(&g.inputs).filter(|(_, t)| !is_state(t)).map(|(a, _)| a.clone()).collect();
        let got = host::run(bytes, entry, &own)?;
        for (g, w) in got.iter().zip(&want) {
            let c = verify::compare(&g.to_f32(), &w.to_f32())?;
            if worst.is_none_or(|w| c.cosine < w.cosine) {
                worst = Some(c);
            }
        }
    }
    Ok((worst.ok_or_else(|| anyhow!("no samples"))?, kind))
}

/// Compares the first output of `forward` with tract on `inputs`.
pub fn compare_outputs(onnx: &Path, bytes: &[u8], inputs: &[Array]) -> Result<Comparison> {
    let want = verify::tract_reference(onnx, inputs)?;
    let got = host::run(bytes, "forward", inputs)?;
    verify::compare(&got[0].to_f32(), &want[0].to_f32())
}

pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let bytes = host::read_model(path)?;
    let model = mote::Model::parse(&bytes)?;
    let r = report::inspect(&model)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for (k, v) in &r.metadata {
            let v: String = v.chars().take(60).collect();
            println!("{k}: {v}");
        }
        print!("{}", report::render(&r));
    }
    Ok(())
}

fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Array>> {
    paths.iter().map(|p| Array::read_npy(p)).collect()
}

pub fn run(path: &Path, inputs: &[PathBuf], output: &Path, entry: &str) -> Result<()> {
    let bytes = host::read_model(path)?;
    let outs = host::run(&bytes, entry, &read_inputs(inputs)?)?;
    for (k, o) in outs.iter().enumerate() {
        let p = if outs.len() == 1 {
            output.to_path_buf()
        } else {
            let stem = output.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
            output.with_file_name(format!("{stem}_{k}.npy"))
        };
        o.write_npy(&p)?;
        println!("wrote {} {:?}", p.display(), o.shape);
    }
    Ok(())
}

pub fn verify(onnx: &Path, path: &Path, inputs: &[PathBuf], samples: usize) -> Result<()> {
    let bytes = host::read_model(path)?;
    let model = mote::Model::parse(&bytes)?;
    let sets: Vec<Vec<Array>> = if inputs.is_empty() {
        // Bind the ONNX dims as the conversion did.
        let bounds = convert::parse_bounds(model.metadata("mote.dims").unwrap_or(""))?;
        let g = crate::import::OnnxModel::load(onnx)?.instantiate(&bounds)?;
        (0..samples as u64).map(|s| convert::random_inputs(&g, 500 + s)).collect()
    } else {
        vec![read_inputs(inputs)?]
    };
    for (i, set) in sets.iter().enumerate() {
        let c = compare_outputs(onnx, &bytes, set)?;
        print_comparison(&format!("sample {i}"), &c);
    }
    Ok(())
}
