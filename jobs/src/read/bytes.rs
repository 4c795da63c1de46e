//! A landing file's bytes as its readers see them: streamed from the object store,
//! decompressed as its extension (or the source) says, and UTF-16 transcoded to UTF-8
//! on the way (other encodings are decoded per field or line).

use bytes::Bytes;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::{DataFusionError, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::read::{FileCompression, TextEncoding};

/// A file's bytes as they stream from the store, decompressed as `compression` (or its
/// extension) says; the error says what failed, for the caller to name the file.
pub(super) async fn file_bytes(
    store: &dyn ObjectStore,
    path: &str,
    compression: FileCompression,
) -> std::result::Result<futures::stream::BoxStream<'static, Result<Bytes>>, String> {
    let stream = store
        .get(&object_store::path::Path::from(path))
        .await
        .map_err(|err| format!("cannot read it: {err}"))?
        .into_stream()
        .map_err(|err| DataFusionError::External(Box::new(err)))
        .boxed();
    let decompressed = match compression.of_file(path) {
        FileCompression::Gzip => FileCompressionType::GZIP,
        FileCompression::Bzip2 => FileCompressionType::BZIP2,
        FileCompression::Xz => FileCompressionType::XZ,
        FileCompression::Zstd => FileCompressionType::ZSTD,
        FileCompression::Auto | FileCompression::None => FileCompressionType::UNCOMPRESSED,
    };
    decompressed
        .convert_stream(stream)
        .map_err(|err| crate::frame::strip_context(&err))
}

/// Bytes decoded to UTF-8 before they are cut into records, for UTF-16 files; other
/// encodings pass through (they are decoded per field).
pub(super) struct TextStream {
    decoder: Option<encoding_rs::Decoder>,
    first: bool,
    encoding: TextEncoding,
}

impl TextStream {
    pub(super) fn new(encoding: TextEncoding) -> Self {
        let decoder = match encoding {
            TextEncoding::Utf16Le => Some(encoding_rs::UTF_16LE.new_decoder()),
            TextEncoding::Utf16Be => Some(encoding_rs::UTF_16BE.new_decoder()),
            _ => None,
        };
        Self {
            decoder,
            first: true,
            encoding,
        }
    }

    pub(super) fn push(&mut self, chunk: &Bytes, buffer: &mut Vec<u8>) {
        let mut chunk: &[u8] = chunk;
        if self.first {
            self.first = false;
            if self.encoding == TextEncoding::Utf8 {
                chunk = chunk.strip_prefix(b"\xef\xbb\xbf").unwrap_or(chunk);
            }
        }
        match &mut self.decoder {
            None => buffer.extend_from_slice(chunk),
            Some(decoder) => Self::decode(decoder, chunk, false, buffer),
        }
    }

    pub(super) fn finish(&mut self, buffer: &mut Vec<u8>) {
        if let Some(decoder) = &mut self.decoder {
            Self::decode(decoder, &[], true, buffer);
        }
    }

    fn decode(
        decoder: &mut encoding_rs::Decoder,
        mut input: &[u8],
        last: bool,
        buffer: &mut Vec<u8>,
    ) {
        loop {
            let room = decoder
                .max_utf8_buffer_length(input.len())
                .unwrap_or(input.len() * 3 + 16);
            let start = buffer.len();
            buffer.resize(start + room, 0);
            let (result, read, written, _) =
                decoder.decode_to_utf8(input, &mut buffer[start..], last);
            buffer.truncate(start + written);
            input = &input[read..];
            if matches!(result, encoding_rs::CoderResult::InputEmpty) {
                break;
            }
        }
    }
}
