//! `holdfast drill --admin URL`: the drill against a running holdfast (stub; filled in next).

use anyhow::{bail, Result};

use super::report::Report;
use super::DrillArgs;

/// Runs the admin-mode drill.
pub fn run(_args: &DrillArgs) -> Result<Report> {
    bail!("--admin mode is not implemented yet")
}
