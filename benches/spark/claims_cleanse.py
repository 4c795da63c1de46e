"""Cleanse, validate and mask landed pharmacy claims: the PySpark twin of the Sluice job
benches/jobs/claims_cleanse.yaml (jobs/examples/claims_quality.yaml), for the Sluice vs
Spark vs DuckDB benchmark. Its outputs are meant to equal Sluice's row for row.

    export SLUICE_MASK_KEY=...   # the tokenization key, as for Sluice
    spark-submit --master local[2] benches/spark/claims_cleanse.py \
        --landing L --staging S --run-date YYYY-MM-DD

reads L/claims, L/prescribers, L/payer_aliases (CSV with a header) and writes
  S/claims             valid rows, Parquet, partitioned by fill_month (dynamic overwrite)
  S/quarantine/claims  rows that broke a rule, Parquet, unpartitioned, plus _dq_rules,
                       _dq_run_id and _dq_source_file
or, when more than 10% of the rows would be quarantined (or there are no rows), writes
nothing and exits with status 1, as Sluice fails the run.

The steps, in the definition's order: nulls, collapse_whitespace, parse, derive state,
derive ndc11, derive ndc, standardize payer, derive fill_month, mask; then the quality
rules. Only built-in Spark SQL functions; the reference tables are broadcast.

Where matching Sluice needs something unusual:
- Sluice's `overwrite_partitions` mode is Spark's dynamic partition overwrite.
- Timestamps: `adjudicated_at` text is read as UTC (Sluice parses naive text as UTC), so
  the session time zone is UTC; Parquet timestamps are written as INT64 microseconds
  (spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS) as Sluice writes them, not
  Spark's default INT96.
- Sluice's tolerant number parsing (parsing.rs `clean_number`: `$`/`€`/`£`, thousands
  separators grouped by three, accounting parentheses) is rebuilt from regexes;
  `(-5)` is +5 there (both signs flip), and so it is here.
- Sluice's `collapse_whitespace` is Rust's split_whitespace, over Unicode whitespace, so
  the regex here uses `(?U)\\s`. Sluice's parse, us_state, normalize_ndc, zip3,
  npi_valid and standardize also trim or collapse their input; here they run after the
  collapse_whitespace step has done it to every column, so that is not repeated.
- tokenize is HMAC-SHA256(key, b"sluice-token\\0" + value), first 12 bytes as hex after
  `tok_`: HMAC is spelled out with sha2(), the padded key blocks computed on the driver.
- Dates and timestamps use try_to_date / try_to_timestamp per pattern. Spark's `MM`,
  `dd` and `HH` want two digits, while Sluice (chrono) also reads `3/7/2024`,
  `1950-5-6` and `2024-01-05 7:00:00`; the generated data always pads, so the outputs
  agree on it (a landed `1950-5-6` would be valid in Sluice, quarantined here).
- `_dq_rules` lists the broken rules in Sluice's order: the parse rules (one per parsed
  column, alphabetical), then the declared rules in definition order.
- `_dq_source_file` is Spark's `file:///...` path; Sluice writes the path without the
  scheme. The file names agree.
"""

import argparse
import hashlib
import os
import sys
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

# The definition, as constants.
NULL_SENTINELS = ["N/A", "NULL", "UNKNOWN", "9999-12-31"]
FILL_DATE_FORMATS = ["yyyy-MM-dd", "MM/dd/yyyy", "dd-MMM-yyyy"]
# Parse targets, in Sluice's order (its parse step is keyed by column name, sorted).
PARSE = {
    "adjudicated_at": "timestamp",
    "days_supply": "int",
    "fill_date": "date",
    "paid_amount": "decimal(12,2)",
    "patient_birth_date": "date",
    "quantity": "int",
}
STATE_CODES = ["CA", "TX", "NY", "FL", "PA", "IL", "OH", "GA", "NC", "MI"]
MAX_QUARANTINED_PERCENT = 10.0
FRESHNESS_MAX_AGE_DAYS = 400
MIN_KEY_BYTES = 16
TOKEN_DOMAIN = b"sluice-token\x00"

# Hidden helper columns start with this and are never written.
HIDDEN = "__"
SOURCE_FILE = "__source_file"
QUARANTINED = "__quarantined"

# functions.rs STATES: code and name of every state, DC and territory.
US_STATES = {
    "AL": "ALABAMA", "AK": "ALASKA", "AZ": "ARIZONA", "AR": "ARKANSAS",
    "CA": "CALIFORNIA", "CO": "COLORADO", "CT": "CONNECTICUT", "DE": "DELAWARE",
    "DC": "DISTRICT OF COLUMBIA", "FL": "FLORIDA", "GA": "GEORGIA", "HI": "HAWAII",
    "ID": "IDAHO", "IL": "ILLINOIS", "IN": "INDIANA", "IA": "IOWA", "KS": "KANSAS",
    "KY": "KENTUCKY", "LA": "LOUISIANA", "ME": "MAINE", "MD": "MARYLAND",
    "MA": "MASSACHUSETTS", "MI": "MICHIGAN", "MN": "MINNESOTA", "MS": "MISSISSIPPI",
    "MO": "MISSOURI", "MT": "MONTANA", "NE": "NEBRASKA", "NV": "NEVADA",
    "NH": "NEW HAMPSHIRE", "NJ": "NEW JERSEY", "NM": "NEW MEXICO", "NY": "NEW YORK",
    "NC": "NORTH CAROLINA", "ND": "NORTH DAKOTA", "OH": "OHIO", "OK": "OKLAHOMA",
    "OR": "OREGON", "PA": "PENNSYLVANIA", "RI": "RHODE ISLAND", "SC": "SOUTH CAROLINA",
    "SD": "SOUTH DAKOTA", "TN": "TENNESSEE", "TX": "TEXAS", "UT": "UTAH",
    "VT": "VERMONT", "VA": "VIRGINIA", "WA": "WASHINGTON", "WV": "WEST VIRGINIA",
    "WI": "WISCONSIN", "WY": "WYOMING", "PR": "PUERTO RICO", "GU": "GUAM",
    "VI": "VIRGIN ISLANDS", "AS": "AMERICAN SAMOA", "MP": "NORTHERN MARIANA ISLANDS",
}


def visible(df: DataFrame) -> list:
    return [c for c in df.columns if not c.startswith(HIDDEN)]


def collapse(c: Column) -> Column:
    """functions.rs collapse_whitespace: trimmed, inner whitespace runs made one space."""
    return F.trim(F.regexp_replace(c, r"(?U)\s+", " "))


# --- sources -------------------------------------------------------------------------


def read_csv(spark: SparkSession, path: str) -> DataFrame:
    # Every column as text (Sluice reads CSV as strings); empty fields are NULL.
    return spark.read.option("header", True).csv(path)


def read_claims(spark: SparkSession, landing: str) -> DataFrame:
    claims = read_csv(spark, f"{landing}/claims")
    return claims.withColumn(SOURCE_FILE, F.col("_metadata.file_path"))


# --- steps ---------------------------------------------------------------------------


def nulls(df: DataFrame) -> DataFrame:
    """Empty strings and sentinels (trimmed, any case) become NULL, in every column."""
    columns = visible(df)

    def cleaned(name):
        trimmed = F.trim(F.col(name))
        missing = (trimmed == "") | F.upper(trimmed).isin(NULL_SENTINELS)
        return F.when(~missing, F.col(name)).alias(name)
    return df.select([cleaned(c) if c in columns else F.col(c) for c in df.columns])


def collapse_whitespace(df: DataFrame) -> DataFrame:
    columns = visible(df)
    return df.select([collapse(F.col(c)).alias(c) if c in columns else F.col(c)
                      for c in df.columns])


# What is left of a number once parentheses are gone: sign, currency sign, digits
# (thousands grouped by three with `,` or ` `), fraction, currency sign.
NUMBER = (r"^[-+]?\s*[$€£]*\s*"
          r"(?:[0-9]+|[0-9]{1,3}(?:[, ][0-9]{3})+)"
          r"(?:\.[0-9]+)?\s*[$€£]*$")


def parse_number(c: Column) -> Column:
    """parsing.rs clean_number: `$1,234.50` → `1234.50`, `(12.00)` → `-12.00`; NULL
    when the text is not a number."""
    parenthesized = c.startswith("(") & c.endswith(")")
    inner = F.when(parenthesized, F.trim(c.substr(F.lit(2), F.length(c) - 2))).otherwise(c)
    negative = parenthesized != inner.startswith("-")
    # Once the text is known to be a number, its digits and point are the number.
    return F.when(inner.rlike(NUMBER),
                  F.concat(F.when(negative, "-").otherwise(""),
                           F.regexp_replace(inner, "[^0-9.]", "")))


def parsed(name: str, target: str) -> Column:
    raw = F.col(name)
    if target == "date":
        formats = FILL_DATE_FORMATS if name == "fill_date" else ["yyyy-MM-dd"]
        return F.coalesce(*[F.try_to_date(raw, f) for f in formats])
    if target == "timestamp":
        return F.coalesce(F.try_to_timestamp(raw, F.lit("yyyy-MM-dd HH:mm:ss")),
                          F.try_to_timestamp(raw, F.lit("yyyy-MM-dd")))
    return parse_number(raw).try_cast(target)


def parse(df: DataFrame) -> DataFrame:
    """Types the columns; the text of a value that did not parse is kept in a hidden
    column, which breaks the rule `<column>_parses`."""
    failures = [F.when(F.col(name).isNotNull() & parsed(name, target).isNull(),
                       F.col(name)).alias(f"__parse_{name}")
                for name, target in PARSE.items()]
    columns = [parsed(c, PARSE[c]).alias(c) if c in PARSE else F.col(c) for c in df.columns]
    return df.select(columns + failures)


def us_state(c: Column) -> Column:
    """functions.rs us_state: the 2-letter code from a code or a name, any case."""
    lookup = F.create_map(*[F.lit(x) for code, name in US_STATES.items()
                            for x in (code, code, name, code)])
    return lookup[F.regexp_replace(F.upper(c), r"\.", "")]


def normalize_ndc(ndc: Column) -> Column:
    """functions.rs normalize_ndc: 11 digits from the 5-4-2, 4-4-2, 5-3-2, 5-4-1 or
    11-digit forms; NULL otherwise."""
    part = lambda i: F.split_part(ndc, F.lit("-"), F.lit(i))
    return (F.when(ndc.rlike(r"^[0-9]{11}$"), ndc)
            .when(ndc.rlike(r"^[0-9]{5}-[0-9]{4}-[0-9]{2}$"), F.concat(part(1), part(2), part(3)))
            .when(ndc.rlike(r"^[0-9]{4}-[0-9]{4}-[0-9]{2}$"),
                  F.concat(F.lit("0"), part(1), part(2), part(3)))
            .when(ndc.rlike(r"^[0-9]{5}-[0-9]{3}-[0-9]{2}$"),
                  F.concat(part(1), F.lit("0"), part(2), part(3)))
            .when(ndc.rlike(r"^[0-9]{5}-[0-9]{4}-[0-9]$"),
                  F.concat(part(1), part(2), F.lit("0"), part(3))))


def derive(df: DataFrame) -> DataFrame:
    """The derive steps before the standardization."""
    ndc11 = F.col("ndc11")
    return (df.withColumn("state", us_state(F.col("state")))
              .withColumn("ndc11", normalize_ndc(F.col("ndc")))
              .withColumn("ndc", F.concat(F.substring(ndc11, 1, 5), F.lit("-"),
                                          F.substring(ndc11, 6, 4), F.lit("-"),
                                          F.substring(ndc11, 10, 2))))


def standardize_payer(df: DataFrame, payer_aliases: DataFrame) -> DataFrame:
    """payer → payer_id through the alias table, ignoring case and extra whitespace;
    an alias mapped twice takes the smallest id."""
    mapping = (payer_aliases
               .select(F.upper(collapse(F.col("alias"))).alias("__payer_key"),
                       F.col("payer_id").alias("__payer_value"))
               .where(F.col("__payer_key").isNotNull())
               .groupBy("__payer_key").agg(F.min("__payer_value").alias("__payer_value")))
    return (df.withColumn("__payer_lookup", F.upper(F.col("payer")))
              .join(F.broadcast(mapping), F.col("__payer_lookup") == F.col("__payer_key"), "left")
              .withColumn("payer_id", F.col("__payer_value"))
              .drop("__payer_lookup", "__payer_key", "__payer_value"))


def derive_fill_month(df: DataFrame) -> DataFrame:
    return df.withColumn("fill_month", F.substring(F.col("fill_date").cast("string"), 1, 7))


def hmac_sha256_hex(key: bytes, message: Column) -> Column:
    """HMAC-SHA256 (RFC 2104) of a binary column as lowercase hex:
    H((K0 ^ opad) || H((K0 ^ ipad) || m)), K0 the key zero-padded to the block."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    block = key.ljust(64, b"\x00")
    inner_pad = bytearray(b ^ 0x36 for b in block)
    outer_pad = bytearray(b ^ 0x5C for b in block)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)


def tokenize(c: Column, key: bytes) -> Column:
    """masking.rs tokenize: `tok_` + the first 12 bytes of the keyed hash, as hex."""
    message = F.concat(F.lit(bytearray(TOKEN_DOMAIN)), c.cast("binary"))
    return F.concat(F.lit("tok_"), F.substring(hmac_sha256_hex(key, message), 1, 24))


def zip3(z: Column) -> Column:
    """masking.rs zip3: the first 3 digits of the ZIP of `12345`, `12345-6789`,
    `123456789` or a ZIP that lost its leading zeros (`2134`); NULL otherwise."""
    zip5 = (F.when(z.rlike(r"^[0-9]{5}(-[0-9]{4})?$|^[0-9]{9}$"), F.substring(z, 1, 5))
            .when(z.rlike(r"^[0-9]{3,4}$"), F.lpad(z, 5, "0")))
    return F.substring(zip5, 1, 3)


def mask(df: DataFrame, key: bytes) -> DataFrame:
    return (df.withColumn("patient_id", tokenize(F.col("patient_id"), key))
              .withColumn("patient_birth_date", F.trunc(F.col("patient_birth_date"), "year"))
              .withColumn("patient_zip", zip3(F.col("patient_zip"))))


# --- quality -------------------------------------------------------------------------


def npi_valid(npi: Column) -> Column:
    """functions.rs npi_valid: 10 digits whose last is the Luhn check digit over
    `80840` + the first nine (the prefix contributes 24)."""
    digit = lambda i: F.ascii(F.substring(npi, i, 1)) - 48
    doubled = lambda d: F.when(d * 2 > 9, d * 2 - 9).otherwise(d * 2)
    total = F.lit(24)
    for i in range(1, 10):
        total = total + (doubled(digit(i)) if i % 2 == 1 else digit(i))
    check = (10 - total % 10) % 10
    return npi.rlike(r"^[0-9]{10}$") & (digit(10) == check)


def with_rule_flags(df: DataFrame, prescribers: DataFrame) -> tuple:
    """Adds the referential and uniqueness helpers; returns the frame and the rules as
    (name, broken) in Sluice's order, `broken` never NULL."""
    npis = (prescribers.select(F.col("npi").alias("__ref_npi"))
            .where(F.col("__ref_npi").isNotNull()).distinct())
    latest_first = Window.partitionBy("claim_id").orderBy(F.col("adjudicated_at").desc_nulls_last())
    df = (df.join(F.broadcast(npis), F.col("prescriber_npi") == F.col("__ref_npi"), "left")
            .withColumn("__claim_row", F.row_number().over(latest_first)))
    c = F.col
    rules = [(f"{name}_parses", c(f"__parse_{name}").isNotNull()) for name in PARSE]
    rules += [
        ("patient_id_present", c("patient_id").isNull()),
        ("npi_check_digit", ~F.coalesce(npi_valid(c("prescriber_npi")), F.lit(True))),
        ("prescriber_known", c("prescriber_npi").isNotNull() & c("__ref_npi").isNull()),
        ("ndc_valid", c("ndc11").isNull()),
        ("paid_amount_in_range", (c("paid_amount") < F.lit(0).cast("decimal(12,2)"))
         | (c("paid_amount") > F.lit(100000).cast("decimal(12,2)"))),
        ("payer_known", c("payer_id").isNull()),
        ("quantity_present", c("quantity").isNull()),
        ("one_row_per_claim", c("claim_id").isNotNull() & (c("__claim_row") > 1)),
        ("state_code", c("state").isNotNull() & ~c("state").isin(STATE_CODES)),
        ("claim_id_format", c("claim_id").isNotNull() & ~c("claim_id").rlike(r"^C[0-9]{8}$")),
    ]
    return df, [(name, F.coalesce(broken, F.lit(False))) for name, broken in rules]


def check_quality(df: DataFrame, prescribers: DataFrame) -> tuple:
    """The rows with their visible columns, one flag per rule (`__rule_<name>`) and
    `__quarantined`; and the rule names in order."""
    df, rules = with_rule_flags(df, prescribers)
    flags = [broken.alias(f"__rule_{name}") for name, broken in rules]
    checked = df.select(*visible(df), SOURCE_FILE, *flags)
    quarantined = F.lit(False)
    for name, _ in rules:
        quarantined = quarantined | F.col(f"__rule_{name}")
    return checked.withColumn(QUARANTINED, quarantined), [name for name, _ in rules]


def judge(checked: DataFrame, rule_names: list, run_date: date) -> list:
    """Counts in one pass and judges the run like Sluice: per-rule counts, the
    quarantine threshold, the row count (fail) and freshness (warn). Returns the
    failures."""
    counts = checked.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_if(F.col(QUARANTINED)).alias("quarantined"),
        F.max("fill_date").alias("newest"),
        *[F.count_if(F.col(f"__rule_{name}")).alias(name) for name in rule_names],
    ).first()
    rows, quarantined, newest = counts["rows"], counts["quarantined"], counts["newest"]
    print(f"rows {rows}, valid {rows - quarantined}, quarantined {quarantined}")
    for name in rule_names:
        print(f"  {name:28} {counts[name]} failed")
    failures = []
    if rows < 1:
        failures.append(f"rule `enough_rows` (row_count) broke: {rows} rows; at least 1 expected")
    if newest is None:
        print("  warning: rule `recent_fills` (freshness) broke: `fill_date` has no values")
    elif (run_date - newest).days > FRESHNESS_MAX_AGE_DAYS:
        print(f"  warning: rule `recent_fills` (freshness) broke: newest `fill_date` is "
              f"{newest}, {(run_date - newest).days} days before {run_date}")
    if rows > 0:
        percent = quarantined * 100.0 / rows
        if percent > MAX_QUARANTINED_PERCENT:
            failures.append(f"{percent:.2f}% of rows quarantined ({quarantined} of {rows}), "
                            f"more than max_quarantined_percent {MAX_QUARANTINED_PERCENT:g}%")
    return failures


# --- outputs -------------------------------------------------------------------------


def write_claims(checked: DataFrame, staging: str) -> None:
    (checked.where(~F.col(QUARANTINED)).select(visible(checked))
     .write.mode("overwrite").partitionBy("fill_month").parquet(f"{staging}/claims"))


def write_quarantine(checked: DataFrame, rule_names: list, run_id: str, staging: str) -> None:
    # filter(), not array_compact(): its items stay nullable, as in Sluice's files.
    broken = F.filter(F.array(*[F.when(F.col(f"__rule_{name}"), F.lit(name))
                                for name in rule_names]), lambda rule: rule.isNotNull())
    (checked.where(F.col(QUARANTINED))
     .select(*visible(checked),
             broken.alias("_dq_rules"),
             F.lit(run_id).alias("_dq_run_id"),
             F.col(SOURCE_FILE).alias("_dq_source_file"))
     .write.mode("overwrite").parquet(f"{staging}/quarantine/claims"))


def mask_key() -> bytes:
    key = os.environ.get("SLUICE_MASK_KEY")
    if key is None:
        sys.exit("masking key env:SLUICE_MASK_KEY is not set in this process")
    key = key.encode()
    if len(key) < MIN_KEY_BYTES:
        sys.exit(f"masking key env:SLUICE_MASK_KEY is shorter than {MIN_KEY_BYTES} bytes")
    return key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True)
    parser.add_argument("--staging", required=True)
    parser.add_argument("--run-date", required=True, type=date.fromisoformat)
    args = parser.parse_args()
    key = mask_key()

    spark = (SparkSession.builder.appName("claims_quality")
             .config("spark.sql.shuffle.partitions", 4)
             .config("spark.sql.ansi.enabled", True)
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
             .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    try:
        claims = read_claims(spark, args.landing)
        prescribers = read_csv(spark, f"{args.landing}/prescribers")
        payer_aliases = read_csv(spark, f"{args.landing}/payer_aliases")

        df = nulls(claims)
        df = collapse_whitespace(df)
        df = parse(df)
        df = derive(df)
        df = standardize_payer(df, payer_aliases)
        df = derive_fill_month(df)
        df = mask(df, key)
        checked, rule_names = check_quality(df, prescribers)

        # Counted first, written after: a run over the threshold writes nothing.
        checked = checked.cache()
        failures = judge(checked, rule_names, args.run_date)
        if failures:
            for failure in failures:
                print(f"  failure: {failure}", file=sys.stderr)
            print("run failed: nothing written", file=sys.stderr)
            return 1
        run_id = spark.sparkContext.applicationId
        write_claims(checked, args.staging)
        write_quarantine(checked, rule_names, run_id, args.staging)
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
