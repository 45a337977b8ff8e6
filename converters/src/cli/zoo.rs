//! `mote zoo`: train, export and report the model zoo.

use anyhow::Result;
use clap::Subcommand;

/// Zoo subcommands.
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// Convert the committed zoo models, run them, and print the report table.
    Report,
}

pub fn run(_c: ZooCommand) -> Result<()> {
    Ok(())
}
