//! A small ONNX graph builder over the `tract_onnx::pb` protobuf structs.
//!
//! Zoo layers append nodes and initializers here from their `export` method; the
//! result is encoded with `prost` as opset 17, IR version 8.
//!
//! ```
//! use mote_converters::zoo::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};
//! let mut g = GraphBuilder::new("tiny");
//! g.input("x", DataType::Float, &[Dim::Fixed(1), Dim::Param("n".into())]);
//! let two = g.const_f32_scalar(2.0);
//! let y = g.op("Mul", &["x", &two], vec![]);
//! let y = g.op_named("Softmax", &[&y], vec![attr_int("axis", -1)], "y");
//! g.output(&y, DataType::Float, &[Dim::Fixed(1), Dim::Param("n".into())]);
//! g.metadata("mote.family", "demo");
//! let bytes = g.finish();
//! assert!(!bytes.is_empty());
//! ```

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

pub use tract_onnx::pb::tensor_proto::DataType;

/// ONNX opset version written by [`GraphBuilder::finish`].
pub const OPSET: i64 = 17;
/// ONNX IR version written by [`GraphBuilder::finish`].
pub const IR_VERSION: i64 = 8;

/// One dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size (`dim_param`), e.g. `"seq"`.
    Param(String),
}

/// Builds one ONNX graph; see the module docs for an example.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    metadata: Vec<StringStringEntryProto>,
    /// Every value name in use (inputs, initializers, node outputs).
    names: HashSet<String>,
    node_names: HashSet<String>,
    counter: usize,
    scope: Vec<String>,
    symbols: HashMap<String, String>,
}

impl GraphBuilder {
    /// Starts an empty graph called `name`.
    pub fn new(name: &str) -> Self {
        let mut g = Self::default();
        g.graph.name = name.to_string();
        g
    }

    /// Pushes a naming scope (e.g. `"h.0.attn"`); node names are prefixed with it.
    pub fn push_scope(&mut self, scope: &str) {
        self.scope.push(scope.to_string());
    }

    /// Pops the innermost naming scope.
    pub fn pop_scope(&mut self) {
        self.scope.pop();
    }

    fn scoped(&self, base: &str) -> String {
        if self.scope.is_empty() {
            base.to_string()
        } else {
            format!("/{}/{}", self.scope.join("/"), base)
        }
    }

    /// Returns `base` if it is not yet used as a value name, otherwise `base_N`.
    fn unique_value(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        while self.names.contains(&name) {
            self.counter += 1;
            name = format!("{base}_{}", self.counter);
        }
        self.names.insert(name.clone());
        name
    }

    fn unique_node(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        while self.node_names.contains(&name) {
            self.counter += 1;
            name = format!("{base}_{}", self.counter);
        }
        self.node_names.insert(name.clone());
        name
    }

    /// Whether a value (input, initializer or node output) called `name` exists.
    pub fn has_value(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Binds a graph-wide symbol (e.g. `"seq_len"`) to a value name so later layers can reuse it.
    pub fn bind(&mut self, key: &str, value: &str) {
        self.symbols.insert(key.to_string(), value.to_string());
    }

    /// Looks up a symbol bound with [`GraphBuilder::bind`].
    pub fn lookup(&self, key: &str) -> Option<String> {
        self.symbols.get(key).cloned()
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) -> String {
        let name = self.unique_value(name);
        self.graph.input.push(value_info(&name, elem_type, dims));
        name
    }

    /// Declares a graph output (the value must be produced by some node).
    pub fn output(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem_type, dims));
    }

    /// Adds a model metadata entry (`ModelProto.metadata_props`).
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push(StringStringEntryProto { key: key.to_string(), value: value.to_string() });
    }

    /// Adds a prebuilt initializer tensor, renaming it if its name is taken. Returns its name.
    pub fn initializer(&mut self, mut t: TensorProto) -> String {
        t.name = self.unique_value(&t.name);
        let name = t.name.clone();
        self.graph.initializer.push(t);
        name
    }

    /// Adds an f32 initializer; returns its (possibly uniquified) name.
    pub fn initializer_f32(&mut self, name: &str, shape: &[i64], data: &[f32]) -> String {
        self.initializer(tensor_f32(name, shape, data))
    }

    /// Adds an i64 initializer; returns its (possibly uniquified) name.
    pub fn initializer_i64(&mut self, name: &str, shape: &[i64], data: &[i64]) -> String {
        self.initializer(tensor_i64(name, shape, data))
    }

    /// Adds a scalar f32 constant initializer.
    pub fn const_f32_scalar(&mut self, v: f32) -> String {
        let base = self.scoped("Constant_f32");
        self.initializer_f32(&base, &[], &[v])
    }

    /// Adds a scalar i64 constant initializer.
    pub fn const_i64_scalar(&mut self, v: i64) -> String {
        let base = self.scoped("Constant_i64");
        self.initializer_i64(&base, &[], &[v])
    }

    /// Adds a 1-D i64 constant initializer.
    pub fn const_i64_vec(&mut self, v: &[i64]) -> String {
        let base = self.scoped("Constant_i64");
        self.initializer_i64(&base, &[v.len() as i64], v)
    }

    /// Appends a node with `n_outputs` automatically named outputs; returns the output names.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        n_outputs: usize,
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let node_name = self.unique_node(&self.scoped(op_type));
        let outputs: Vec<String> =
            (0..n_outputs).map(|i| self.unique_value(&format!("{node_name}_output_{i}"))).collect();
        self.push_node(node_name, op_type, inputs, outputs.clone(), attrs);
        outputs
    }

    /// Appends a node with exactly the given output names (they must be unused).
    pub fn node_with_outputs(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let node_name = self.unique_node(&self.scoped(op_type));
        let outputs: Vec<String> = outputs.iter().map(|o| self.unique_value(o)).collect();
        self.push_node(node_name, op_type, inputs, outputs.clone(), attrs);
        outputs
    }

    /// Appends a single-output node; returns its output name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node(op_type, inputs, 1, attrs).remove(0)
    }

    /// Appends a single-output node whose output is called `output` (uniquified if taken).
    pub fn op_named(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>, output: &str) -> String {
        self.node_with_outputs(op_type, inputs, &[output], attrs).remove(0)
    }

    fn push_node(
        &mut self,
        name: String,
        op_type: &str,
        inputs: &[&str],
        outputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs,
            name,
            op_type: op_type.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Number of nodes appended so far.
    pub fn node_count(&self) -> usize {
        self.graph.node.len()
    }

    /// Builds the `ModelProto` (opset 17, IR version 8).
    pub fn into_model(self) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "mote-zoo".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(self.graph),
            metadata_props: self.metadata,
            ..Default::default()
        }
    }

    /// Encodes the model as ONNX protobuf bytes.
    pub fn finish(self) -> Vec<u8> {
        self.into_model().encode_to_vec()
    }

    /// Encodes the model under default-domain opset `version` instead of 17, for ops whose
    /// meaning changed between opsets (e.g. `GroupNormalization`'s parameters at 18 and 21).
    pub fn finish_with_opset(self, version: i64) -> Vec<u8> {
        let mut model = self.into_model();
        model.opset_import[0].version = version;
        model.encode_to_vec()
    }
}

fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam(p.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An f32 tensor (little-endian `raw_data`, as PyTorch writes it).
pub fn tensor_f32(name: &str, shape: &[i64], data: &[f32]) -> TensorProto {
    assert_eq!(shape.iter().product::<i64>() as usize, data.len(), "tensor {name}: shape/data mismatch");
    TensorProto {
        name: name.to_string(),
        dims: shape.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An i64 tensor (little-endian `raw_data`).
pub fn tensor_i64(name: &str, shape: &[i64], data: &[i64]) -> TensorProto {
    assert_eq!(shape.iter().product::<i64>() as usize, data.len(), "tensor {name}: shape/data mismatch");
    TensorProto {
        name: name.to_string(),
        dims: shape.to_vec(),
        data_type: DataType::Int64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An `INT` attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

/// An `INTS` attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A `FLOAT` attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}

/// A `STRING` attribute (e.g. `auto_pad`).
pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A `TENSOR` attribute (e.g. `Constant.value`).
pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: AttributeType::Tensor as i32, t: Some(t), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    #[test]
    fn tiny_model_round_trips_through_tract() -> anyhow::Result<()> {
        let mut g = GraphBuilder::new("tiny");
        g.input("x", DataType::Float, &[Dim::Fixed(1), Dim::Param("n".into())]);
        let w = g.initializer_f32("w", &[1, 3], &[1.0, 2.0, 3.0]);
        let half = g.const_f32_scalar(0.5);
        // y = (x^T * w) * 0.5 summed over the last axis, via MatMul([n,1] x [1,3]).
        let xt = g.op("Transpose", &["x"], vec![attr_ints("perm", &[1, 0])]);
        let m = g.op("MatMul", &[&xt, &w], vec![]);
        let m = g.op("Mul", &[&m, &half], vec![]);
        let c = g.op("Constant", &[], vec![attr_tensor("value", tensor_f32("c", &[], &[1.0]))]);
        let m = g.op("Add", &[&m, &c], vec![]);
        let axes = g.const_i64_vec(&[1]);
        let y = g.op_named("ReduceSum", &[&m, &axes], vec![attr_int("keepdims", 0)], "y");
        assert_eq!(y, "y");
        g.output(&y, DataType::Float, &[Dim::Param("n".into())]);
        g.metadata("k", "v");
        let model = g.into_model();
        assert_eq!(model.metadata_props[0].value, "v");
        let bytes = model.encode_to_vec();

        let plan = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.into_optimized()?.into_runnable()?;
        let x = Tensor::from_shape(&[1, 2], &[1.0f32, -2.0])?;
        let out = plan.run(tvec!(x.into_tvalue()))?;
        let y = out[0].to_plain_array_view::<f32>()?;
        // row 0: 0.5*(1+2+3)*1 + 3 = 6 ; row 1: 0.5*6*(-2) + 3 = -3
        assert_eq!(y.as_slice().unwrap(), &[6.0, -3.0]);
        Ok(())
    }

    #[test]
    fn names_are_unique() {
        let mut g = GraphBuilder::new("u");
        let a = g.initializer_f32("w", &[1], &[1.0]);
        let b = g.initializer_f32("w", &[1], &[2.0]);
        assert_ne!(a, b);
        g.push_scope("blk");
        let o1 = g.op("Relu", &[&a], vec![]);
        let o2 = g.op("Relu", &[&b], vec![]);
        g.pop_scope();
        assert_ne!(o1, o2);
        assert!(o1.starts_with("/blk/Relu"));
        assert!(g.has_value(&o2));
    }
}
