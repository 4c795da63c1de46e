//! `sluice schema` and `sluice settings`: references printed without a cluster.

use crate::error::Result;

/// The JSON Schema of job definitions.
pub fn schema() -> Result<()> {
    let schema = sluice_jobs::json_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    );
    Ok(())
}

/// Every setting the binary reads, as a Markdown table.
pub fn settings() -> Result<()> {
    print!("{}", crate::config::settings_table());
    Ok(())
}
