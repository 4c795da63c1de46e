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

/// Options of [`generate_claims`].
#[derive(Debug, Clone)]
pub struct ClaimsOptions {
    /// Claim lines to write, resubmitted duplicates included.
    pub rows: usize,
    /// The random seed: the same seed and options give the same files.
    pub seed: u64,
    /// Months of 2024 (1-based) the claims are spread over, one file each.
    pub months: Vec<u32>,
    /// Share of claims that carry one field defect (0–1), spread evenly over the kinds.
    pub defect_rate: f64,
    /// Share of claims resubmitted as a duplicate line.
    pub duplicate_rate: f64,
}

impl Default for ClaimsOptions {
    fn default() -> Self {
        Self {
            rows: 100_000,
            seed: 42,
            months: vec![1, 2, 3],
            defect_rate: 0.04,
            duplicate_rate: 0.01,
        }
    }
}

/// The landed claims' header, with the patient's birth date and ZIP (PHI to mask).
pub const LANDED_CLAIMS_HEADER: &str = "claim_id,patient_id,patient_birth_date,patient_zip,prescriber_npi,ndc,fill_date,quantity,days_supply,paid_amount,payer,state,adjudicated_at";

/// Field defects the generator injects, one at most per claim. The names are the keys
/// of [`GroundTruth::defects`].
pub const DEFECTS: [&str; 8] = [
    "null_patient_id",
    "bad_npi_check_digit",
    "unknown_prescriber",
    "malformed_ndc",
    "unparseable_fill_date",
    "out_of_range_paid_amount",
    "unknown_payer",
    "missing_quantity",
];

/// Exactly what was written: counts of rows with each defect (a duplicate line
/// carries its original's defect and is counted again), of the noise that cleansing
/// must absorb, and of the rows a correct cleansing job quarantines.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroundTruth {
    /// The seed.
    pub seed: u64,
    /// Claim lines written.
    pub rows: u64,
    /// Rows per defect kind; `duplicate_claim` counts the superseded lines (the earlier
    /// adjudication of a resubmitted claim).
    pub defects: std::collections::BTreeMap<String, u64>,
    /// Rows with untidy but valid values: padded or mixed-case text, state names,
    /// other date, NDC and amount formats.
    pub noise: std::collections::BTreeMap<String, u64>,
    /// Rows with at least one defect (or superseded): what the quarantine must hold.
    pub quarantined_rows: u64,
    /// Rows without any: what the staging output must hold.
    pub valid_rows: u64,
    /// Distinct raw patient ids written, so a test can look for them where they must
    /// not be.
    pub patients: u64,
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
}

/// Payers: id, name, and the variants claims spell them with.
pub const PAYER_ALIASES: &[(&str, &str, &[&str])] = &[
    ("P001", "Aetna", &["Aetna", "Aetna Inc", "AETNA HEALTH"]),
    (
        "P002",
        "UnitedHealthcare",
        &["UnitedHealthcare", "United Healthcare", "UHC"],
    ),
    ("P003", "Cigna", &["Cigna", "CIGNA Corp"]),
    ("P004", "Humana", &["Humana", "Humana Inc"]),
    (
        "P005",
        "BCBS Texas",
        &["BCBS Texas", "Blue Cross Blue Shield of Texas"],
    ),
    (
        "P006",
        "Medicare Part D",
        &["Medicare Part D", "Medicare D"],
    ),
    ("P007", "Medicaid", &["Medicaid"]),
];

/// States as claims carry them: code, and full name.
const STATE_NAMES: &[(&str, &str)] = &[
    ("CA", "California"),
    ("TX", "Texas"),
    ("NY", "New York"),
    ("FL", "Florida"),
    ("PA", "Pennsylvania"),
    ("IL", "Illinois"),
    ("OH", "Ohio"),
    ("GA", "Georgia"),
    ("NC", "North Carolina"),
    ("MI", "Michigan"),
];

const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An NPI with a valid check digit, from 9 digits.
fn npi_with_check_digit(first_nine: u64) -> String {
    let base = format!("{first_nine:09}");
    (0..10)
        .map(|d| format!("{base}{d}"))
        .find(|npi| crate::functions::npi_valid(npi))
        .unwrap_or(base)
}

/// Writes landed claims with injected defects, the reference data the cleansing job
/// checks them against, and `ground_truth.json`, below `dir`:
/// `landing/{claims,products,prescribers,payers,payer_aliases}/…`. Months are
/// written in parallel; each is deterministic for the seed.
pub fn generate_claims(dir: &Path, options: &ClaimsOptions) -> std::io::Result<GroundTruth> {
    let landing = dir.join("landing");
    for folder in [
        "claims",
        "products",
        "prescribers",
        "payers",
        "payer_aliases",
    ] {
        std::fs::create_dir_all(landing.join(folder))?;
    }
    let mut files = Vec::new();
    let mut write_reference =
        |name: &str, header: &str, lines: Vec<String>| -> std::io::Result<()> {
            let relative = format!("landing/{name}/{name}.csv");
            let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(&relative))?);
            writeln!(out, "{header}")?;
            for line in lines {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
            files.push(relative);
            Ok(())
        };
    write_reference(
        "products",
        "ndc,product_name,therapeutic_class",
        PRODUCTS
            .iter()
            .map(|(ndc, name, class)| format!("{ndc},{name},{class}"))
            .collect(),
    )?;
    let prescribers: Vec<String> = (0..400u64)
        .map(|i| npi_with_check_digit(100_300_000 + i * 7_919))
        .collect();
    write_reference(
        "prescribers",
        "npi,specialty",
        prescribers
            .iter()
            .enumerate()
            .map(|(i, npi)| {
                let specialty = ["Endocrinology", "Internal Medicine", "Family Medicine"][i % 3];
                format!("{npi},{specialty}")
            })
            .collect(),
    )?;
    write_reference(
        "payers",
        "payer_id,payer_name",
        PAYER_ALIASES
            .iter()
            .map(|(id, name, _)| format!("{id},{name}"))
            .collect(),
    )?;
    write_reference(
        "payer_aliases",
        "alias,payer_id",
        PAYER_ALIASES
            .iter()
            .flat_map(|(id, _, aliases)| aliases.iter().map(move |alias| format!("{alias},{id}")))
            .collect(),
    )?;

    let months: Vec<u32> = if options.months.is_empty() {
        vec![1]
    } else {
        options.months.clone()
    };
    let per_month = options.rows / months.len();
    let extra = options.rows % months.len();
    let patients = (options.rows / 4).max(1) as u64;
    let month_results: Vec<std::io::Result<(String, MonthTruth)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = months
            .iter()
            .enumerate()
            .map(|(index, &month)| {
                let rows = per_month + usize::from(index < extra);
                let prescribers = &prescribers;
                let first_claim = index * (per_month + 1);
                scope.spawn(move || {
                    write_claims_month(
                        dir,
                        month,
                        rows,
                        first_claim,
                        patients,
                        prescribers,
                        options,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a month's writer panicked")))
            })
            .collect()
    });
    let mut truth = GroundTruth {
        seed: options.seed,
        ..GroundTruth::default()
    };
    for name in DEFECTS.iter().chain(&["duplicate_claim"]) {
        truth.defects.insert((*name).to_owned(), 0);
    }
    let mut seen_patients = std::collections::HashSet::new();
    for result in month_results {
        let (relative, month) = result?;
        files.push(relative);
        truth.rows += month.rows;
        truth.quarantined_rows += month.quarantined;
        for (name, count) in month.defects {
            *truth.defects.entry(name.to_owned()).or_default() += count;
        }
        for (name, count) in month.noise {
            *truth.noise.entry(name.to_owned()).or_default() += count;
        }
        seen_patients.extend(month.patients);
    }
    truth.valid_rows = truth.rows - truth.quarantined_rows;
    truth.patients = seen_patients.len() as u64;
    files.sort();
    truth.files = files;
    let json = serde_json::to_vec_pretty(&truth).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("ground_truth.json"), json)?;
    Ok(truth)
}

#[derive(Default)]
struct MonthTruth {
    rows: u64,
    quarantined: u64,
    defects: std::collections::BTreeMap<&'static str, u64>,
    noise: std::collections::BTreeMap<&'static str, u64>,
    patients: std::collections::HashSet<u64>,
}

/// One claim line before it is written, so a resubmission can copy it.
struct Claim {
    patient: Option<u64>,
    patient_text: String,
    birth: String,
    zip: String,
    npi: String,
    ndc: String,
    fill_date: String,
    quantity: String,
    days_supply: u32,
    paid: String,
    payer: String,
    state: String,
    defect: Option<&'static str>,
}

#[allow(clippy::too_many_arguments)]
fn write_claims_month(
    dir: &Path,
    month: u32,
    rows: usize,
    first_claim: usize,
    patients: u64,
    prescribers: &[String],
    options: &ClaimsOptions,
) -> std::io::Result<(String, MonthTruth)> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ (u64::from(month) << 32));
    let relative = format!("landing/claims/claims_2024_{month:02}.csv");
    let mut out =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(&relative))?);
    writeln!(out, "{LANDED_CLAIMS_HEADER}")?;
    let mut truth = MonthTruth::default();
    let mut written = 0usize;
    let mut claim_number = first_claim;
    let mut line = String::with_capacity(256);
    while written < rows {
        claim_number += 1;
        let day = rng.random_range(1..=28u32);
        let noise = |truth: &mut MonthTruth, kind: &'static str| {
            *truth.noise.entry(kind).or_default() += 1;
        };
        let defect = if rng.random_bool(options.defect_rate.clamp(0.0, 1.0)) {
            Some(DEFECTS[rng.random_range(0..DEFECTS.len())])
        } else {
            None
        };
        let patient = rng.random_range(0..patients);
        let (patient, patient_text) = if defect == Some("null_patient_id") {
            (
                None,
                ["", "N/A", "UNKNOWN", " "][rng.random_range(0..4)].to_owned(),
            )
        } else {
            (Some(patient), format!("P{patient:07}"))
        };
        let birth = format!(
            "{}-{:02}-{:02}",
            rng.random_range(1940..2005u32),
            rng.random_range(1..=12u32),
            rng.random_range(1..=28u32)
        );
        let zip = format!("{:05}", rng.random_range(1_000..99_950u32));
        let npi = match defect {
            Some("bad_npi_check_digit") => {
                let valid = &prescribers[rng.random_range(0..prescribers.len())];
                let check = valid[9..].parse::<u32>().unwrap_or(0);
                format!(
                    "{}{}",
                    &valid[..9],
                    (check + rng.random_range(1..10u32)) % 10
                )
            }
            Some("unknown_prescriber") => npi_with_check_digit(900_000_000 + claim_number as u64),
            _ => prescribers[rng.random_range(0..prescribers.len())].clone(),
        };
        let (product_ndc, _, _) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
        let ndc = if defect == Some("malformed_ndc") {
            ["1234-56", "00002-14X3-80", "000021433", "NDC-UNKNOWN-1"][rng.random_range(0..4)]
                .to_owned()
        } else if rng.random_bool(0.1) {
            noise(&mut truth, "ndc_without_dashes_or_padding");
            // 11 digits without dashes, or the 10-digit 4-4-2 form.
            if product_ndc.starts_with('0') && rng.random_bool(0.5) {
                product_ndc[1..].to_owned()
            } else {
                product_ndc.replace('-', "")
            }
        } else {
            product_ndc.to_owned()
        };
        let fill_date = if defect == Some("unparseable_fill_date") {
            [
                "2024-13-45",
                "2024-02-30",
                "31/31/2024",
                "20241345",
                "2024/01/15x",
            ][rng.random_range(0..5)]
            .to_owned()
        } else {
            match rng.random_range(0..10u32) {
                0 => {
                    noise(&mut truth, "date_us_format");
                    format!("{month:02}/{day:02}/2024")
                }
                1 => {
                    noise(&mut truth, "date_month_name_format");
                    format!("{day:02}-{}-2024", MONTH_NAMES[(month - 1) as usize])
                }
                _ => format!("2024-{month:02}-{day:02}"),
            }
        };
        let days_supply = if rng.random_bool(0.8) { 30 } else { 90 };
        let quantity = if defect == Some("missing_quantity") {
            ["", "N/A", "UNKNOWN"][rng.random_range(0..3)].to_owned()
        } else {
            (days_supply / 30 * [1, 2, 4][rng.random_range(0..3)]).to_string()
        };
        let paid = if defect == Some("out_of_range_paid_amount") {
            ["-25.00", "-0.01", "250000.00", "1000000.50"][rng.random_range(0..4)].to_owned()
        } else {
            let cents: u64 = rng.random_range(1_500..250_000);
            if rng.random_bool(0.1) {
                noise(&mut truth, "amount_with_currency_sign");
                let dollars = cents / 100;
                let dollars = if dollars >= 1000 {
                    format!("{},{:03}", dollars / 1000, dollars % 1000)
                } else {
                    dollars.to_string()
                };
                format!("\"${dollars}.{:02}\"", cents % 100)
            } else {
                format!("{}.{:02}", cents / 100, cents % 100)
            }
        };
        let payer = if defect == Some("unknown_payer") {
            ["Acme Health Plan", "Self Pay Co", "Unknown Insurer LLC"][rng.random_range(0..3)]
                .to_owned()
        } else {
            let (_, _, aliases) = PAYER_ALIASES[rng.random_range(0..PAYER_ALIASES.len())];
            aliases[rng.random_range(0..aliases.len())].to_owned()
        };
        let payer = untidy(&mut rng, &mut truth, payer);
        let (code, name) = STATE_NAMES[rng.random_range(0..STATE_NAMES.len())];
        let state = if rng.random_bool(0.05) {
            noise(&mut truth, "state_full_name");
            name.to_owned()
        } else {
            code.to_owned()
        };
        let state = untidy(&mut rng, &mut truth, state);
        let claim = Claim {
            patient,
            patient_text,
            birth,
            zip,
            npi,
            ndc,
            fill_date,
            quantity,
            days_supply,
            paid,
            payer,
            state,
            defect,
        };
        let hour = rng.random_range(0..23u32);
        let resubmitted =
            written + 1 < rows && rng.random_bool(options.duplicate_rate.clamp(0.0, 1.0));
        // The original line; when resubmitted, it is superseded by the later one.
        write_claim(&mut out, &mut line, &claim, claim_number, month, day, hour)?;
        record(&mut truth, &claim, resubmitted);
        written += 1;
        if resubmitted {
            write_claim(
                &mut out,
                &mut line,
                &claim,
                claim_number,
                month,
                day,
                hour + 1,
            )?;
            record(&mut truth, &claim, false);
            *truth.defects.entry("duplicate_claim").or_default() += 1;
            written += 1;
        }
    }
    out.flush()?;
    Ok((relative, truth))
}

fn record(truth: &mut MonthTruth, claim: &Claim, superseded: bool) {
    truth.rows += 1;
    if let Some(defect) = claim.defect {
        *truth.defects.entry(defect).or_default() += 1;
    }
    if claim.defect.is_some() || superseded {
        truth.quarantined += 1;
    }
    if let Some(patient) = claim.patient {
        truth.patients.insert(patient);
    }
}

/// Padding and case noise on a text value.
fn untidy(rng: &mut StdRng, truth: &mut MonthTruth, value: String) -> String {
    match rng.random_range(0..20u32) {
        0 => {
            *truth.noise.entry("padded_text").or_default() += 1;
            format!("  {value} ")
        }
        1 => {
            *truth.noise.entry("inner_whitespace").or_default() += 1;
            value.replace(' ', "   ")
        }
        2 => {
            *truth.noise.entry("lower_case").or_default() += 1;
            value.to_lowercase()
        }
        3 => {
            *truth.noise.entry("upper_case").or_default() += 1;
            value.to_uppercase()
        }
        _ => value,
    }
}

fn write_claim(
    out: &mut impl Write,
    line: &mut String,
    claim: &Claim,
    claim_number: usize,
    month: u32,
    day: u32,
    hour: u32,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    line.clear();
    let _ = write!(
        line,
        "C{claim_number:08},{},{},{},{},{},{},{},{},{},{},{},2024-{month:02}-{day:02} {hour:02}:{:02}:00",
        claim.patient_text,
        claim.birth,
        claim.zip,
        claim.npi,
        claim.ndc,
        claim.fill_date,
        claim.quantity,
        claim.days_supply,
        claim.paid,
        claim.payer,
        claim.state,
        claim_number % 60
    );
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}
