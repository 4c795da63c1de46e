"""A one-SQL-step job of the Sluice benchmark (a TPC-H query, the CSV read), on Spark.

Reads the job's Sluice definition (benches/tpch/qNN.yaml, benches/read/csv_decode.yaml),
registers each of its sources as a view over the folder `<tpch>/<source>` (Parquet, or
CSV with a header read as text, as Sluice's CSV sources read them), runs the definition's SQL step text as
it is, and writes the result as Parquet to `<out>/qNN` (replacing it). The definition's
`conf` (spark.sql.shuffle.partitions) is applied too, so both engines plan alike.

    spark-submit --master local[2] benches/spark/tpch.py \
        --query benches/tpch/q01.yaml --tpch DATA/tpch --out OUT
"""

import argparse
from pathlib import Path

import yaml
from pyspark.sql import SparkSession


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", required=True, help="the query's Sluice definition")
    parser.add_argument("--tpch", required=True, help="folder of one folder per source (Parquet, or CSV for a CSV source)")
    parser.add_argument("--out", required=True, help="the result goes to <out>/<output name>")
    args = parser.parse_args()

    definition = yaml.safe_load(Path(args.query).read_text())
    (step,) = definition["steps"]
    (output,) = definition["outputs"]
    builder = SparkSession.builder.appName(definition["name"])
    for key, value in (definition.get("conf") or {}).items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    for table in definition["sources"]:
        folder = str(Path(args.tpch) / table)
        if definition["sources"][table].get("format") == "csv":
            frame = spark.read.option("header", True).csv(folder)
        else:
            frame = spark.read.parquet(folder)
        frame.createOrReplaceTempView(table)
    result = spark.sql(step["sql"])
    result.write.mode("overwrite").parquet(str(Path(args.out) / output["name"]))
    spark.stop()


if __name__ == "__main__":
    main()
