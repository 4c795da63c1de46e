//! `sluice datagen`: landing data with known defects and its ground truth.

use crate::cli::DatagenClaimsArgs;
use crate::error::{CliError, Result};

/// `sluice datagen claims`: writes the data and prints the ground truth's summary.
pub fn claims(args: &DatagenClaimsArgs) -> Result<()> {
    for (name, rate) in [
        ("defect-rate", args.defect_rate),
        ("duplicate-rate", args.duplicate_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(CliError::Usage(format!(
                "--{name} {rate} is not between 0 and 1"
            )));
        }
    }
    if let Some(month) = args.months.iter().find(|m| !(1..=12).contains(*m)) {
        return Err(CliError::Usage(format!(
            "--months: {month} is not a month (1 to 12)"
        )));
    }
    let options = sluice_jobs::datagen::ClaimsOptions {
        rows: args.rows,
        seed: args.seed,
        months: args.months.clone(),
        defect_rate: args.defect_rate,
        duplicate_rate: args.duplicate_rate,
    };
    let started = std::time::Instant::now();
    let truth = sluice_jobs::datagen::generate_claims(&args.out, &options).map_err(|source| {
        CliError::Io {
            context: format!("writing claims to {}", args.out.display()),
            source,
        }
    })?;
    println!(
        "{} claim lines ({} valid, {} to quarantine) in {:.1}s below {}",
        truth.rows,
        truth.valid_rows,
        truth.quarantined_rows,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    for (defect, count) in &truth.defects {
        println!("  {defect:<26} {count}");
    }
    println!(
        "ground truth: {}",
        args.out.join("ground_truth.json").display()
    );
    Ok(())
}
