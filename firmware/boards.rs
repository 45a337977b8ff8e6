//! Reader of `boards.toml`, shared by `firmware/build.rs` and `mote flash` (both include
//! this file with `#[path]`, so there is one parser for the one board file).
//!
//! The file is a small TOML subset: `[board-name]` tables of `key = value` lines, where a
//! value is a quoted string or a number (decimal or `0x` hex); `#` starts a comment.

/// One board: its name and its `key = value` pairs in file order.
#[derive(Debug, Clone)]
pub struct Board {
    /// The table name, e.g. `mps2-an386`.
    pub name: String,
    /// Raw values (strings unquoted).
    pub keys: Vec<(String, String)>,
}

impl Board {
    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of a required key.
    pub fn text(&self, key: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("board '{}' in boards.toml has no '{key}'", self.name))
    }

    /// A required number or size (`0x2000_0000`, `25000000`, `256KiB`, `4MiB`).
    pub fn number(&self, key: &str) -> Result<u64, String> {
        let v = self.text(key)?;
        parse_number(v).ok_or_else(|| format!("board '{}': '{key} = {v}' is not a number or size", self.name))
    }

    /// Whether QEMU can run this board (it has a `qemu_machine`).
    pub fn is_qemu(&self) -> bool {
        self.get("qemu_machine").is_some()
    }
}

/// Parses `123`, `0x1F`, `1_000`, `256KiB`, `4MiB`, `512K`, `1M`.
pub fn parse_number(s: &str) -> Option<u64> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Parses the board file.
pub fn parse(text: &str) -> Result<Vec<Board>, String> {
    let mut boards: Vec<Board> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            boards.push(Board { name: name.trim().to_string(), keys: Vec::new() });
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("boards.toml line {}: expected key = value", i + 1))?;
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        let board = boards.last_mut().ok_or_else(|| format!("boards.toml line {}: key outside a [board]", i + 1))?;
        board.keys.push((k.trim().to_string(), v.to_string()));
    }
    Ok(boards)
}

fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}
