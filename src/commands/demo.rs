//! `sluice demo`: landed pharmacy claims with known defects, the cleansing job (types,
//! standardizes, masks, quarantines what breaks a rule) and the monthly aggregate on an
//! embedded cluster, and the first rows of the aggregate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;

use crate::cli::{DemoArgs, OutputFormat};
use crate::client;
use crate::config::Settings;
use crate::embedded::EmbeddedCluster;
use crate::error::{CliError, Result};

/// The example jobs, built in so the demo runs from any directory.
const CLEANSE: (&str, &str) = (
    "jobs/examples/claims_quality.yaml",
    include_str!("../../jobs/examples/claims_quality.yaml"),
);
const MONTHLY: (&str, &str) = (
    "jobs/examples/claims_monthly.yaml",
    include_str!("../../jobs/examples/claims_monthly.yaml"),
);

/// Runs the demo.
pub async fn run(args: &DemoArgs, settings: &Settings) -> Result<()> {
    let dir = absolute(&args.dir)?;
    let options = sluice_jobs::datagen::ClaimsOptions {
        rows: args.rows,
        seed: args.seed,
        ..Default::default()
    };
    let io = |context: String| move |source| CliError::Io { context, source };
    let truth = sluice_jobs::datagen::generate_claims(&dir, &options)
        .map_err(io(format!("writing sample data to {}", dir.display())))?;
    println!(
        "sample data: {} claim lines below {} ({} with a known defect; see ground_truth.json)",
        truth.rows,
        dir.join("landing").display(),
        truth.quarantined_rows
    );
    // The tokenization key: a random one for the demo, kept beside its run store.
    let key_file = dir.join(".sluice").join("mask.key");
    std::fs::create_dir_all(dir.join(".sluice"))
        .map_err(io(format!("creating {}", dir.join(".sluice").display())))?;
    if !key_file.exists() {
        let key = format!("{}{}", uuid_like(), uuid_like());
        std::fs::write(&key_file, key).map_err(io(format!("writing {}", key_file.display())))?;
    }

    let cluster = EmbeddedCluster::start(&dir.join(".sluice"), 2, settings).await?;
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
        ("run_date".to_owned(), "2024-03-31".to_owned()),
        (
            "mask_key".to_owned(),
            format!("file:{}", key_file.display()),
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
    show_top_rows(&monthly, settings).await?;
    println!(
        "\nrun history: {} runs in {}",
        cluster.manager().runs().list(0)?.len(),
        dir.join(".sluice").join("runs.redb").display()
    );
    Ok(())
}

async fn show_top_rows(path: &Path, settings: &Settings) -> Result<()> {
    let fail = |source| CliError::DataFusion {
        context: format!("reading {}", path.display()),
        source,
    };
    let stores = sluice_jobs::ObjectStores::new(settings.storage()?);
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

/// 32 random hex digits.
fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
