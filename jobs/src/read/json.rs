//! JSON lines through Sluice's reader: each line is a record, typed by the source's
//! schema (inferred from its first files, as Spark and DataFusion infer it); a line that
//! is not a JSON object, or whose values do not fit the schema, is a malformed row with
//! its line, raw text and fault — under the same `PERMISSIVE` / `DROPMALFORMED` /
//! `FAILFAST` modes as CSV.
//!
//! Lines are checked for syntax one by one, then decoded a batch at a time by
//! arrow-json; only a batch whose decode fails (a value of the wrong type) is decoded
//! again line by line to find the lines at fault.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
use datafusion::arrow::record_batch::RecordBatch;
use prost::Message;

use crate::read::CsvReadOptions;
use crate::read::records::{RecordCutter, decode};

/// How many well-formed lines of each sampled file type a source's columns.
const INFERENCE_LINES: usize = 1000;

/// The source's schema, as the scan's options carry it (a protobuf of the Arrow schema,
/// as DataFusion's plans serialize schemas).
pub(crate) fn encode_schema(schema: &Schema) -> Result<Vec<u8>, String> {
    let proto = datafusion_proto::protobuf::Schema::try_from(schema)
        .map_err(|err| format!("cannot serialize the schema: {err}"))?;
    Ok(proto.encode_to_vec())
}

/// The schema [`encode_schema`] wrote.
pub(crate) fn decode_schema(bytes: &[u8]) -> Result<Schema, String> {
    let proto = datafusion_proto::protobuf::Schema::decode(bytes)
        .map_err(|err| format!("cannot read the schema: {err}"))?;
    Schema::try_from(&proto).map_err(|err| format!("cannot read the schema: {err}"))
}

/// Why a line is not a JSON object, if it is not.
pub(super) fn syntax_fault(bytes: &[u8]) -> Option<String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Some("not a JSON object".to_owned());
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Ok(_) => None,
        Err(err) => Some(format!("not valid JSON ({err})")),
    }
}

/// Well-formed lines waiting to be decoded into one batch.
pub(super) struct JsonBatch {
    schema: SchemaRef,
    lines: Vec<u64>,
    text: Vec<u8>,
    ends: Vec<usize>,
}

/// A decoded batch: the rows (with their lines) and the lines that did not decode.
pub(super) struct Decoded {
    pub rows: Option<(RecordBatch, Vec<u64>)>,
    pub faults: Vec<(u64, Vec<u8>, String)>,
}

impl JsonBatch {
    pub(super) fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            lines: Vec::new(),
            text: Vec::new(),
            ends: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    pub(super) fn push(&mut self, line: u64, bytes: &[u8]) {
        self.lines.push(line);
        self.text.extend_from_slice(bytes);
        self.text.push(b'\n');
        self.ends.push(self.text.len());
    }

    /// Decodes the lines so far; the batch starts over.
    pub(super) fn decode(&mut self) -> Decoded {
        let lines = std::mem::take(&mut self.lines);
        let text = std::mem::take(&mut self.text);
        let ends = std::mem::take(&mut self.ends);
        if lines.is_empty() {
            return Decoded {
                rows: None,
                faults: Vec::new(),
            };
        }
        if let Ok(batch) = decode_lines(&self.schema, &text, lines.len()) {
            return Decoded {
                rows: Some((batch, lines)),
                faults: Vec::new(),
            };
        }
        // A value of the wrong type somewhere: each line alone.
        let mut good = Vec::new();
        let mut good_lines = Vec::new();
        let mut faults = Vec::new();
        let mut start = 0;
        for (line, end) in lines.into_iter().zip(ends) {
            let bytes = &text[start..end];
            match decode_lines(&self.schema, bytes, 1) {
                Ok(_) => {
                    good.extend_from_slice(bytes);
                    good_lines.push(line);
                }
                Err(err) => {
                    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                    faults.push((line, bytes.to_vec(), err));
                }
            }
            start = end;
        }
        let rows = decode_lines(&self.schema, &good, good_lines.len())
            .ok()
            .filter(|batch| batch.num_rows() > 0)
            .map(|batch| (batch, good_lines));
        Decoded { rows, faults }
    }
}

fn decode_lines(schema: &SchemaRef, text: &[u8], rows: usize) -> Result<RecordBatch, String> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(rows.max(1))
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|err| err.to_string())?;
    let mut offset = 0;
    while offset < text.len() {
        let read = decoder
            .decode(&text[offset..])
            .map_err(|err| err.to_string())?;
        if read == 0 {
            break;
        }
        offset += read;
    }
    match decoder.flush().map_err(|err| err.to_string())? {
        Some(batch) => Ok(batch),
        None => Ok(RecordBatch::new_empty(Arc::clone(schema))),
    }
}

/// The columns of a JSON source, inferred from the well-formed lines of its first files
/// (malformed lines are skipped here and become malformed rows when read).
pub(crate) async fn infer_columns(
    store: &dyn object_store::ObjectStore,
    store_url: &str,
    files: &[object_store::ObjectMeta],
    options: &CsvReadOptions,
) -> Result<Schema, String> {
    use futures::StreamExt;

    let mut values: Vec<serde_json::Value> = Vec::new();
    for meta in files {
        let fail =
            |message: String| format!("{}: {message}", super::file_url(store_url, &meta.location));
        let mut stream =
            super::bytes::file_bytes(store, meta.location.as_ref(), options.compression)
                .await
                .map_err(fail)?;
        let mut text = super::bytes::TextStream::new(options.encoding);
        let mut buffer = Vec::new();
        let mut cutter = RecordCutter::new();
        let first = values.len();
        let encoding = options.encoding;
        let take = |bytes: &[u8], values: &mut Vec<serde_json::Value>| {
            let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
            if values.len() - first >= INFERENCE_LINES {
                return;
            }
            if let Some(text) = decode(bytes, encoding)
                && let Ok(serde_json::Value::Object(object)) =
                    serde_json::from_str::<serde_json::Value>(&text)
            {
                values.push(serde_json::Value::Object(object));
            }
        };
        loop {
            let done = match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|err| {
                        fail(format!(
                            "cannot read it: {}",
                            crate::frame::strip_context(&err)
                        ))
                    })?;
                    text.push(&chunk, &mut buffer);
                    false
                }
                None => {
                    text.finish(&mut buffer);
                    true
                }
            };
            while let Some(record) = cutter.next(&buffer, b'\n') {
                take(record.bytes, &mut values);
            }
            if done && let Some((record, _)) = cutter.rest(&buffer) {
                take(record.bytes, &mut values);
            }
            cutter.compact(&mut buffer);
            if done || values.len() - first >= INFERENCE_LINES {
                break;
            }
        }
    }
    if values.is_empty() {
        return Err(format!(
            "its first files hold no JSON object to read columns from: {}",
            files
                .iter()
                .map(|meta| super::file_url(store_url, &meta.location))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match infer_json_schema_from_iterator(values.iter().map(Ok)) {
        Ok(schema) => Ok(schema),
        // Objects that disagree beyond coercion (a list here, a number there): the
        // columns of those that agree with the first; the others are malformed rows when
        // the files are read.
        Err(_) => {
            let mut agreeing: Vec<&serde_json::Value> = Vec::new();
            for value in values.iter().take(INFERENCE_LINES) {
                agreeing.push(value);
                if infer_json_schema_from_iterator(agreeing.iter().map(|v| Ok(*v))).is_err() {
                    agreeing.pop();
                }
            }
            infer_json_schema_from_iterator(agreeing.iter().map(|v| Ok(*v)))
                .map_err(|err| format!("cannot type its columns: {err}"))
        }
    }
}

/// A JSON source's columns and their types, carried in the scan's options.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonColumns(pub SchemaRef);

impl serde::Serialize for JsonColumns {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = encode_schema(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> serde::Deserialize<'de> for JsonColumns {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <Vec<u8>>::deserialize(deserializer)?;
        decode_schema(&bytes)
            .map(|schema| Self(Arc::new(schema)))
            .map_err(serde::de::Error::custom)
    }
}
