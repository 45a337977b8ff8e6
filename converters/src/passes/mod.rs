//! Graph rewrites that turn spelled-out patterns into fused runtime ops.

mod attention;
mod bias;
mod gelu;
mod layer_norm;

use crate::ir::{Graph, IrOp};
use anyhow::{bail, Result};

pub use attention::fuse_attention;
pub use bias::fold_bias;
pub use gelu::fuse_gelu;
pub use layer_norm::fuse_layer_norm;

/// Runs every fusion, removes dead nodes, and rejects ops that only exist inside patterns.
pub fn run_all(g: &mut Graph) -> Result<()> {
    fuse_layer_norm(g);
    g.remove_dead_nodes();
    fuse_gelu(g);
    g.remove_dead_nodes();
    fold_bias(g);
    g.remove_dead_nodes();
    fuse_attention(g);
    g.remove_dead_nodes();
    for n in &g.nodes {
        if let IrOp::ReduceMean { .. } = n.op {
            bail!(
                "unsupported op '{}' at node '{}': mote lowers ReduceMean only as part of a LayerNorm pattern",
                n.onnx_op,
                n.name
            );
        }
    }
    Ok(())
}

/// The op of node `i` if it is a runtime op.
pub(crate) fn rt(g: &Graph, i: usize) -> Option<&mote::Op> {
    match &g.nodes[i].op {
        IrOp::Rt(op) => Some(op),
        _ => None,
    }
}
