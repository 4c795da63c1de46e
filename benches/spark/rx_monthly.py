"""Monthly prescription activity by product, prescriber and state: the PySpark twin of
the Sluice job benches/jobs/rx_monthly.yaml, for the Sluice vs Spark vs DuckDB benchmark.
Its output is meant to equal Sluice's row for row.

    spark-submit --master local[2] benches/spark/rx_monthly.py \
        --landing L --staging S --curated C

reads the cleansed claims S/claims (Parquet, as benches/spark/claims_cleanse.py writes
them) and the product reference L/products (CSV), and writes C/rx_monthly (Parquet,
partitioned by fill_month, dynamic overwrite): total prescriptions (trx), new
prescriptions (nrx: a patient's first fill of the product), distinct patients, units,
paid amount, and each product's share of its therapeutic class's prescriptions in the
month (class_share, rounded to 6 places).

The job is one SQL step, run as the definition has it (`input` is the claims).

Where matching Sluice needs something unusual: nothing in the query. Sluice's
`overwrite_partitions` mode is Spark's dynamic partition overwrite. Like Sluice, the
products CSV is read as text (no schema inference), and fill_month stays the string
partition value (Spark's partition inference only makes `yyyy-MM-dd` values dates).
Types agree with Sluice's: trx/nrx/patients/units bigint, paid_amount decimal(22,2),
class_share double.
"""

import argparse
import sys

from pyspark.sql import DataFrame, SparkSession

RX_MONTHLY = """
WITH fills AS (
  SELECT c.fill_month, c.prescriber_npi, c.state, c.patient_id, c.quantity,
         c.paid_amount, p.product_name, p.therapeutic_class,
         row_number() OVER (PARTITION BY c.patient_id, p.product_name
                            ORDER BY c.fill_date, c.claim_id) AS fill_number
  FROM input c
  JOIN products p ON c.ndc = p.ndc
),
monthly AS (
  SELECT fill_month, product_name, therapeutic_class, prescriber_npi, state,
         count(*) AS trx,
         sum(CASE WHEN fill_number = 1 THEN 1 ELSE 0 END) AS nrx,
         count(DISTINCT patient_id) AS patients,
         sum(quantity) AS units,
         sum(paid_amount) AS paid_amount
  FROM fills
  GROUP BY fill_month, product_name, therapeutic_class, prescriber_npi, state
)
SELECT fill_month, product_name, therapeutic_class, prescriber_npi, state,
       trx, nrx, patients, units, paid_amount,
       round(CAST(sum(trx) OVER (PARTITION BY fill_month, product_name) AS DOUBLE)
             / sum(trx) OVER (PARTITION BY fill_month, therapeutic_class), 6)
         AS class_share
FROM monthly
"""


def read_sources(spark: SparkSession, landing: str, staging: str) -> None:
    """Registers the sources as the views the query names."""
    spark.read.parquet(f"{staging}/claims").createOrReplaceTempView("input")
    spark.read.option("header", True).csv(f"{landing}/products") \
        .createOrReplaceTempView("products")


def rx_monthly(spark: SparkSession) -> DataFrame:
    return spark.sql(RX_MONTHLY)


def write_rx_monthly(df: DataFrame, curated: str) -> None:
    df.write.mode("overwrite").partitionBy("fill_month").parquet(f"{curated}/rx_monthly")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True)
    parser.add_argument("--staging", required=True)
    parser.add_argument("--curated", required=True)
    args = parser.parse_args()

    spark = (SparkSession.builder.appName("rx_monthly")
             .config("spark.sql.shuffle.partitions", 4)
             .config("spark.sql.ansi.enabled", True)
             .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    try:
        read_sources(spark, args.landing, args.staging)
        write_rx_monthly(rx_monthly(spark), args.curated)
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
