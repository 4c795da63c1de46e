//! Spark SQL type names and byte sizes as written in definitions.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::definition::Literal;

/// Column types, by their Spark SQL names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ColumnType(
    /// `string`, `int`, `bigint`, `smallint`, `tinyint`, `double`, `float`, `boolean`,
    /// `date`, `timestamp`, or `decimal(p,s)`.
    pub String,
);

/// The Arrow type of a Spark SQL type name (`int`, `decimal(12,2)`, …).
pub fn parse_column_type(name: &str) -> Result<DataType, String> {
    let lower = name.trim().to_ascii_lowercase();
    let data_type = match lower.as_str() {
        "string" | "varchar" | "text" => DataType::Utf8,
        "int" | "integer" => DataType::Int32,
        "bigint" | "long" => DataType::Int64,
        "smallint" | "short" => DataType::Int16,
        "tinyint" | "byte" => DataType::Int8,
        "double" => DataType::Float64,
        "float" | "real" => DataType::Float32,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        // Spark's TIMESTAMP is microseconds, adjusted to UTC.
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        other => {
            if let Some(args) = other
                .strip_prefix("decimal(")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                let (precision, scale) = args
                    .split_once(',')
                    .ok_or_else(|| format!("`{name}`: write decimal(precision,scale)"))?;
                let precision: u8 = precision
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{name}`: precision is not a number"))?;
                let scale: i8 = scale
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{name}`: scale is not a number"))?;
                if precision == 0 || precision > 38 || scale < 0 || scale as u8 > precision {
                    return Err(format!(
                        "`{name}`: precision must be 1..=38 and scale 0..=precision"
                    ));
                }
                DataType::Decimal128(precision, scale)
            } else if other == "decimal" {
                DataType::Decimal128(10, 0)
            } else {
                return Err(format!(
                    "`{name}` is not a type (string, int, bigint, smallint, tinyint, double, \
                     float, boolean, date, timestamp, timestamp_ntz, decimal(p,s))"
                ));
            }
        }
    };
    Ok(data_type)
}

/// A byte size: a number of bytes or `128MiB`, `1GiB`, `512KB`, ….
pub fn parse_byte_size(value: &Literal) -> Result<u64, String> {
    let text = match value {
        Literal::Int(n) if *n > 0 => return Ok(*n as u64),
        Literal::Text(text) => text.trim(),
        other => return Err(format!("`{other}` is not a byte size")),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a byte size (e.g. 128MiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("`{text}`: unknown unit (use KiB, MiB, GiB)")),
    };
    let bytes = (number * multiplier as f64) as u64;
    if bytes == 0 {
        return Err(format!("`{text}` must be more than 0 bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_type_names_map_to_arrow() {
        assert_eq!(parse_column_type("INT"), Ok(DataType::Int32));
        assert_eq!(
            parse_column_type("decimal(12, 2)"),
            Ok(DataType::Decimal128(12, 2))
        );
        assert!(parse_column_type("decimal(40,2)").is_err());
        assert!(parse_column_type("varchar2").is_err());
    }

    #[test]
    fn byte_sizes_take_binary_units() {
        assert_eq!(
            parse_byte_size(&Literal::Text("128MiB".into())),
            Ok(128 << 20)
        );
        assert_eq!(parse_byte_size(&Literal::Int(1000)), Ok(1000));
        assert!(parse_byte_size(&Literal::Text("12 parsecs".into())).is_err());
    }
}
