//! `embed_document`: a document of up to 10 MiB split into windows of word pieces, each
//! window embedded, the embeddings written as JSON lines with the window's UTF-8 byte
//! offsets into the document.
//!
//! Windows hold `chunk_tokens - 2` word pieces (the model adds its two special tokens)
//! and each starts `chunk_tokens - 2 - overlap_tokens` pieces after the one before; the
//! last is shorter. A document that fits one window is one chunk, so chunk 0 of a
//! document embeds as the whole document truncated at 256 tokens, as
//! sentence-transformers does. Windows are grouped into parts of [`PART_CHUNKS`] that
//! the worker runs on as many workers as the queue feeds.

use base64::Engine;
use offpath_core::blob::{LIFETIMES, RESULTS};
use offpath_core::{
    Assembled, DocumentTask, InputError, MODEL_NAME, Model, ModelError, PartOutput, Piece, Source,
    Split,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::embed::EncodingFormat;

/// The `embed_document` task.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedDocument;

/// Chunks in one part: a part runs in about a third of a second on two cores.
pub const PART_CHUNKS: usize = 32;
/// Most chunks one document makes (a 10 MiB document makes about 11,000 with the
/// default window).
pub const MAX_CHUNKS: usize = 20_000;
/// Longest window, special tokens included (the model's longest input).
pub const MAX_CHUNK_TOKENS: u32 = 256;
/// Shortest window, special tokens included.
pub const MIN_CHUNK_TOKENS: u32 = 16;
/// The overlap when the input sets none (capped at half the window).
pub const DEFAULT_OVERLAP_TOKENS: u32 = 32;
/// Bytes of text tokenized at a time; slices end at whitespace, where word pieces
/// never straddle, so slicing does not change them.
const SLICE_BYTES: usize = 64 * 1024;

/// `embed_document` input: an upload or inline text, and the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedDocumentInput {
    /// The id `POST /uploads` gave, once the document (UTF-8 text, at most 10 MiB) was
    /// PUT to its URL. Give this or `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid, nullable = false)]
    pub upload: Option<String>,
    /// The document inline (within the 64 KiB request body). Give this or `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, pattern = r"\S", nullable = false)]
    pub text: Option<String>,
    /// Word pieces per chunk, the two special tokens included (16 to 256, default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 256, nullable = false)]
    pub chunk_tokens: Option<u32>,
    /// Word pieces a chunk shares with the one before (0 to half of `chunk_tokens`;
    /// default 32, or half of `chunk_tokens` when that is less).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 128, nullable = false)]
    pub overlap_tokens: Option<u32>,
    /// How embeddings are written (default `float`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub encoding_format: Option<EncodingFormat>,
}

impl EmbedDocumentInput {
    fn chunk_tokens(&self) -> u32 {
        self.chunk_tokens.unwrap_or(MAX_CHUNK_TOKENS)
    }

    fn overlap_tokens(&self) -> u32 {
        self.overlap_tokens
            .unwrap_or(DEFAULT_OVERLAP_TOKENS.min(self.chunk_tokens() / 2))
    }
}

/// Where a document's result is: a JSON Lines file of `{index, start, end, embedding}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResultFile {
    /// Where to GET it (with the job owner's credentials; in AWS it redirects to a
    /// presigned S3 URL).
    pub url: String,
    /// Always `jsonl`.
    pub format: &'static str,
    /// When the result is deleted (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `embed_document` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EmbedDocumentOutput {
    /// The model that embedded the chunks.
    pub model: &'static str,
    /// Length of each vector.
    pub dimensions: usize,
    /// Chunks (lines of the result).
    pub chunks: u64,
    /// The result.
    pub result: ResultFile,
}

/// One chunk as a part's input carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Chunk {
    index: usize,
    start: usize,
    end: usize,
    ids: Vec<u32>,
}

/// A part's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartInput {
    encoding_format: EncodingFormat,
    chunks: Vec<Chunk>,
}

/// One line of the result.
#[derive(Debug, Serialize, Deserialize)]
struct Line<E> {
    index: usize,
    start: usize,
    end: usize,
    embedding: E,
}

impl DocumentTask for EmbedDocument {
    const NAME: &'static str = "embed_document";
    const SUMMARY: &'static str = "A document of up to 10 MiB, in overlapping windows of word pieces, to embeddings (JSON Lines with byte offsets).";
    type Input = EmbedDocumentInput;
    type Output = EmbedDocumentOutput;

    fn validate(&self, input: &EmbedDocumentInput) -> Result<(), InputError> {
        match (&input.upload, &input.text) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(InputError::new(
                    "input",
                    "give exactly one of upload (an id from POST /uploads) and text",
                ));
            }
            (Some(upload), None) if uuid_like(upload).is_none() => {
                return Err(InputError::new("input.upload", "is not an upload id"));
            }
            (None, Some(text)) if text.trim().is_empty() => {
                return Err(InputError::new("input.text", "must not be empty"));
            }
            _ => {}
        }
        let chunk = input.chunk_tokens();
        if !(MIN_CHUNK_TOKENS..=MAX_CHUNK_TOKENS).contains(&chunk) {
            return Err(InputError::new(
                "input.chunk_tokens",
                format!("must be {MIN_CHUNK_TOKENS} to {MAX_CHUNK_TOKENS} (it is {chunk})"),
            ));
        }
        let overlap = input.overlap_tokens();
        if overlap > chunk / 2 {
            return Err(InputError::new(
                "input.overlap_tokens",
                format!(
                    "must be 0 to half of chunk_tokens, {} (it is {overlap})",
                    chunk / 2
                ),
            ));
        }
        Ok(())
    }

    fn source(&self, input: &EmbedDocumentInput) -> Source {
        match (&input.upload, &input.text) {
            (Some(upload), _) => Source::Upload(upload.clone()),
            (None, text) => Source::Text(text.clone().unwrap_or_default()),
        }
    }

    fn split(
        &self,
        model: &dyn Model,
        input: &EmbedDocumentInput,
        text: &str,
    ) -> Result<Split, InputError> {
        let pieces = pieces(model, text)?;
        if pieces.is_empty() {
            return Err(InputError::new(
                "input",
                "the document holds no text (it is empty or blank)",
            ));
        }
        let window = (input.chunk_tokens() - 2) as usize;
        let stride = window - input.overlap_tokens() as usize;
        let chunks = windows(pieces.len(), window, stride);
        if chunks.len() > MAX_CHUNKS {
            return Err(InputError::new(
                "input",
                format!(
                    "the document makes {} chunks; the limit is {MAX_CHUNKS} (raise chunk_tokens or lower overlap_tokens)",
                    chunks.len()
                ),
            ));
        }
        let encoding_format = input.encoding_format.unwrap_or_default();
        let parts = chunks
            .chunks(PART_CHUNKS)
            .map(|group| {
                let chunks = group
                    .iter()
                    .map(|&(index, ref range)| {
                        let window = &pieces[range.clone()];
                        Chunk {
                            index,
                            start: window[0].start,
                            end: window[window.len() - 1].end,
                            ids: window.iter().map(|p| p.id).collect(),
                        }
                    })
                    .collect();
                serde_json::to_vec(&PartInput {
                    encoding_format,
                    chunks,
                })
                .expect("a part input serialises")
            })
            .collect();
        Ok(Split {
            parts,
            chunks: chunks.len() as u64,
        })
    }

    fn run_parts(&self, model: &dyn Model, parts: &[&[u8]]) -> Result<Vec<PartOutput>, ModelError> {
        let inputs = parts
            .iter()
            .map(|bytes| serde_json::from_slice::<PartInput>(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::Rejected(format!("a part's input is corrupt: {e}")))?;
        let sequences: Vec<&[u32]> = inputs
            .iter()
            .flat_map(|part| part.chunks.iter().map(|chunk| chunk.ids.as_slice()))
            .collect();
        let vectors = model.embed_pieces(&sequences)?;
        if vectors.len() != sequences.len() || vectors.iter().flatten().any(|x| !x.is_finite()) {
            return Err(ModelError::Rejected(
                "the model returned the wrong number of embeddings, or a non-finite value".into(),
            ));
        }
        let mut vectors = vectors.into_iter();
        Ok(inputs
            .iter()
            .map(|part| {
                let mut bytes = Vec::new();
                for chunk in &part.chunks {
                    let vector = vectors.next().expect("one vector per chunk");
                    let (index, start, end) = (chunk.index, chunk.start, chunk.end);
                    match part.encoding_format {
                        EncodingFormat::Float => {
                            let line = Line {
                                index,
                                start,
                                end,
                                embedding: vector,
                            };
                            serde_json::to_writer(&mut bytes, &line)
                        }
                        EncodingFormat::Base64 => {
                            let raw: Vec<u8> =
                                vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                            let embedding = base64::engine::general_purpose::STANDARD.encode(raw);
                            let line = Line {
                                index,
                                start,
                                end,
                                embedding,
                            };
                            serde_json::to_writer(&mut bytes, &line)
                        }
                    }
                    .expect("a line serialises");
                    bytes.push(b'\n');
                }
                PartOutput {
                    bytes,
                    chunks: part.chunks.len() as u64,
                }
            })
            .collect())
    }

    fn output(&self, input: &EmbedDocumentInput, assembled: &Assembled<'_>) -> EmbedDocumentOutput {
        let lifetime = LIFETIMES
            .iter()
            .find(|(prefix, _)| *prefix == RESULTS)
            .map(|(_, lifetime)| lifetime.as_millis() as u64)
            .unwrap_or_default();
        EmbedDocumentOutput {
            model: MODEL_NAME,
            dimensions: dimensions(assembled.head, input.encoding_format.unwrap_or_default()),
            chunks: assembled.parts.chunks_total,
            result: ResultFile {
                url: format!("/jobs/{}/result", assembled.job),
                format: "jsonl",
                expires_at: offpath_core::job::rfc3339(assembled.at_epoch_ms + lifetime),
                bytes: assembled.bytes,
            },
        }
    }
}

/// The length of the first line's embedding.
fn dimensions(head: &[u8], format: EncodingFormat) -> usize {
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    match format {
        EncodingFormat::Float => {
            serde_json::from_slice::<Line<Vec<f32>>>(first).map_or(0, |line| line.embedding.len())
        }
        EncodingFormat::Base64 => serde_json::from_slice::<Line<String>>(first)
            .ok()
            .and_then(|line| {
                base64::engine::general_purpose::STANDARD
                    .decode(line.embedding)
                    .ok()
            })
            .map_or(0, |raw| raw.len() / 4),
    }
}

/// The word pieces of the whole document, tokenized in slices that end at whitespace.
fn pieces(model: &dyn Model, text: &str) -> Result<Vec<Piece>, InputError> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = slice_end(text, start);
        let slice = model.tokenize(&text[start..end]).map_err(|e| {
            InputError::new("input", format!("the document cannot be tokenized: {e}"))
        })?;
        pieces.extend(slice.into_iter().map(|p| Piece {
            start: p.start + start,
            end: p.end + start,
            ..p
        }));
        start = end;
    }
    Ok(pieces)
}

/// Where the slice that starts at `start` ends: after the last whitespace within
/// [`SLICE_BYTES`], or at a character boundary if a word is longer than that.
fn slice_end(text: &str, start: usize) -> usize {
    let mut end = (start + SLICE_BYTES).min(text.len());
    if end == text.len() {
        return end;
    }
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[start..end].rfind(char::is_whitespace) {
        Some(at) if at > 0 => {
            let space = text[start + at..].chars().next().map_or(1, char::len_utf8);
            start + at + space
        }
        _ => end,
    }
}

/// The windows over `count` pieces: `(index, piece range)`, each `window` long but
/// the last, each starting `stride` after the one before.
fn windows(count: usize, window: usize, stride: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + window).min(count);
        out.push((out.len(), start..end));
        if end == count {
            return out;
        }
        start += stride;
    }
}

/// The upload id, if it has the form of one (a UUID).
fn uuid_like(id: &str) -> Option<()> {
    (id.len() == 36
        && id.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        }))
    .then_some(())
}

#[cfg(test)]
mod tests {
    use offpath_core::{Parts, Registry};
    use serde_json::json;

    use super::*;
    use crate::test_model::Words;

    fn prepare(input: serde_json::Value) -> Result<offpath_core::Prepared, String> {
        Registry::new()
            .with_document(EmbedDocument)
            .get("embed_document")
            .unwrap()
            .prepare(&input.into())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn inputs_are_checked() {
        assert!(prepare(json!({"text": "a document"})).is_ok());
        assert!(prepare(json!({"upload": "0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80"})).is_ok());
        let err = |input| prepare(input).unwrap_err();
        assert!(err(json!({})).starts_with("input: give exactly one of upload"));
        assert!(
            err(json!({"text": "a", "upload": "0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80"}))
                .starts_with("input: give exactly one")
        );
        assert_eq!(
            err(json!({"text": "  \n"})),
            "input.text: must not be empty"
        );
        assert_eq!(
            err(json!({"upload": "../x"})),
            "input.upload: is not an upload id"
        );
        assert_eq!(
            err(json!({"text": "a", "chunk_tokens": 8})),
            "input.chunk_tokens: must be 16 to 256 (it is 8)"
        );
        assert_eq!(
            err(json!({"text": "a", "chunk_tokens": 64, "overlap_tokens": 40})),
            "input.overlap_tokens: must be 0 to half of chunk_tokens, 32 (it is 40)"
        );
        // The default overlap (32) shrinks to half a short window.
        assert!(prepare(json!({"text": "a", "chunk_tokens": 16})).is_ok());
    }

    #[test]
    fn windows_follow_the_rule() {
        assert_eq!(windows(5, 10, 8), [(0, 0..5)]);
        assert_eq!(windows(10, 10, 8), [(0, 0..10)]);
        assert_eq!(windows(11, 10, 8), [(0, 0..10), (1, 8..11)]);
        assert_eq!(windows(26, 10, 8).len(), 3);
        // count <= window: 1; else ceil((count - window) / stride) + 1.
        for count in 1usize..200 {
            let expected = if count <= 14 {
                1
            } else {
                (count - 14).div_ceil(6) + 1
            };
            assert_eq!(windows(count, 14, 6).len(), expected, "{count}");
        }
    }

    #[test]
    fn slices_end_at_whitespace_and_keep_every_piece() {
        let text = "word ".repeat(40_000) + "é".repeat(10).as_str();
        let end = slice_end(&text, 0);
        assert!(end <= SLICE_BYTES && text[..end].ends_with(' '));
        let sliced = pieces(&Words, &text).unwrap();
        let whole = Words.tokenize(&text).unwrap();
        assert_eq!(sliced, whole);
    }

    #[test]
    fn a_document_splits_runs_and_assembles() {
        let registry = Registry::new().with_document(EmbedDocument);
        let task = registry.get("embed_document").unwrap();
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let input = task
            .prepare(&json!({"text": text, "chunk_tokens": 18, "overlap_tokens": 4}).into())
            .unwrap();
        let split = task.split(&Words, &input, &text).unwrap();
        // 100 pieces, windows of 16 every 12: ceil((100 - 16) / 12) + 1 = 8 chunks.
        assert_eq!(split.chunks, 8);
        assert_eq!(split.parts.len(), 1);
        let parts: Vec<&[u8]> = split.parts.iter().map(Vec::as_slice).collect();
        let outputs = task.run_parts(&Words, &parts).unwrap();
        let lines: Vec<serde_json::Value> = outputs[0]
            .bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(
            lines[0],
            json!({"index": 0, "start": 0, "end": text.find("w15").unwrap() + 3, "embedding": [16.0, 1.0]})
        );
        assert_eq!(lines[7]["end"], text.trim_end().len());
        let parts_state = Parts {
            total: 1,
            chunks_total: 8,
            chunks_done: 8,
            ..Parts::default()
        };
        let assembled = Assembled {
            job: offpath_core::JobId::random(),
            parts: &parts_state,
            head: &outputs[0].bytes,
            bytes: outputs[0].bytes.len() as u64,
            at_epoch_ms: 0,
        };
        let output = task.document_output(&input, &assembled).unwrap().to_value();
        assert_eq!(output["dimensions"], 2);
        assert_eq!(output["chunks"], 8);
        assert_eq!(output["result"]["format"], "jsonl");
        assert_eq!(output["result"]["expires_at"], "1970-01-31T00:00:00.000Z");
    }

    #[test]
    fn blank_documents_and_too_many_chunks_are_refused() {
        let registry = Registry::new().with_document(EmbedDocument);
        let task = registry.get("embed_document").unwrap();
        let input = task
            .prepare(&json!({"text": "x", "chunk_tokens": 16, "overlap_tokens": 8}).into())
            .unwrap();
        let err = task
            .split(&Words, &input, " \n\t ")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "input: the document holds no text (it is empty or blank)"
        );
        let long = "a ".repeat(6 * MAX_CHUNKS + 100);
        let err = task.split(&Words, &input, &long).unwrap_err().to_string();
        assert!(err.contains("the limit is 20000"), "{err}");
    }

    #[test]
    fn base64_lines_hold_the_little_endian_floats() {
        let registry = Registry::new().with_document(EmbedDocument);
        let task = registry.get("embed_document").unwrap();
        let text = "one two three";
        let input = task
            .prepare(&json!({"text": text, "encoding_format": "base64"}).into())
            .unwrap();
        let split = task.split(&Words, &input, text).unwrap();
        let parts: Vec<&[u8]> = split.parts.iter().map(Vec::as_slice).collect();
        let outputs = task.run_parts(&Words, &parts).unwrap();
        let line: serde_json::Value =
            serde_json::from_slice(outputs[0].bytes.trim_ascii_end()).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(
            floats,
            [3.0, 1.0],
            "three pieces, as the test model embeds them"
        );
        assert_eq!(dimensions(&outputs[0].bytes, EncodingFormat::Base64), 2);
    }
}
