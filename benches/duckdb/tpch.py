"""A one-SQL-step job of the Sluice benchmark (a TPC-H query, the CSV read), on DuckDB.

Reads the job's Sluice definition (benches/tpch/qNN.yaml, benches/read/csv_decode.yaml),
creates a view per source over `<tpch>/<source>` (Parquet files, or CSV files with a
header read as text, as Sluice's CSV sources read them), runs the definition's SQL step
text as it is and writes the result as Parquet to `<out>/<output>/part-0.parquet`.

    python benches/duckdb/tpch.py --query benches/tpch/q01.yaml --tpch DATA/tpch --out OUT --threads 2
"""

import argparse
import shutil
from pathlib import Path

import duckdb
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", required=True, help="the query's Sluice definition")
    parser.add_argument("--tpch", required=True, help="folder of one folder per source (Parquet, or CSV for a CSV source)")
    parser.add_argument("--out", required=True, help="the result goes to <out>/<output name>")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    definition = yaml.safe_load(Path(args.query).read_text())
    (step,) = definition["steps"]
    (output,) = definition["outputs"]
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    for table in definition["sources"]:
        if definition["sources"][table].get("format") == "csv":
            files = str(Path(args.tpch) / table / "*")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_csv('{files}', header = true, "
                        "all_varchar = true, delim = ',', quote = '\"', escape = '\"')")
        else:
            files = str(Path(args.tpch) / table / "*.parquet")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}')")
    target = Path(args.out) / output["name"]
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    sql = step["sql"].strip().rstrip(";")
    con.execute(f"COPY ({sql}) TO '{target / 'part-0.parquet'}' (FORMAT parquet)")


if __name__ == "__main__":
    main()
