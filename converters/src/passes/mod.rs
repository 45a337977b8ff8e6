//! Graph rewrites that turn spelled-out patterns into fused runtime ops, then lower or reject
//! what only exists inside patterns.

mod attention;
mod bias;
mod bn_fold;
mod gelu;
mod group_norm;
mod layer_norm;
mod leftovers;
mod moe;
mod relative;
mod rms_norm;
mod silu;
mod xl_attention;

use crate::ir::{Graph, IrOp};
use anyhow::{bail, Result};

pub use attention::fuse_attention;
pub use bias::fold_bias;
pub use bn_fold::fold_conv_affine;
pub use gelu::fuse_gelu;
pub use group_norm::fuse_group_norm;
pub use layer_norm::fuse_layer_norm;
pub use leftovers::lower_leftovers;
pub use moe::fuse_moe;
pub use relative::fuse_relative_attention;
pub use rms_norm::fuse_rms_norm;
pub use silu::fuse_silu;
pub use xl_attention::fuse_xl_attention;

/// Metadata key of the notes passes leave for the report (e.g. attention that runs unfused).
pub const NOTE_KEY: &str = "mote.note";

/// Runs every fusion, removes dead nodes, and rejects ops that only exist inside patterns.
pub fn run_all(g: &mut Graph) -> Result<()> {
    fold_conv_affine(g);
    g.remove_dead_nodes();
    fuse_group_norm(g);
    g.remove_dead_nodes();
    fuse_layer_norm(g);
    g.remove_dead_nodes();
    fuse_rms_norm(g);
    g.remove_dead_nodes();
    fuse_gelu(g);
    g.remove_dead_nodes();
    fuse_silu(g);
    g.remove_dead_nodes();
    fold_bias(g);
    g.remove_dead_nodes();
    fuse_xl_attention(g);
    g.remove_dead_nodes();
    fuse_relative_attention(g)?; // calls fuse_attention
    g.remove_dead_nodes();
    fuse_moe(g);
    if let Err(e) = lower_leftovers(g) {
        let notes: Vec<&str> = g.metadata.iter().filter(|(k, _)| k == NOTE_KEY).map(|(_, v)| v.as_str()).collect();
        if notes.is_empty() {
            return Err(e);
        }
        bail!("{e:#}\n{}", notes.join("\n"));
    }
    leftovers::lower_reduce_means(g)
}

/// The op of node `i` if it is a runtime op.
pub(crate) fn rt(g: &Graph, i: usize) -> Option<&mote::Op> {
    match &g.nodes[i].op {
        IrOp::Rt(op) => Some(op),
        _ => None,
    }
}
