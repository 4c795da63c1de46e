#!/usr/bin/env python3
"""Runs one of the DuckDB benchmark jobs (the DuckDB versions of benches/jobs/*.yaml).

    python benches/duckdb/run.py benches/duckdb/claims_cleanse.sql --threads 2 \\
        -p landing=data/landing -p staging=staging -p run_date=2026-04-01
    python benches/duckdb/run.py benches/duckdb/rx_monthly.sql --threads 2 \\
        -p landing=data/landing -p staging=staging -p curated=curated

A job is a SQL script that is also a Python ``string.Template``: ``${name}`` is replaced
by the value of ``-p name=value``. A script that masks (it names ``${mask_key_hex}``,
``${mask_ipad_hex}`` or ``${mask_opad_hex}``) gets the key from the environment variable
SLUICE_MASK_KEY (its raw bytes, at least 16, as Sluice requires): the key as hex, and
the key's HMAC-SHA256 inner and outer pads as hex, so that the script computes
HMAC-SHA256 with DuckDB's sha256 alone.

The script runs statement by statement in an in-memory DuckDB with ``SET threads``;
rows a SELECT returns are printed, and the folders above a COPY's local target are
created first. On any error the run stops and exits with status 1 (status 2 for a bad
command line or template). The last line printed is the wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import string
import sys
import time

import duckdb

MASK_KEY_ENV = "SLUICE_MASK_KEY"
MIN_KEY_BYTES = 16
MASK_PARAMS = ("mask_key_hex", "mask_ipad_hex", "mask_opad_hex")
# The target of a COPY ... TO 'path' statement.
COPY_TARGET = re.compile(r"\)\s*TO\s+'([^']+)'", re.IGNORECASE)


def hmac_pads(key: bytes) -> tuple[str, str]:
    """The HMAC-SHA256 pads of a key, (K0 ^ ipad, K0 ^ opad), as hex."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    return (
        bytes(b ^ 0x36 for b in key).hex(),
        bytes(b ^ 0x5C for b in key).hex(),
    )


def mask_params() -> dict[str, str]:
    key = os.environb.get(MASK_KEY_ENV.encode())
    if key is None:
        raise SystemExit(f"error: the job masks data: set {MASK_KEY_ENV} to the mask key")
    if len(key) < MIN_KEY_BYTES:
        raise SystemExit(f"error: {MASK_KEY_ENV} is shorter than {MIN_KEY_BYTES} bytes")
    ipad, opad = hmac_pads(key)
    return {"mask_key_hex": key.hex(), "mask_ipad_hex": ipad, "mask_opad_hex": opad}


def make_parent_folder(statement: str) -> None:
    """DuckDB's COPY creates its target folder but not the folders above it."""
    match = COPY_TARGET.search(statement)
    if match and "://" not in match.group(1):
        parent = os.path.dirname(os.path.normpath(match.group(1)))
        if parent:
            os.makedirs(parent, exist_ok=True)


def render(path: str, raw_params: list[str]) -> str:
    """The script with its ${params} replaced; exits on a missing or malformed param."""
    try:
        with open(path, encoding="utf-8") as file:
            template = string.Template(file.read())
    except OSError as err:
        print(f"error: cannot read {path}: {err}", file=sys.stderr)
        sys.exit(2)
    params: dict[str, str] = {}
    for item in raw_params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"error: -p takes name=value, not `{item}`", file=sys.stderr)
            sys.exit(2)
        params[name] = value
    wanted = template.get_identifiers()
    if any(name in wanted for name in MASK_PARAMS):
        params.update(mask_params())
    missing = [name for name in wanted if name not in params]
    if missing:
        print(f"error: {path} needs -p {'=… -p '.join(missing)}=…", file=sys.stderr)
        sys.exit(2)
    try:
        return template.substitute(params)
    except ValueError as err:
        print(f"error: {path} is not a valid template: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="the job's SQL script")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE",
        help="a template parameter; repeat for each",
    )
    args = parser.parse_args()
    sql = render(args.script, args.param)

    started = time.monotonic()
    connection = duckdb.connect(":memory:")
    try:
        connection.execute(f"SET threads = {int(args.threads)}")
        for statement in duckdb.extract_statements(sql):
            if statement.type == duckdb.StatementType.COPY:
                make_parent_folder(statement.query)
            result = connection.execute(statement)
            if statement.type == duckdb.StatementType.SELECT:
                columns = [column[0] for column in result.description or []]
                for row in result.fetchall():
                    print("  ".join(f"{name}={value}" for name, value in zip(columns, row)))
    except duckdb.Error as err:
        print(f"error: {os.path.basename(args.script)} failed: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    print(f"{os.path.basename(args.script)}: done in {elapsed:.2f}s with {args.threads} threads")


if __name__ == "__main__":
    main()
