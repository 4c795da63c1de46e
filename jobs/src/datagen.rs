//! Realistic sample landing data for demos and tests: pharmacy claims as they land
//! (CSV, untrimmed text, resubmitted claims, a few incomplete rows) and the product
//! reference they join to. Deterministic for a seed.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Products by NDC (5-4-2), with their therapeutic class.
pub const PRODUCTS: &[(&str, &str, &str)] = &[
    ("00002-1433-80", "Trulicity", "GLP-1"),
    ("00169-4060-13", "Ozempic", "GLP-1"),
    ("00169-2800-15", "Victoza", "GLP-1"),
    ("00024-5925-30", "Jardiance", "SGLT2"),
    ("00310-6210-30", "Farxiga", "SGLT2"),
    ("50090-3564-00", "Invokana", "SGLT2"),
    ("00006-0277-31", "Januvia", "DPP-4"),
    ("00597-0140-30", "Tradjenta", "DPP-4"),
    ("00088-2220-33", "Lantus", "Insulin"),
    ("00169-6438-10", "Tresiba", "Insulin"),
];

/// Payer names as they appear on claims.
pub const PAYERS: &[&str] = &[
    "Aetna",
    "UnitedHealthcare",
    "Cigna",
    "Humana",
    "BCBS Texas",
    "Medicare Part D",
    "Medicaid",
];

/// States the sample covers.
pub const STATES: &[&str] = &["CA", "TX", "NY", "FL", "PA", "IL", "OH", "GA", "NC", "MI"];

/// The landing claims' header.
pub const CLAIMS_HEADER: &str = "claim_id,patient_id,prescriber_npi,ndc,fill_date,quantity,days_supply,paid_amount,payer,state,adjudicated_at";

/// What was generated.
#[derive(Debug, Clone)]
pub struct SampleData {
    /// One CSV file of claims per month.
    pub claim_files: Vec<PathBuf>,
    /// The product reference (CSV).
    pub products_file: PathBuf,
    /// Claim lines written, resubmissions included.
    pub claim_rows: usize,
}

/// Writes `rows` claim lines spread over the months of 2024 given (1-based), plus the
/// product reference, below `dir` (`landing/claims/claims_2024_MM.csv`,
/// `landing/products/products.csv`).
pub fn write_claims(
    dir: &Path,
    rows: usize,
    months: &[u32],
    seed: u64,
) -> std::io::Result<SampleData> {
    let mut rng = StdRng::seed_from_u64(seed);
    let claims_dir = dir.join("landing").join("claims");
    let products_dir = dir.join("landing").join("products");
    std::fs::create_dir_all(&claims_dir)?;
    std::fs::create_dir_all(&products_dir)?;

    let products_file = products_dir.join("products.csv");
    let mut products = std::io::BufWriter::new(std::fs::File::create(&products_file)?);
    writeln!(products, "ndc,product_name,therapeutic_class")?;
    for (ndc, name, class) in PRODUCTS {
        writeln!(products, "{ndc},{name},{class}")?;
    }
    products.flush()?;

    let months: Vec<u32> = if months.is_empty() {
        vec![1]
    } else {
        months.to_vec()
    };
    let per_month = rows.div_ceil(months.len());
    let prescribers: Vec<u64> = (0..200).map(|i| 1_003_000_000 + i * 7_919).collect();
    let patients = (rows / 4).max(1);
    let mut claim_files = Vec::new();
    let mut written = 0usize;
    let mut claim_number = 0usize;
    for &month in &months {
        let path = claims_dir.join(format!("claims_2024_{month:02}.csv"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "{CLAIMS_HEADER}")?;
        let mut in_month = 0usize;
        while in_month < per_month && written < rows {
            claim_number += 1;
            let day = rng.random_range(1..=28u32);
            let (ndc, _, _) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
            let days_supply = if rng.random_bool(0.8) { 30 } else { 90 };
            let quantity = days_supply / 30 * [1, 2, 4][rng.random_range(0..3)];
            let paid_cents: u64 = rng.random_range(1_500..95_000);
            let payer = PAYERS[rng.random_range(0..PAYERS.len())];
            let state = STATES[rng.random_range(0..STATES.len())];
            // Landing text is untidy: padded payers and states.
            let payer = if rng.random_bool(0.2) {
                format!(" {payer}  ")
            } else {
                payer.to_owned()
            };
            let state = if rng.random_bool(0.1) {
                format!("{state} ")
            } else {
                state.to_owned()
            };
            // A few lines arrive without a quantity; the cleansing job drops them.
            let quantity = if rng.random_bool(0.01) {
                String::new()
            } else {
                quantity.to_string()
            };
            let patient = rng.random_range(0..patients);
            let npi = prescribers[rng.random_range(0..prescribers.len())];
            let hour = rng.random_range(0..24u32);
            let line = |paid: u64, hour: u32| {
                format!(
                    "C{claim_number:08},P{patient:07},{npi},{ndc},2024-{month:02}-{day:02},{quantity},{days_supply},{}.{:02},{payer},{state},2024-{month:02}-{day:02} {hour:02}:{:02}:00",
                    paid / 100,
                    paid % 100,
                    (claim_number * 7) % 60
                )
            };
            writeln!(out, "{}", line(paid_cents, hour))?;
            written += 1;
            in_month += 1;
            // About 3% of claims are resubmitted later the same day with a corrected
            // amount; the cleansing job keeps the latest adjudication.
            if rng.random_bool(0.03) && written < rows && hour < 23 {
                writeln!(
                    out,
                    "{}",
                    line(paid_cents + rng.random_range(1..500), hour + 1)
                )?;
                written += 1;
                in_month += 1;
            }
        }
        out.flush()?;
        claim_files.push(path);
    }
    Ok(SampleData {
        claim_files,
        products_file,
        claim_rows: written,
    })
}
