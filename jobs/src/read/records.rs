//! One file's records: bytes cut into records where a newline falls outside quotes
//! (so a quoted value may span lines, and line numbers stay exact), each record split
//! into fields and decoded, or found malformed with the reason.

use crate::read::{CsvReadOptions, TextEncoding};

/// A record of a file: where it starts and its bytes (line terminator removed).
pub(super) struct RawRecord<'a> {
    /// The 1-based line the record starts on.
    pub line: u64,
    /// The byte of the file (after decompression) the record starts at.
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// Cuts a growing buffer of a file's bytes into records.
#[derive(Default)]
pub(super) struct RecordCutter {
    /// Where the next record starts in the buffer.
    start: usize,
    /// How far the buffer has been scanned.
    scanned: usize,
    /// Whether the scan is inside a quoted value.
    in_quote: bool,
    /// The line the next record starts on.
    line: u64,
    /// Newlines seen inside the record being scanned.
    inner_newlines: u64,
    /// The file offset of the buffer's first byte.
    base: u64,
}

impl RecordCutter {
    pub(super) fn new() -> Self {
        Self {
            line: 1,
            ..Self::default()
        }
    }

    /// The next complete record of `buffer`, if one ends in it.
    pub(super) fn next<'a>(&mut self, buffer: &'a [u8], quote: u8) -> Option<RawRecord<'a>> {
        while self.scanned < buffer.len() {
            // Only quotes and newlines matter: jump to the next one.
            let Some(offset) = memchr::memchr2(quote, b'\n', &buffer[self.scanned..]) else {
                self.scanned = buffer.len();
                break;
            };
            let byte = buffer[self.scanned + offset];
            self.scanned += offset + 1;
            // A newline first: a fixed-width file's records have no quotes, and cut with
            // `quote` set to the newline.
            if byte != b'\n' {
                self.in_quote = !self.in_quote;
            } else {
                if self.in_quote {
                    self.inner_newlines += 1;
                    continue;
                }
                let mut end = self.scanned - 1;
                if end > self.start && buffer[end - 1] == b'\r' {
                    end -= 1;
                }
                let record = RawRecord {
                    line: self.line,
                    offset: self.base + self.start as u64,
                    bytes: &buffer[self.start..end],
                };
                self.line += 1 + self.inner_newlines;
                self.inner_newlines = 0;
                self.start = self.scanned;
                return Some(record);
            }
        }
        None
    }

    /// The record left at the end of the file (no final newline), and whether a quote
    /// was left open in it.
    pub(super) fn rest<'a>(&mut self, buffer: &'a [u8]) -> Option<(RawRecord<'a>, bool)> {
        if self.start >= buffer.len() {
            return None;
        }
        let mut end = buffer.len();
        if buffer[end - 1] == b'\r' {
            end -= 1;
        }
        let record = RawRecord {
            line: self.line,
            offset: self.base + self.start as u64,
            bytes: &buffer[self.start..end],
        };
        self.start = buffer.len();
        self.scanned = buffer.len();
        Some((record, self.in_quote))
    }

    /// Drops the bytes of records already returned.
    pub(super) fn compact(&mut self, buffer: &mut Vec<u8>) {
        if self.start > 0 {
            buffer.drain(..self.start);
            self.base += self.start as u64;
            self.scanned -= self.start;
            self.start = 0;
        }
    }
}

/// A record split into fields: `output[ends[i-1]..ends[i]]` is field `i`, unquoted.
#[derive(Default)]
pub(super) struct Fields {
    output: Vec<u8>,
    ends: Vec<usize>,
}

impl Fields {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.output[start..self.ends[index]]
    }
}

/// Splits records into fields with the source's delimiter and quote.
pub(super) struct FieldSplitter {
    reader: csv_core::Reader,
    delimiter: u8,
    quote: u8,
}

impl FieldSplitter {
    pub(super) fn new(options: &CsvReadOptions) -> Self {
        Self {
            reader: csv_core::ReaderBuilder::new()
                .delimiter(options.delimiter)
                .quote(options.quote)
                .double_quote(true)
                .build(),
            delimiter: options.delimiter,
            quote: options.quote,
        }
    }

    /// A record with no quote and no carriage return but a final one (most records):
    /// its fields are the bytes between delimiters, found with `memchr` instead of the
    /// CSV state machine, which reads the same fields from it.
    fn plain<'a>(&self, record: &'a [u8]) -> Option<&'a [u8]> {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        memchr::memchr2(self.quote, b'\r', record)
            .is_none()
            .then_some(record)
    }

    /// How many fields a record has (without splitting it when it is plain).
    pub(super) fn count(&mut self, record: &[u8], fields: &mut Fields) -> usize {
        match self.plain(record) {
            Some(plain) => memchr::memchr_iter(self.delimiter, plain).count() + 1,
            None => {
                self.split(record, fields);
                fields.len()
            }
        }
    }

    /// The fields of one record.
    pub(super) fn split(&mut self, record: &[u8], fields: &mut Fields) {
        if let Some(plain) = self.plain(record) {
            fields.output.clear();
            fields.ends.clear();
            let mut start = 0;
            for at in memchr::memchr_iter(self.delimiter, plain) {
                fields.output.extend_from_slice(&plain[start..at]);
                fields.ends.push(fields.output.len());
                start = at + 1;
            }
            fields.output.extend_from_slice(&plain[start..]);
            fields.ends.push(fields.output.len());
            return;
        }
        self.reader.reset();
        // Unquoting only shrinks a record, and it has at most one field per byte + 1.
        fields.output.clear();
        fields.output.resize(record.len() + 1, 0);
        fields.ends.clear();
        fields.ends.resize(record.len() + 2, 0);
        let (mut input, mut written, mut ended) = (record, 0, 0);
        let mut input_ended = false;
        loop {
            let (result, read, out, end) = self.reader.read_record(
                input,
                &mut fields.output[written..],
                &mut fields.ends[ended..],
            );
            input = &input[read..];
            written += out;
            ended += end;
            match result {
                // All of the record is read: an empty input tells the reader it ended.
                csv_core::ReadRecordResult::InputEmpty if !input_ended => input_ended = true,
                // A record, the end, or (not possible with the sizes above) full output.
                _ => break,
            }
        }
        fields.output.truncate(written);
        fields.ends.truncate(ended);
    }
}

/// Decodes a field's bytes in the source's encoding; `None` when they are not valid
/// in it (UTF-8 only: every byte is a character of the other single-byte encodings,
/// and UTF-16 files are decoded to UTF-8 before they are cut).
pub(super) fn decode(bytes: &[u8], encoding: TextEncoding) -> Option<std::borrow::Cow<'_, str>> {
    match encoding {
        TextEncoding::Utf8 | TextEncoding::Utf16Le | TextEncoding::Utf16Be => {
            std::str::from_utf8(bytes)
                .ok()
                .map(std::borrow::Cow::Borrowed)
        }
        TextEncoding::Latin1 => {
            if bytes.is_ascii() {
                // ASCII is valid UTF-8.
                std::str::from_utf8(bytes)
                    .ok()
                    .map(std::borrow::Cow::Borrowed)
            } else {
                Some(std::borrow::Cow::Owned(
                    bytes.iter().map(|&b| char::from(b)).collect(),
                ))
            }
        }
        TextEncoding::Windows1252 => Some(
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0,
        ),
    }
}

/// A record's raw text for the quarantine: decoded, invalid bytes replaced.
pub(super) fn raw_text(bytes: &[u8], encoding: TextEncoding) -> String {
    match decode(bytes, encoding) {
        Some(text) => text.into_owned(),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &[u8]) -> Vec<(u64, String, bool)> {
        let mut cutter = RecordCutter::new();
        let mut out = Vec::new();
        while let Some(record) = cutter.next(text, b'"') {
            out.push((
                record.line,
                String::from_utf8_lossy(record.bytes).into_owned(),
                false,
            ));
        }
        if let Some((record, open)) = cutter.rest(text) {
            out.push((
                record.line,
                String::from_utf8_lossy(record.bytes).into_owned(),
                open,
            ));
        }
        out
    }

    #[test]
    fn records_end_at_newlines_outside_quotes_and_keep_their_line() {
        let got = records(b"a,b\r\n1,\"x\ny\"\n2,z\n\"open,3");
        assert_eq!(
            got,
            vec![
                (1, "a,b".to_owned(), false),
                (2, "1,\"x\ny\"".to_owned(), false),
                (4, "2,z".to_owned(), false),
                (5, "\"open,3".to_owned(), true),
            ]
        );
    }

    #[test]
    fn fields_are_unquoted() {
        let options = CsvReadOptions {
            source: "s".into(),
            header: true,
            delimiter: b',',
            quote: b'"',
            null_values: Vec::new(),
            encoding: TextEncoding::Utf8,
            compression: crate::read::FileCompression::None,
            mode: crate::definition::MalformedMode::Permissive,
            schema_drift: crate::definition::SchemaDrift::UnionByName,
            columns: Vec::new(),
            partition_columns: Vec::new(),
            fixed_width: None,
            json: None,
        };
        let mut splitter = FieldSplitter::new(&options);
        let mut fields = Fields::default();
        splitter.split(b"1,\"a,\"\"b\"\"\",,x", &mut fields);
        let got: Vec<&[u8]> = (0..fields.len()).map(|i| fields.get(i)).collect();
        assert_eq!(got, vec![&b"1"[..], b"a,\"b\"", b"", b"x"]);
    }

    #[test]
    fn encodings_decode_or_refuse() {
        assert_eq!(decode(b"caf\xe9", TextEncoding::Latin1).unwrap(), "café");
        assert_eq!(decode(b"\x80", TextEncoding::Windows1252).unwrap(), "€");
        assert!(decode(b"caf\xe9", TextEncoding::Utf8).is_none());
        assert_eq!(raw_text(b"caf\xe9", TextEncoding::Utf8), "caf\u{fffd}");
    }
}
