//! `sluice schema`, `sluice settings` and `sluice token new`: printed without a cluster.

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

/// A fresh bearer token and its tokens-file entry (which holds only the token's hash).
pub fn new_token(args: &crate::cli::TokenNewArgs) -> Result<()> {
    let token = sluice_scheduler::auth::new_token();
    let jobs = if args.jobs.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = args.jobs.iter().map(|job| format!("{job:?}")).collect();
        format!(", jobs: [{}]", quoted.join(", "))
    };
    println!("token: {token}");
    println!("# the tokens file entry (under `tokens:`):");
    println!(
        "  - {{principal: {:?}, role: {}{jobs}, sha256: {}}}",
        args.principal,
        args.role,
        sluice_scheduler::auth::token_hash(&token)
    );
    Ok(())
}
