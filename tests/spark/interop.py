"""PySpark's side of the interop tests: read what Sluice wrote, write what Sluice reads.

    spark-submit --master local[2] interop.py read  SLUICE_OUTPUT_DIR
    spark-submit --master local[2] interop.py write LANDING_CLAIMS_DIR SPARK_OUTPUT_DIR
    spark-submit --master local[2] interop.py eval  EXPRESSIONS_JSON
    spark-submit --master local[2] interop.py timestamps OUTPUT_DIR

Prints one JSON line prefixed with `RESULT ` for the test to parse.
"""

import json
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def main() -> None:
    spark = SparkSession.builder.appName("sluice-interop").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    mode = sys.argv[1]
    if mode == "read":
        frame = spark.read.parquet(sys.argv[2])
        by_month = {
            row["fill_month"]: row["n"]
            for row in frame.groupBy("fill_month").agg(F.count("*").alias("n")).collect()
        }
        paid = frame.agg(F.sum("paid_amount").alias("paid")).collect()[0]["paid"]
        result = {
            "count": frame.count(),
            "distinct_claims": frame.select("claim_id").distinct().count(),
            "types": {field.name: field.dataType.simpleString() for field in frame.schema.fields},
            "by_month": by_month,
            "paid_cents": int(paid * 100),
        }
    elif mode == "write":
        claims = (
            spark.read.option("header", True).csv(sys.argv[2])
            .where(F.trim("quantity") != "")
            .select(
                F.trim("claim_id").alias("claim_id"),
                F.col("quantity").cast("int").alias("quantity"),
                F.col("paid_amount").cast("decimal(12,2)").alias("paid_amount"),
                F.to_date("fill_date").alias("fill_date"),
                F.substring("fill_date", 1, 7).alias("fill_month"),
            )
        )
        claims.write.mode("overwrite").partitionBy("fill_month").parquet(sys.argv[3])
        written = spark.read.parquet(sys.argv[3])
        by_month = {
            row["fill_month"]: {"n": row["n"], "paid_cents": int(row["paid"] * 100)}
            for row in written.groupBy("fill_month")
            .agg(F.count("*").alias("n"), F.sum("paid_amount").alias("paid"))
            .collect()
        }
        result = {"by_month": by_month}
    elif mode == "eval":
        # Each Spark SQL expression as text (NULL as None), or ERROR when Spark refuses it.
        with open(sys.argv[2]) as handle:
            expressions = json.load(handle)
        results = []
        for expression in expressions:
            try:
                value = spark.sql(f"SELECT CAST(({expression}) AS STRING) AS v").collect()[0]["v"]
            except Exception:  # noqa: BLE001 - any refusal is the answer
                value = "ERROR"
            results.append(value)
        result = {"results": results}
    elif mode == "timestamps":
        # The same instants written as INT96 (Spark's legacy default, still Glue's and
        # Hive's) and as INT64 micros, with their epoch micros as Spark reads them back.
        spark.conf.set("spark.sql.session.timeZone", "America/New_York")
        frame = spark.sql(
            "SELECT id, timestamp_micros(1709290800123456 + id * 86400000001) AS ts "
            "FROM range(5)"
        )
        for kind, setting in [("int96", "INT96"), ("micros", "TIMESTAMP_MICROS")]:
            spark.conf.set("spark.sql.parquet.outputTimestampType", setting)
            frame.write.mode("overwrite").parquet(f"{sys.argv[2]}/{kind}")
        micros = {
            kind: {
                str(row["id"]): row["m"]
                for row in spark.read.parquet(f"{sys.argv[2]}/{kind}")
                .select("id", F.unix_micros("ts").alias("m"))
                .collect()
            }
            for kind in ["int96", "micros"]
        }
        result = {"micros": micros}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("RESULT " + json.dumps(result, sort_keys=True, default=str))
    spark.stop()


if __name__ == "__main__":
    main()
