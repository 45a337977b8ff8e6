//! The board descriptions of `firmware/boards.toml` (the firmware build reads the same file).

use anyhow::{anyhow, bail, Result};

#[path = "../../../firmware/boards.rs"]
mod file;

pub use file::Board;

/// The board file, compiled in so `mote flash` knows the boards wherever it is installed.
pub const BOARDS_TOML: &str = include_str!("../../../firmware/boards.toml");

/// Every known board, in file order.
pub fn all() -> Result<Vec<Board>> {
    file::parse(BOARDS_TOML).map_err(|e| anyhow!(e))
}

/// The board called `name`; an unknown name lists the known boards.
pub fn find(name: &str) -> Result<Board> {
    let boards = all()?;
    if let Some(b) = boards.iter().find(|b| b.name == name) {
        return Ok(b.clone());
    }
    let list: Vec<String> =
        boards.iter().map(|b| format!("  {:<12} {}", b.name, b.get("description").unwrap_or(""))).collect();
    bail!("unknown board '{name}'. Known boards:\n{}", list.join("\n"))
}

/// A required number or size of a board.
pub fn number(b: &Board, key: &str) -> Result<u64> {
    b.number(key).map_err(|e| anyhow!(e))
}

/// A required text value of a board.
pub fn text<'b>(b: &'b Board, key: &str) -> Result<&'b str> {
    b.text(key).map_err(|e| anyhow!(e))
}
