//! The converter's intermediate representation: a graph of runtime ops over named tensors,
//! at concrete shapes (symbolic dims already bound to their maxima).

use mote::Op;
use std::collections::HashMap;

/// Index of a tensor in [`Graph::tensors`].
pub type TId = usize;

/// Element class of a tensor before dtype assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// Real numbers (f32 at import; f32/f16/i8 after quantisation).
    Float,
    /// Integers (indices, positions): i32 at run time.
    Int,
}

/// Constant data of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    /// Real values.
    F32(Vec<f32>),
    /// Integer values.
    I64(Vec<i64>),
}

impl Const {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Const::F32(v) => v.len(),
            Const::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Const::F32(v) => v.clone(),
            Const::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as i64 (reals truncated).
    pub fn to_i64(&self) -> Vec<i64> {
        match self {
            Const::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Const::I64(v) => v.clone(),
        }
    }
}

/// A tensor of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// ONNX name (fused outputs keep the name of the last tensor they replace).
    pub name: String,
    /// Concrete shape.
    pub shape: Vec<usize>,
    /// Element class.
    pub elem: Elem,
    /// Data, for constants.
    pub konst: Option<Const>,
}

impl Tensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An op of the graph.
#[derive(Debug, Clone, PartialEq)]
pub enum IrOp {
    /// A runtime op.
    Rt(Op),
    /// ReduceMean over `axes`: supported only inside a LayerNorm pattern, which fusion
    /// replaces; one left over after fusion is reported as unsupported.
    ReduceMean {
        /// Axes reduced (normalised to be non-negative).
        axes: Vec<usize>,
    },
    /// An ONNX op with no runtime kernel that mote accepts only where a fusion pass consumes
    /// it (`onnx_op` says which): `Where` and `Expand` inside an attention-mask computation,
    /// casts to bool. Leftovers are lowered to runtime ops where that is exact, else rejected.
    PatternOnly,
}

/// A node: one op, its inputs and its single output.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// ONNX node name (or its first output's name when unnamed).
    pub name: String,
    /// ONNX op type, for error messages and reports.
    pub onnx_op: String,
    /// The op.
    pub op: IrOp,
    /// Input tensors.
    pub inputs: Vec<TId>,
    /// Output tensor.
    pub output: TId,
}

/// A whole graph at concrete shapes.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// All tensors (constants and activations).
    pub tensors: Vec<Tensor>,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// Graph inputs.
    pub inputs: Vec<TId>,
    /// Graph outputs.
    pub outputs: Vec<TId>,
    /// Model metadata (ONNX `metadata_props`).
    pub metadata: Vec<(String, String)>,
}

impl Graph {
    /// Adds a tensor, returning its id.
    pub fn add_tensor(&mut self, t: Tensor) -> TId {
        self.tensors.push(t);
        self.tensors.len() - 1
    }

    /// Adds a constant f32 tensor.
    pub fn add_const_f32(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) -> TId {
        self.add_tensor(Tensor { name: name.into(), shape, elem: Elem::Float, konst: Some(Const::F32(data)) })
    }

    /// The constant data of `t`, if it is a constant.
    pub fn konst(&self, t: TId) -> Option<&Const> {
        self.tensors[t].konst.as_ref()
    }

    /// `t` as a single real value if it is a constant with exactly one element.
    pub fn scalar(&self, t: TId) -> Option<f32> {
        match self.konst(t)? {
            c if c.len() == 1 => Some(c.to_f32()[0]),
            _ => None,
        }
    }

    /// Index of the node producing `t`.
    pub fn producer(&self, t: TId) -> Option<usize> {
        self.nodes.iter().position(|n| n.output == t)
    }

    /// Indices of the nodes reading `t`.
    pub fn consumers(&self, t: TId) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].inputs.contains(&t)).collect()
    }

    /// Whether `t` is read exactly once and is not a graph output (safe to fuse away).
    pub fn single_use(&self, t: TId) -> bool {
        !self.outputs.contains(&t) && self.consumers(t).len() == 1
    }

    /// Removes nodes whose outputs nobody reads, until none is left.
    pub fn remove_dead_nodes(&mut self) {
        loop {
            let mut used: Vec<bool> = vec![false; self.tensors.len()];
            for &o in &self.outputs {
                used[o] = true;
            }
            for n in &self.nodes {
                for &i in &n.inputs {
                    used[i] = true;
                }
            }
            let before = self.nodes.len();
            // Stores into the state region are side effects: keep them.
            self.nodes.retain(|n| used[n.output] || matches!(n.op, IrOp::Rt(Op::StoreState { .. })));
            if self.nodes.len() == before {
                return;
            }
        }
    }

    /// Tensor ids by name.
    pub fn by_name(&self) -> HashMap<&str, TId> {
        self.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect()
    }
}
