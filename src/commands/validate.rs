//! `sluice validate`: checks a definition without a cluster; with every required param,
//! against its sources, and with `--explain`, prints the plans.

use crate::cli::ValidateArgs;
use crate::client;
use crate::config::Settings;
use crate::error::Result;

/// The definition always; with its params, its sources and
/// expressions too.
pub async fn run(args: ValidateArgs, settings: &Settings) -> Result<()> {
    let file = &args.file;
    let definition = sluice_jobs::JobDefinition::from_file(file)?;
    let params = client::parse_params(&args.params)?;
    let origin = file.display().to_string();
    let missing: Vec<&String> = definition
        .params
        .iter()
        .filter(|(name, spec)| {
            spec.required && spec.default.is_none() && !params.contains_key(*name)
        })
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        sluice_jobs::JobSettings::from_conf(&definition.conf, &origin)?;
        println!(
            "{origin}: definition `{}` is valid; give --param {} to check it against its sources",
            definition.name,
            missing
                .iter()
                .map(|name| format!("{name}=…"))
                .collect::<Vec<_>>()
                .join(" --param ")
        );
        return Ok(());
    }
    let prepared = sluice_jobs::PreparedJob::prepare(definition, &origin, &params)?;
    for warning in &prepared.settings.warnings {
        eprintln!("warning: {warning}");
    }
    let ctx = prepared.session_context(&sluice_jobs::ObjectStores::new(settings.storage()?))?;
    let base_dir = std::env::current_dir().unwrap_or_default();
    let compiled = prepared.compile(&ctx, &base_dir).await?;
    for warning in compiled.warnings() {
        eprintln!("warning: {warning}");
    }
    println!(
        "{origin}: definition `{}` is valid against its sources ({})",
        prepared.definition.name,
        compiled
            .sources
            .iter()
            .map(|s| {
                let partitions: Vec<&str> = s
                    .partition_columns
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect();
                if partitions.is_empty() {
                    format!("{} at {}", s.name, s.location)
                } else {
                    format!(
                        "{} at {} partitioned by {}",
                        s.name,
                        s.location,
                        partitions.join(", ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.explain {
        for output in &compiled.outputs {
            let plan = output.physical_plan(&ctx.state()).await?;
            println!(
                "\noutput `{}`:\n{}",
                output.name,
                datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
            );
        }
    }
    Ok(())
}
