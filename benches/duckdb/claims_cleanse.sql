-- claims_cleanse: the DuckDB version of benches/jobs/claims_cleanse.yaml (Sluice's
-- jobs/examples/claims_quality.yaml), written to give the same rows as Sluice.
--
-- Reads the landed claims CSVs, then, as the Sluice job's steps do:
--   nulls                 empty text and sentinels (N/A, NULL, UNKNOWN, 9999-12-31) -> NULL
--   collapse_whitespace   trimmed, whitespace runs made one space (every text column)
--   parse                 dates in three Spark patterns, a timestamp, ints and a decimal
--                         from tolerant text (currency signs, thousands separators, (12.00));
--                         text that does not parse breaks the rule `<column>_parses`
--   derive                state codes, NDC-11 and the 5-4-2 NDC, fill_month
--   standardize           payer name variants -> payer_id through payer_aliases
--   mask                  patient_id tokenized (HMAC-SHA256), birth date to its year,
--                         ZIP to its first three digits
-- checks the quality rules, and writes the valid rows to ${staging}/claims (Parquet,
-- Hive-partitioned by fill_month) and the rows that broke a rule to
-- ${staging}/quarantine/claims (unpartitioned) with `_dq_rules` (the rules broken, in
-- Sluice's report order), `_dq_run_id` and `_dq_source_file`. Nothing is written when
-- more than 10% of the rows would be quarantined or there are no rows.
--
-- Run:  SLUICE_MASK_KEY=... python benches/duckdb/run.py benches/duckdb/claims_cleanse.sql \
--           --threads 2 -p landing=L -p staging=S -p run_date=2026-04-01
--
-- A Python string.Template: ${landing}, ${staging}, ${run_date}, and from run.py the HMAC
-- pads of the mask key, ${mask_ipad_hex} and ${mask_opad_hex}. No other dollar sign
-- appears in this file: regexes write `\z` for the end of text and `\x24` for a dollar.
--
-- Where Sluice's semantics come from: jobs/src/cleanse.rs (steps), parsing.rs (chrono
-- date patterns, clean_number), functions.rs (us_state, normalize_ndc, npi_valid, zip5),
-- masking.rs (tokenize), quality.rs (rules -> flags), write.rs (routing, `_dq_*`).
-- Known limits of the copy, none of which the generated data reaches: dates before the
-- year 1 or after 9999 (chrono prints them otherwise, so fill_month would differ), and
-- non-ASCII letters that upper() maps onto ASCII in state names. The freshness rule
-- `recent_fills` only warns: the summary line reports it, as Sluice's report does.

SET TimeZone = 'UTC';

-- ---------------------------------------------------------------------------------
-- Text cleansing
-- ---------------------------------------------------------------------------------

CREATE OR REPLACE TEMP MACRO collapse_whitespace(s) AS
    trim(regexp_replace(s,
        '[\t\n\x0B\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]+',
        ' ', 'g'), ' ');

-- The nulls step, then collapse_whitespace, on one text value:
--   nulls: NULL when empty or a sentinel (N/A, NULL, UNKNOWN, 9999-12-31) in any case
--     once trimmed of spaces (DataFusion's btrim; no other text upper()s to a sentinel);
--   collapse_whitespace: Rust's split_whitespace().join(" "), whitespace being
--     char::is_whitespace (Unicode).
-- Most values need neither: the first regex finds those that may (whitespace at an end,
-- two in a row or other than a space; a bare sentinel; empty), so that the rest cost
-- one scan.
CREATE OR REPLACE TEMP MACRO cleanse_text(s) AS
    CASE WHEN regexp_matches(s, '^ | \z|  |[\t\n\x0B\f\r\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]|^(?:[Nn]/[Aa]|[Nn][Uu][Ll][Ll]|[Uu][Nn][Kk][Nn][Oo][Ww][Nn]|9999-12-31)?\z')
         THEN CASE WHEN regexp_full_match(s, ' *(?:[Nn]/[Aa]|[Nn][Uu][Ll][Ll]|[Uu][Nn][Kk][Nn][Oo][Ww][Nn]|9999-12-31)? *')
                   THEN NULL
                   ELSE collapse_whitespace(s) END
         ELSE s END;

-- ---------------------------------------------------------------------------------
-- Tolerant typing (parsing.rs). Values here are already collapsed: no leading or
-- trailing whitespace, at most one space in a row.
-- ---------------------------------------------------------------------------------

-- A date from its text fields; NULL when they name no date (2024-02-30, month 13).
CREATE OR REPLACE TEMP MACRO date_of(y, m, d) AS
    CASE WHEN y <> '' THEN
        TRY_CAST(CASE WHEN length(y) < 4 THEN lpad(y, 4, '0') ELSE ltrim(y, '+') END
                 || '-' || lpad(m, 2, '0') || '-' || lpad(d, 2, '0') AS DATE)
    END;

-- chrono reads %Y as 1-4 digits (or a + and any number), %m and %d as 1-2 digits,
-- skipping whitespace before each number; the whole text must be consumed.
CREATE OR REPLACE TEMP MACRO ymd_fields(t) AS
    regexp_extract(t, '^(\d{1,4}|\+\d+)- ?(\d{1,2})- ?(\d{1,2})\z', ['y', 'm', 'd']);

-- yyyy-MM-dd. Plain 2024-03-07 (most values) is cast directly.
CREATE OR REPLACE TEMP MACRO parse_ymd(t) AS
    CASE WHEN regexp_full_match(t, '\d{4}-\d{2}-\d{2}') THEN TRY_CAST(t AS DATE)
         ELSE date_of(ymd_fields(t).y, ymd_fields(t).m, ymd_fields(t).d) END;

-- MM/dd/yyyy
CREATE OR REPLACE TEMP MACRO mdy_fields(t) AS
    regexp_extract(t, '^(\d{1,2})/ ?(\d{1,2})/ ?(\d{1,4}|\+\d+)\z', ['m', 'd', 'y']);
CREATE OR REPLACE TEMP MACRO parse_mdy(t) AS
    date_of(mdy_fields(t).y, mdy_fields(t).m, mdy_fields(t).d);

-- dd-MMM-yyyy: chrono's %b is exactly three letters, any case.
CREATE OR REPLACE TEMP MACRO dmony_fields(t) AS
    regexp_extract(t, '^(\d{1,2})-([A-Za-z]{3})- ?(\d{1,4}|\+\d+)\z', ['d', 'mon', 'y']);
CREATE OR REPLACE TEMP MACRO parse_dmony(t) AS
    date_of(dmony_fields(t).y,
            CAST(list_position(['jan', 'feb', 'mar', 'apr', 'may', 'jun',
                                'jul', 'aug', 'sep', 'oct', 'nov', 'dec'],
                               lower(dmony_fields(t).mon)) AS VARCHAR),
            dmony_fields(t).d);

-- fill_date's patterns, yyyy-MM-dd, MM/dd/yyyy, dd-MMM-yyyy: the first that reads the text.
CREATE OR REPLACE TEMP MACRO parse_fill_date(t) AS
    CASE WHEN regexp_full_match(t, '\d{4}-\d{2}-\d{2}') THEN TRY_CAST(t AS DATE)
         ELSE coalesce(parse_ymd(t), parse_mdy(t), parse_dmony(t)) END;

-- Timestamps, patterns yyyy-MM-dd HH:mm:ss then yyyy-MM-dd (midnight), as UTC.
-- The space between the day and the hour may be missing; chrono then reads the day
-- greedily (two digits when there are two), which the `sp` check reproduces.
CREATE OR REPLACE TEMP MACRO ts_fields(t) AS
    regexp_extract(t,
        '^(\d{1,4}|\+\d+)- ?(\d{1,2})- ?(\d{1,2})( ?)(\d{1,2}): ?(\d{1,2}): ?(\d{1,2})\z',
        ['y', 'm', 'd', 'sp', 'hh', 'mi', 'ss']);
CREATE OR REPLACE TEMP MACRO timestamp_of(f) AS
    CASE WHEN f.y <> '' AND (length(f.d) = 2 OR f.sp = ' ')
              AND TRY_CAST(f.hh AS INTEGER) <= 23 AND TRY_CAST(f.mi AS INTEGER) <= 59
              AND TRY_CAST(f.ss AS INTEGER) <= 60
         THEN CAST(date_of(f.y, f.m, f.d) AS TIMESTAMP)
              + to_seconds(TRY_CAST(f.hh AS INTEGER) * 3600 + TRY_CAST(f.mi AS INTEGER) * 60
                           + TRY_CAST(f.ss AS INTEGER)) END;
-- Plain 2024-03-07 10:11:12 (most values) is cast directly.
CREATE OR REPLACE TEMP MACRO parse_timestamp(t) AS
    CAST(CASE WHEN regexp_full_match(t, '\d{4}-\d{2}-\d{2} (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d')
              THEN TRY_CAST(t AS TIMESTAMP)
              ELSE coalesce(timestamp_of(ts_fields(t)), CAST(parse_ymd(t) AS TIMESTAMP)) END
         AS TIMESTAMPTZ);

-- clean_number: `€1,234.50` -> 1234.50, `(12.00)` -> -12.00, `1 234` -> 1234, `7£` -> 7.
-- Accounting parentheses, then one sign, then currency signs around the number
-- (thousands separators `,` or ` ` grouping by three), each maybe spaced off.
CREATE OR REPLACE TEMP MACRO number_fields(t) AS
    regexp_extract(t,
        '^(\( ?)?([-+])? ?[\x24€£]* ?(\d+|\d{1,3}(?:[, ]\d{3})+)(?:\.(\d+))? ?[\x24€£]*( ?\))?\z',
        ['open', 'sign', 'whole', 'fraction', 'close']);
CREATE OR REPLACE TEMP MACRO number_text(f) AS
    CASE WHEN f.whole <> '' AND (f.open = '') = (f.close = '') THEN
        CASE WHEN (f.open <> '') <> (f.sign = '-') THEN '-' ELSE '' END
        || replace(replace(f.whole, ',', ''), ' ', '')
        || CASE WHEN f.fraction <> '' THEN '.' || f.fraction ELSE '' END
    END;
CREATE OR REPLACE TEMP MACRO clean_number(t) AS number_text(number_fields(t));
-- Plain digits (most values) are cast directly. Arrow's text-to-int cast refuses a
-- fraction (DuckDB's would round it).
CREATE OR REPLACE TEMP MACRO parse_int(t) AS
    CASE WHEN regexp_full_match(t, '\d+') THEN TRY_CAST(t AS INTEGER)
         ELSE TRY_CAST(CASE WHEN NOT contains(clean_number(t), '.') THEN clean_number(t) END AS INTEGER)
    END;
-- Extra fraction digits round half away from zero, as Arrow's cast does.
CREATE OR REPLACE TEMP MACRO parse_decimal_12_2(t) AS
    TRY_CAST(CASE WHEN regexp_full_match(t, '\d+(\.\d+)?') THEN t ELSE clean_number(t) END
             AS DECIMAL(12, 2));

-- ---------------------------------------------------------------------------------
-- Sluice's functions (functions.rs, masking.rs)
-- ---------------------------------------------------------------------------------

-- normalize_ndc: 11 digits, or 4-4-2, 5-4-2, 5-3-2, 5-4-1 padded to 5-4-2.
CREATE OR REPLACE TEMP MACRO normalize_ndc(v) AS
    CASE WHEN regexp_full_match(v, '\d{5}-\d{4}-\d{2}|\d{11}') THEN replace(v, '-', '')
         WHEN regexp_full_match(v, '\d{4}-\d{4}-\d{2}|\d{5}-\d{3}-\d{2}|\d{5}-\d{4}-\d')
         THEN lpad(string_split(v, '-')[1], 5, '0') || lpad(string_split(v, '-')[2], 4, '0')
              || lpad(string_split(v, '-')[3], 2, '0')
    END;

-- npi_valid: 10 digits whose last is the Luhn check digit over 80840 + the first nine.
-- npi_number is the NPI as a number when it has 10 digits (else npi_valid is false);
-- the prefix 80840 adds 24 to the Luhn sum, and digits 1, 3, 5, 7 and 9 are doubled.
CREATE OR REPLACE TEMP MACRO npi_number(v) AS
    CASE WHEN regexp_full_match(v, '\d{10}') THEN CAST(v AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO luhn_double(d) AS d * 2 - CASE WHEN d >= 5 THEN 9 ELSE 0 END;
CREATE OR REPLACE TEMP MACRO npi_check_digit_holds(n) AS
    (10 - (24 + luhn_double(n // 1000000000 % 10) + n // 100000000 % 10
              + luhn_double(n // 10000000 % 10) + n // 1000000 % 10
              + luhn_double(n // 100000 % 10) + n // 10000 % 10
              + luhn_double(n // 1000 % 10) + n // 100 % 10
              + luhn_double(n // 10 % 10)) % 10) % 10 = n % 10;

-- zip3: the first three digits of the 5-digit ZIP of 12345, 12345-6789, 123456789, or
-- a ZIP that lost its leading zeros (2134 -> 02134).
CREATE OR REPLACE TEMP MACRO zip3(v) AS
    left(CASE WHEN regexp_full_match(v, '\d{5}(-\d{4})?|\d{9}') THEN left(v, 5)
              WHEN regexp_full_match(v, '\d{3,4}') THEN lpad(v, 5, '0') END, 3);

-- tokenize: 'tok_' + hex of the first 12 bytes of HMAC-SHA256(key, "sluice-token\0" + value),
-- HMAC(K, m) = SHA256((K0 ^ opad) || SHA256((K0 ^ ipad) || m)), pads from run.py.
CREATE OR REPLACE TEMP MACRO tokenize(v) AS
    'tok_' || left(sha256(unhex('${mask_opad_hex}')
                          || unhex(sha256(unhex('${mask_ipad_hex}') || encode('sluice-token')
                                          || '\x00'::BLOB || encode(v)))), 24);

-- ---------------------------------------------------------------------------------
-- References
-- ---------------------------------------------------------------------------------

-- us_state: a state, DC or territory by code or name (any case, dots dropped).
CREATE OR REPLACE TEMP TABLE us_states AS
    SELECT * FROM (VALUES
        ('AL', 'ALABAMA'), ('AK', 'ALASKA'), ('AZ', 'ARIZONA'), ('AR', 'ARKANSAS'),
        ('CA', 'CALIFORNIA'), ('CO', 'COLORADO'), ('CT', 'CONNECTICUT'), ('DE', 'DELAWARE'),
        ('DC', 'DISTRICT OF COLUMBIA'), ('FL', 'FLORIDA'), ('GA', 'GEORGIA'), ('HI', 'HAWAII'),
        ('ID', 'IDAHO'), ('IL', 'ILLINOIS'), ('IN', 'INDIANA'), ('IA', 'IOWA'),
        ('KS', 'KANSAS'), ('KY', 'KENTUCKY'), ('LA', 'LOUISIANA'), ('ME', 'MAINE'),
        ('MD', 'MARYLAND'), ('MA', 'MASSACHUSETTS'), ('MI', 'MICHIGAN'), ('MN', 'MINNESOTA'),
        ('MS', 'MISSISSIPPI'), ('MO', 'MISSOURI'), ('MT', 'MONTANA'), ('NE', 'NEBRASKA'),
        ('NV', 'NEVADA'), ('NH', 'NEW HAMPSHIRE'), ('NJ', 'NEW JERSEY'), ('NM', 'NEW MEXICO'),
        ('NY', 'NEW YORK'), ('NC', 'NORTH CAROLINA'), ('ND', 'NORTH DAKOTA'), ('OH', 'OHIO'),
        ('OK', 'OKLAHOMA'), ('OR', 'OREGON'), ('PA', 'PENNSYLVANIA'), ('RI', 'RHODE ISLAND'),
        ('SC', 'SOUTH CAROLINA'), ('SD', 'SOUTH DAKOTA'), ('TN', 'TENNESSEE'), ('TX', 'TEXAS'),
        ('UT', 'UTAH'), ('VT', 'VERMONT'), ('VA', 'VIRGINIA'), ('WA', 'WASHINGTON'),
        ('WV', 'WEST VIRGINIA'), ('WI', 'WISCONSIN'), ('WY', 'WYOMING'), ('PR', 'PUERTO RICO'),
        ('GU', 'GUAM'), ('VI', 'VIRGIN ISLANDS'), ('AS', 'AMERICAN SAMOA'),
        ('MP', 'NORTHERN MARIANA ISLANDS')
    ) AS t(code, name);
CREATE OR REPLACE TEMP TABLE state_lookup AS
    SELECT code AS state_key, code FROM us_states
    UNION ALL
    SELECT name, code FROM us_states;

-- standardize: one payer_id per alias, matched ignoring case and extra whitespace; an
-- alias mapped twice takes the smallest id.
CREATE OR REPLACE TEMP TABLE payer_lookup AS
    SELECT payer_key, min(payer_id) AS payer_id
    FROM (SELECT upper(collapse_whitespace(alias)) AS payer_key, payer_id
          FROM read_csv('${landing}/payer_aliases/*', header = true, all_varchar = true,
                        delim = ',', quote = '"', escape = '"'))
    WHERE payer_key IS NOT NULL
    GROUP BY payer_key;

CREATE OR REPLACE TEMP TABLE known_prescribers AS
    SELECT DISTINCT npi
    FROM read_csv('${landing}/prescribers/*', header = true, all_varchar = true,
                  delim = ',', quote = '"', escape = '"')
    WHERE npi IS NOT NULL;

-- ---------------------------------------------------------------------------------
-- The steps and the rules, one pass
-- ---------------------------------------------------------------------------------

CREATE OR REPLACE TEMP TABLE checked AS
WITH landed AS (
    SELECT *
    FROM read_csv('${landing}/claims/*', header = true, all_varchar = true,
                  delim = ',', quote = '"', escape = '"', filename = true)
),
-- nulls, then collapse_whitespace, on every text column
cleansed AS (
    SELECT cleanse_text(COLUMNS(* EXCLUDE (filename))),
           filename AS source_file
    FROM landed
),
-- parse; the raw text is kept for the `<column>_parses` rules
parsed AS (
    SELECT claim_id,
           patient_id,
           parse_ymd(patient_birth_date) AS patient_birth_date,
           patient_zip,
           prescriber_npi,
           ndc,
           parse_fill_date(fill_date) AS fill_date,
           parse_int(quantity) AS quantity,
           parse_int(days_supply) AS days_supply,
           parse_decimal_12_2(paid_amount) AS paid_amount,
           payer,
           state,
           parse_timestamp(adjudicated_at) AS adjudicated_at,
           source_file,
           adjudicated_at AS adjudicated_at_text,
           days_supply AS days_supply_text,
           fill_date AS fill_date_text,
           paid_amount AS paid_amount_text,
           patient_birth_date AS patient_birth_date_text,
           quantity AS quantity_text
    FROM cleansed
),
-- derive (state, ndc11, ndc), standardize (payer_id), derive (fill_month)
derived AS (
    SELECT p.* REPLACE (s.code AS state),
           normalize_ndc(p.ndc) AS ndc11,
           pl.payer_id,
           kp.npi IS NOT NULL AS prescriber_found,
           npi_number(p.prescriber_npi) AS npi_number
    FROM parsed p
    LEFT JOIN state_lookup s ON s.state_key = upper(replace(p.state, '.', ''))
    LEFT JOIN payer_lookup pl ON pl.payer_key = upper(p.payer)  -- payer is collapsed already
    LEFT JOIN known_prescribers kp ON kp.npi = p.prescriber_npi
),
-- mask (patient_id is tokenized at the end, once per patient), and the row rules:
-- true where the row breaks the rule (NULL-safe, as Sluice's flags)
flagged AS (
    SELECT claim_id,
           patient_id,
           CAST(date_trunc('year', patient_birth_date) AS DATE) AS patient_birth_date,
           zip3(patient_zip) AS patient_zip,
           prescriber_npi,
           substr(ndc11, 1, 5) || '-' || substr(ndc11, 6, 4) || '-' || substr(ndc11, 10, 2) AS ndc,
           fill_date, quantity, days_supply, paid_amount, payer, state, adjudicated_at,
           ndc11,
           payer_id,
           substr(CAST(fill_date AS VARCHAR), 1, 7) AS fill_month,
           source_file,
           coalesce(adjudicated_at_text IS NOT NULL AND adjudicated_at IS NULL, false) AS adjudicated_at_parses,
           coalesce(days_supply_text IS NOT NULL AND days_supply IS NULL, false) AS days_supply_parses,
           coalesce(fill_date_text IS NOT NULL AND fill_date IS NULL, false) AS fill_date_parses,
           coalesce(paid_amount_text IS NOT NULL AND paid_amount IS NULL, false) AS paid_amount_parses,
           coalesce(patient_birth_date_text IS NOT NULL AND patient_birth_date IS NULL, false) AS patient_birth_date_parses,
           coalesce(quantity_text IS NOT NULL AND quantity IS NULL, false) AS quantity_parses,
           patient_id IS NULL AS patient_id_present,
           prescriber_npi IS NOT NULL AND NOT coalesce(npi_check_digit_holds(npi_number), false)
               AS npi_check_digit,
           prescriber_npi IS NOT NULL AND NOT prescriber_found AS prescriber_known,
           ndc11 IS NULL AS ndc_valid,
           coalesce(paid_amount < 0 OR paid_amount > 100000, false) AS paid_amount_in_range,
           payer_id IS NULL AS payer_known,
           quantity IS NULL AS quantity_present,
           coalesce(state NOT IN ('CA', 'TX', 'NY', 'FL', 'PA', 'IL', 'OH', 'GA', 'NC', 'MI'), false) AS state_code,
           coalesce(NOT regexp_matches(claim_id, '^C[0-9]{8}\z'), false) AS claim_id_format
    FROM derived
),
-- one_row_per_claim keeps the latest adjudication of a claim
ranked AS (
    SELECT *,
           claim_id IS NOT NULL
           AND row_number() OVER (PARTITION BY claim_id ORDER BY adjudicated_at DESC NULLS LAST) > 1
               AS one_row_per_claim
    FROM flagged
)
SELECT claim_id, patient_id, patient_birth_date, patient_zip, prescriber_npi, ndc,
       fill_date, quantity, days_supply, paid_amount, payer, state, adjudicated_at,
       ndc11, payer_id, fill_month,
       -- the rules each quarantined row broke, in Sluice's report order: parse rules by
       -- column name, then the declared rules in definition order
       CASE WHEN adjudicated_at_parses OR days_supply_parses OR fill_date_parses
                 OR paid_amount_parses OR patient_birth_date_parses OR quantity_parses
                 OR patient_id_present OR npi_check_digit OR prescriber_known OR ndc_valid
                 OR paid_amount_in_range OR payer_known OR quantity_present
                 OR one_row_per_claim OR state_code OR claim_id_format
            THEN [rule FOR rule IN [
                     CASE WHEN adjudicated_at_parses THEN 'adjudicated_at_parses' END,
                     CASE WHEN days_supply_parses THEN 'days_supply_parses' END,
                     CASE WHEN fill_date_parses THEN 'fill_date_parses' END,
                     CASE WHEN paid_amount_parses THEN 'paid_amount_parses' END,
                     CASE WHEN patient_birth_date_parses THEN 'patient_birth_date_parses' END,
                     CASE WHEN quantity_parses THEN 'quantity_parses' END,
                     CASE WHEN patient_id_present THEN 'patient_id_present' END,
                     CASE WHEN npi_check_digit THEN 'npi_check_digit' END,
                     CASE WHEN prescriber_known THEN 'prescriber_known' END,
                     CASE WHEN ndc_valid THEN 'ndc_valid' END,
                     CASE WHEN paid_amount_in_range THEN 'paid_amount_in_range' END,
                     CASE WHEN payer_known THEN 'payer_known' END,
                     CASE WHEN quantity_present THEN 'quantity_present' END,
                     CASE WHEN one_row_per_claim THEN 'one_row_per_claim' END,
                     CASE WHEN state_code THEN 'state_code' END,
                     CASE WHEN claim_id_format THEN 'claim_id_format' END
                 ] IF rule IS NOT NULL]
       END AS _dq_rules,
       source_file
FROM ranked;

-- ---------------------------------------------------------------------------------
-- Dataset rules and thresholds: fail before anything is written
-- ---------------------------------------------------------------------------------

CREATE OR REPLACE TEMP TABLE dq AS
    SELECT count(*) AS rows_checked,
           count(_dq_rules) AS rows_quarantined,
           max(fill_date) AS newest_fill_date
    FROM checked;

-- enough_rows (row_count, min 1) fails the run
SELECT error('rule `enough_rows` (row_count) broke: ' || rows_checked || ' rows; at least 1 expected')
FROM dq WHERE rows_checked < 1;

-- max_quarantined_percent: 10
SELECT error(printf('%.2f%% of rows quarantined (%d of %d), more than max_quarantined_percent 10%%',
                    rows_quarantined * 100.0 / rows_checked, rows_quarantined, rows_checked))
FROM dq WHERE rows_quarantined * 100.0 / rows_checked > 10;

-- ---------------------------------------------------------------------------------
-- The mask step's tokenize, once per distinct patient: HMAC-SHA256 is the costliest
-- function of the job, and a patient has several claims. (Until here `checked` holds
-- the cleansed patient_id; only its NULLs mattered to the rules.)
-- ---------------------------------------------------------------------------------

CREATE OR REPLACE TEMP TABLE patient_tokens AS
    SELECT patient_id, tokenize(patient_id) AS token
    FROM (SELECT DISTINCT patient_id FROM checked WHERE patient_id IS NOT NULL);

CREATE OR REPLACE TEMP VIEW masked_claims AS
    SELECT c.* REPLACE (t.token AS patient_id)
    FROM checked c
    LEFT JOIN patient_tokens t ON t.patient_id = c.patient_id;

-- ---------------------------------------------------------------------------------
-- Outputs. A NULL fill_month goes to Spark's folder for NULL, __HIVE_DEFAULT_PARTITION__
-- (DuckDB writes its leading `_` as %5F, which readers unescape). OVERWRITE replaces the
-- output folder; Sluice's overwrite_partitions replaces only the months written, which
-- is the same on a fresh staging zone.
-- ---------------------------------------------------------------------------------

COPY (
    SELECT claim_id, patient_id, patient_birth_date, patient_zip, prescriber_npi, ndc,
           fill_date, quantity, days_supply, paid_amount, payer, state, adjudicated_at,
           ndc11, payer_id,
           coalesce(fill_month, '__HIVE_DEFAULT_PARTITION__') AS fill_month
    FROM masked_claims
    WHERE _dq_rules IS NULL
) TO '${staging}/claims' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (fill_month), OVERWRITE);

COPY (
    SELECT claim_id, patient_id, patient_birth_date, patient_zip, prescriber_npi, ndc,
           fill_date, quantity, days_supply, paid_amount, payer, state, adjudicated_at,
           ndc11, payer_id, fill_month,
           _dq_rules,
           'duckdb-' || strftime(get_current_timestamp(), '%Y%m%dT%H%M%S') AS _dq_run_id,
           source_file AS _dq_source_file
    FROM masked_claims
    WHERE _dq_rules IS NOT NULL
) TO '${staging}/quarantine/claims' (FORMAT parquet, COMPRESSION snappy, PER_THREAD_OUTPUT, OVERWRITE);

-- The run's summary (run.py prints it); recent_fills (freshness, 400 days before
-- run_date) only warns.
SELECT rows_checked,
       rows_checked - rows_quarantined AS rows_valid,
       rows_quarantined,
       CASE WHEN newest_fill_date IS NULL
                 OR DATE '${run_date}' - newest_fill_date > 400
            THEN 'recent_fills broke: newest fill_date is ' || coalesce(CAST(newest_fill_date AS VARCHAR), 'none')
                 || ', more than 400 days before ${run_date}'
       END AS warning
FROM dq;
