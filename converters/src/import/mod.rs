//! ONNX import: raw protobuf for ops, attributes and initializers; tract's analysis for
//! shapes and for folding shape subgraphs to constants under the bounded dims.

mod attrs;
mod conv;
mod lower;
mod norm;
pub mod pointwise;

use crate::ir::{Const, Elem, Graph, TId, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tract_onnx::pb::{self, ModelProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceModelExt};

/// Maxima for symbolic dims (`--dim seq=64`).
pub type Bounds = BTreeMap<String, usize>;

/// A loaded ONNX model that can be instantiated at any binding of its symbolic dims.
pub struct OnnxModel {
    /// The raw protobuf.
    pub proto: ModelProto,
    /// Symbolic dims of the graph inputs, in order of appearance.
    pub symbols: Vec<String>,
    /// Directory of the model file (for external tensor data).
    dir: Option<String>,
}

/// ONNX element types mote understands.
fn elem_of(onnx_type: i32) -> Option<(Elem, DatumType)> {
    Some(match onnx_type {
        1 => (Elem::Float, f32::datum_type()),
        10 => (Elem::Float, f16::datum_type()),
        11 => (Elem::Float, f64::datum_type()),
        6 => (Elem::Int, i32::datum_type()),
        7 => (Elem::Int, i64::datum_type()),
        9 => (Elem::Int, bool::datum_type()),
        _ => return None,
    })
}

impl OnnxModel {
    /// Reads an ONNX file.
    pub fn load(path: &Path) -> Result<Self> {
        let proto = tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(|e| anyhow!("{}: not a readable ONNX model: {e}", path.display()))?;
        let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("{}: the model has no graph", path.display()))?;
        let mut symbols = Vec::new();
        for input in real_inputs(graph) {
            for d in dims_of(input) {
                if let pb::tensor_shape_proto::dimension::Value::DimParam(p) = d {
                    if !symbols.contains(&p) {
                        symbols.push(p);
                    }
                }
            }
        }
        let dir = path.parent().and_then(|d| d.to_str()).map(String::from);
        Ok(OnnxModel { proto, symbols, dir })
    }

    /// Names of the graph inputs whose shape mentions the symbolic dim `symbol`.
    pub fn inputs_with_dim(&self, symbol: &str) -> Vec<String> {
        use pb::tensor_shape_proto::dimension::Value;
        let graph = self.proto.graph.as_ref().expect("checked at load");
        real_inputs(graph)
            .filter(|i| dims_of(i).iter().any(|d| matches!(d, Value::DimParam(p) if p == symbol)))
            .map(|i| i.name.clone())
            .collect()
    }

    /// Metadata properties of the model.
    pub fn metadata(&self) -> Vec<(String, String)> {
        self.proto.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect()
    }

    /// Imports the graph with every symbolic dim bound to `bounds` (missing ones are errors
    /// that name the `--dim` flag to pass).
    pub fn instantiate(&self, bounds: &Bounds) -> Result<Graph> {
        for s in &self.symbols {
            if !bounds.contains_key(s) {
                bail!("input dim '{s}' is dynamic and has no bound: pass --dim {s}=<max> (e.g. --dim {s}=64)");
            }
        }
        let graph = self.proto.graph.as_ref().expect("checked at load");
        let onnx = tract_onnx::onnx();
        let parsed = onnx
            .parse(&self.proto, self.dir.as_deref())
            .map_err(|e| anyhow!("tract could not parse the model: {e:?}"))?;
        let mut model = parsed.model;
        let outlets = parsed.outlets_by_name;
        let input_outlets = model.input_outlets()?.to_vec();

        let mut g = Graph { metadata: self.metadata(), ..Default::default() };
        let mut ids: HashMap<String, TId> = HashMap::new();
        for input in real_inputs(graph) {
            let ty = input_type(input)?;
            let (elem, dt) =
                elem_of(ty).ok_or_else(|| anyhow!("input '{}' has unsupported element type {ty}", input.name))?;
            let mut shape = Vec::new();
            for d in dims_of(input) {
                use pb::tensor_shape_proto::dimension::Value;
                shape.push(match d {
                    Value::DimValue(v) if v > 0 => v as usize,
                    Value::DimParam(p) => bounds[&p],
                    _ => bail!("input '{}' has a dim with no size or name; mote needs a bound", input.name),
                });
            }
            let outlet = outlets[&input.name];
            let ix = input_outlets.iter().position(|o| *o == outlet).context("input outlet")?;
            model.set_input_fact(ix, InferenceFact::dt_shape(dt, shape.clone()))?;
            let id = g.add_tensor(Tensor { name: input.name.clone(), shape, elem, konst: None });
            ids.insert(input.name.clone(), id);
            g.inputs.push(id);
        }
        model.analyse(false).map_err(|e| anyhow!("tract's shape analysis failed: {e:?}"))?;

        let initializers: HashMap<&str, &pb::TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        // Tensors whose value follows the input shapes, and values that depend on positions.
        let mut shape_derived: HashSet<TId> = HashSet::new();
        let mut positional: HashSet<TId> = HashSet::new();

        for node in &graph.node {
            let name =
                if node.name.is_empty() { node.output.first().cloned().unwrap_or_default() } else { node.name.clone() };
            let mut inputs = Vec::new();
            for i in &node.input {
                if i.is_empty() {
                    inputs.push(None);
                    continue;
                }
                let id = match ids.get(i) {
                    Some(&id) => id,
                    None => {
                        let t = initializers.get(i.as_str()).ok_or_else(|| {
                            anyhow!("node '{name}' ({}) reads '{i}', which nothing produces", node.op_type)
                        })?;
                        let tensor = tract_onnx::tensor::load_tensor(&*onnx.provider, t, self.dir.as_deref())
                            .map_err(|e| anyhow!("initializer '{i}': {e:?}"))?;
                        let id = g.add_tensor(const_tensor(i, &tensor)?);
                        ids.insert(i.clone(), id);
                        id
                    }
                };
                inputs.push(Some(id));
            }
            let present: Vec<TId> = inputs.iter().flatten().copied().collect();
            // A shape never depends on position values, so Shape of a positional tensor folds.
            let is_positional = !["Shape", "Size"].contains(&node.op_type.as_str())
                && (present.iter().any(|t| positional.contains(t))
                    || (node.op_type == "Range" && present.iter().any(|t| shape_derived.contains(t))));
            let derived = node.op_type == "Shape" || present.iter().any(|t| shape_derived.contains(t));

            for (k, out_name) in node.output.iter().enumerate() {
                if out_name.is_empty() {
                    continue;
                }
                let fact = outlets
                    .get(out_name)
                    .map(|o| model.outlet_fact(*o))
                    .transpose()?
                    .ok_or_else(|| anyhow!("tract lost track of '{out_name}'"))?;
                let shape = fact
                    .shape
                    .as_concrete_finite()?
                    .ok_or_else(|| anyhow!("node '{name}' ({}): output '{out_name}' has no concrete shape under the given --dim bounds", node.op_type))?
                    .to_vec();
                let value = if is_positional { None } else { fact.value.concretize() };
                let id = match value {
                    Some(v) => {
                        let mut t = const_tensor(out_name, &v)?;
                        t.shape = shape;
                        g.add_tensor(t)
                    }
                    None => {
                        let dt = fact.datum_type.concretize().ok_or_else(|| anyhow!("no type for '{out_name}'"))?;
                        let elem = if dt.is_float() { Elem::Float } else { Elem::Int };
                        let out = g.add_tensor(Tensor { name: out_name.clone(), shape, elem, konst: None });
                        lower::lower(&mut g, node, &name, k, &inputs, out)?
                    }
                };
                if derived {
                    shape_derived.insert(id);
                }
                if is_positional {
                    positional.insert(id);
                }
                ids.insert(out_name.clone(), id);
            }
        }
        for o in &graph.output {
            let id = *ids.get(&o.name).ok_or_else(|| anyhow!("graph output '{}' is never produced", o.name))?;
            g.outputs.push(id);
        }
        Ok(g)
    }
}

fn real_inputs(graph: &pb::GraphProto) -> impl Iterator<Item = &pb::ValueInfoProto> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph.input.iter().filter(move |i| !inits.contains(i.name.as_str()))
}

fn tensor_type(input: &pb::ValueInfoProto) -> Option<&pb::type_proto::Tensor> {
    match input.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t),
    }
}

fn input_type(input: &pb::ValueInfoProto) -> Result<i32> {
    tensor_type(input).map(|t| t.elem_type).ok_or_else(|| anyhow!("input '{}' is not a tensor", input.name))
}

fn dims_of(input: &pb::ValueInfoProto) -> Vec<pb::tensor_shape_proto::dimension::Value> {
    tensor_type(input)
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().filter_map(|d| d.value.clone()).collect())
        .unwrap_or_default()
}

fn const_tensor(name: &str, t: &tract_onnx::prelude::Tensor) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let (elem, konst) = if t.datum_type().is_float() {
        let c = t.cast_to::<f32>()?;
        (Elem::Float, Const::F32(c.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
    } else {
        let c = t.cast_to::<i64>()?;
        (Elem::Int, Const::I64(c.try_as_plain_ram()?.as_slice::<i64>()?.to_vec()))
    };
    Ok(Tensor { name: name.to_string(), shape, elem, konst: Some(konst) })
}
