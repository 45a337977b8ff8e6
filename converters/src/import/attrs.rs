//! Reading ONNX node attributes.

use anyhow::{bail, Result};
use tract_onnx::pb::{AttributeProto, NodeProto};

fn find<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute, or `default`.
pub fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    find(node, name).map(|a| a.i).unwrap_or(default)
}

/// A float attribute, or `default`.
pub fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    find(node, name).map(|a| a.f).unwrap_or(default)
}

/// A string attribute, or `default`.
pub fn string(node: &NodeProto, name: &str, default: &str) -> String {
    find(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_else(|| default.to_string())
}

/// An integer-list attribute, if present.
pub fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    find(node, name).map(|a| a.ints.clone())
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(node: &NodeProto, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        bail!("node '{}' ({}): axis {axis} is out of range for rank {rank}", node.name, node.op_type);
    }
    Ok(a as usize)
}
