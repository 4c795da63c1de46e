//! `sluice demo`: sample pharmacy claims, the two example jobs on an embedded cluster,
//! and the first rows of the aggregate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;

use crate::cli::{DemoArgs, OutputFormat};
use crate::client;
use crate::embedded::EmbeddedCluster;
use crate::error::{CliError, Result};

/// The example jobs, built in so the demo runs from any directory.
const CLEANSE: (&str, &str) = (
    "jobs/examples/claims_cleanse.yaml",
    include_str!("../jobs/examples/claims_cleanse.yaml"),
);
const MONTHLY: (&str, &str) = (
    "jobs/examples/claims_monthly.yaml",
    include_str!("../jobs/examples/claims_monthly.yaml"),
);

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> Result<()> {
    let dir = absolute(&args.dir)?;
    let sample = sluice_jobs::datagen::write_claims(&dir, args.rows, &[1, 2, 3], args.seed)
        .map_err(|source| CliError::Io {
            context: format!("writing sample data to {}", dir.display()),
            source,
        })?;
    println!(
        "sample data: {} claim lines in {} files below {}",
        sample.claim_rows,
        sample.claim_files.len(),
        dir.join("landing").display()
    );

    let cluster = EmbeddedCluster::start(&dir.join(".sluice"), 2).await?;
    let mut client = cluster.client().await?;
    let params = BTreeMap::from([
        (
            "landing".to_owned(),
            dir.join("landing").display().to_string(),
        ),
        (
            "staging".to_owned(),
            dir.join("staging").display().to_string(),
        ),
        (
            "curated".to_owned(),
            dir.join("curated").display().to_string(),
        ),
    ]);
    for (origin, yaml) in [CLEANSE, MONTHLY] {
        let definition = sluice_jobs::JobDefinition::from_yaml(yaml, origin)?;
        let job_params: BTreeMap<String, String> = params
            .iter()
            .filter(|(name, _)| definition.params.contains_key(*name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let run_id = client::submit_text(&mut client, yaml.to_owned(), origin, job_params).await?;
        let run = client::wait(&mut client, &run_id, true).await?;
        client::print_run(&run, OutputFormat::Text);
        client::require_success(&run)?;
    }

    let monthly = dir.join("curated").join("claims_monthly");
    println!("\nfirst rows of {}:", monthly.display());
    show_top_rows(&monthly).await?;
    println!(
        "\nrun history: {} runs in {}",
        cluster.manager().runs().list(0)?.len(),
        dir.join(".sluice").join("runs.redb").display()
    );
    Ok(())
}

async fn show_top_rows(path: &Path) -> Result<()> {
    let fail = |source| CliError::DataFusion {
        context: format!("reading {}", path.display()),
        source,
    };
    let stores = sluice_jobs::ObjectStores::new(crate::config::storage_settings()?);
    let state = sluice_jobs::session::session_state(
        sluice_jobs::session::default_session_config(),
        &stores,
    )
    .map_err(fail)?;
    let ctx = SessionContext::new_with_state(state);
    ctx.register_parquet(
        "monthly",
        format!("{}/", path.display()),
        datafusion::prelude::ParquetReadOptions::default().table_partition_cols(vec![(
            "fill_month".into(),
            datafusion::arrow::datatypes::DataType::Utf8,
        )]),
    )
    .await
    .map_err(fail)?;
    let frame = ctx
        .sql(
            "SELECT fill_month, product_name, state, prescriptions, patients, paid_amount \
             FROM monthly ORDER BY fill_month, paid_amount DESC LIMIT 10",
        )
        .await
        .map_err(fail)?;
    frame.show().await.map_err(fail)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|source| CliError::Io {
            context: "reading the working directory".into(),
            source,
        })
}
