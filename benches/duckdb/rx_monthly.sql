-- rx_monthly: the DuckDB version of benches/jobs/rx_monthly.yaml, written to give the
-- same rows as Sluice.
--
-- Monthly prescription activity by product, prescriber and state from the cleansed
-- claims (${staging}/claims, as claims_cleanse.sql writes it): total prescriptions (trx),
-- new prescriptions (nrx: a patient's first fill of the product), distinct patients,
-- units and paid amount, and each product's share of its therapeutic class's
-- prescriptions in the month. Written to ${curated}/rx_monthly (Parquet,
-- Hive-partitioned by fill_month).
--
-- Run:  python benches/duckdb/run.py benches/duckdb/rx_monthly.sql --threads 2 \
--           -p landing=L -p staging=S -p curated=C
--
-- The query is the job's own; the differences are Spark's (and Sluice's) defaults made
-- explicit: NULLs sort first in ascending order, integer sums are BIGINT and the sum of
-- a DECIMAL(12,2) is a DECIMAL(22,2) (DuckDB's sums would be HUGEINT and DECIMAL(38,2)).

CREATE OR REPLACE TEMP VIEW claims AS
    SELECT * REPLACE (nullif(fill_month, '__HIVE_DEFAULT_PARTITION__') AS fill_month)
    FROM read_parquet('${staging}/claims/*/*.parquet', hive_partitioning = true,
                      hive_types = {'fill_month': VARCHAR});

CREATE OR REPLACE TEMP VIEW products AS
    SELECT *
    FROM read_csv('${landing}/products/*', header = true, all_varchar = true,
                  delim = ',', quote = '"', escape = '"');

COPY (
    WITH fills AS (
        SELECT c.fill_month, c.prescriber_npi, c.state, c.patient_id, c.quantity,
               c.paid_amount, p.product_name, p.therapeutic_class,
               row_number() OVER (PARTITION BY c.patient_id, p.product_name
                                  ORDER BY c.fill_date NULLS FIRST, c.claim_id NULLS FIRST)
                   AS fill_number
        FROM claims c
        JOIN products p ON c.ndc = p.ndc
    ),
    monthly AS (
        SELECT fill_month, product_name, therapeutic_class, prescriber_npi, state,
               count(*) AS trx,
               CAST(sum(CASE WHEN fill_number = 1 THEN 1 ELSE 0 END) AS BIGINT) AS nrx,
               count(DISTINCT patient_id) AS patients,
               CAST(sum(quantity) AS BIGINT) AS units,
               CAST(sum(paid_amount) AS DECIMAL(22, 2)) AS paid_amount
        FROM fills
        GROUP BY fill_month, product_name, therapeutic_class, prescriber_npi, state
    )
    SELECT product_name, therapeutic_class, prescriber_npi, state,
           trx, nrx, patients, units, paid_amount,
           round(CAST(sum(trx) OVER (PARTITION BY fill_month, product_name) AS DOUBLE)
                 / sum(trx) OVER (PARTITION BY fill_month, therapeutic_class), 6)
               AS class_share,
           coalesce(fill_month, '__HIVE_DEFAULT_PARTITION__') AS fill_month
    FROM monthly
) TO '${curated}/rx_monthly' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (fill_month), OVERWRITE);
