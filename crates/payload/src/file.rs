//! Reading a payload file: its chunks by position, a part as a stream, the full verification.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    Chunk, Expectations, Header, Manifest, Part, PartName, PartVerifier, PayloadError, TrustedKeys,
    check_uki_root_hash, decode_chunk, read_header, uki_usrhash, verify_manifest,
};

/// An open payload file and its header.
#[derive(Debug)]
pub struct PayloadFile {
    file: File,
    path: PathBuf,
    header: Header,
    len: u64,
}

impl PayloadFile {
    /// Open `path` and read its header (no signature or manifest check yet).
    pub fn open(path: &Path) -> Result<Self, PayloadError> {
        let mut file = File::open(path).map_err(|e| PayloadError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PayloadError::io(path, e))?
            .len();
        let header = read_header(BufReader::new(&mut file)).map_err(|e| match e {
            PayloadError::Io { source, .. } => PayloadError::io(path, source),
            other => other,
        })?;
        Ok(PayloadFile {
            file,
            path: path.to_path_buf(),
            header,
            len,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file is empty (never for an opened payload).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The compressed bytes of `chunk`, bounds-checked against the file's length.
    pub fn read_compressed(
        &mut self,
        part: PartName,
        index: usize,
        chunk: &Chunk,
    ) -> Result<Vec<u8>, PayloadError> {
        if chunk.data_size > crate::manifest::max_data_size(crate::MAX_CHUNK_SIZE) {
            return Err(PayloadError::malformed(format!(
                "{part} chunk {index}: {} compressed bytes is more than any chunk takes",
                chunk.data_size
            )));
        }
        let start = self.header.data_start.checked_add(chunk.data_offset);
        let end = start.and_then(|s| s.checked_add(chunk.data_size));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.len => {
                let mut buf = vec![0u8; chunk.data_size as usize];
                self.file
                    .seek(SeekFrom::Start(start))
                    .and_then(|_| self.file.read_exact(&mut buf))
                    .map_err(|e| PayloadError::io(&self.path, e))?;
                Ok(buf)
            }
            _ => Err(PayloadError::Truncated {
                what: format!(
                    "{part} chunk {index}: data at {} + {} bytes is past the end of {} ({} bytes)",
                    chunk.data_offset,
                    chunk.data_size,
                    self.path.display(),
                    self.len
                ),
            }),
        }
    }

    /// Decompress and check chunk `index` of `part`.
    pub fn read_chunk(&mut self, part: &Part, index: usize) -> Result<Vec<u8>, PayloadError> {
        let chunk = part.chunks.get(index).ok_or_else(|| {
            PayloadError::malformed(format!("{} has no chunk {index}", part.name))
        })?;
        let compressed = self.read_compressed(part.name, index, chunk)?;
        decode_chunk(part.name, index, chunk, &compressed)
    }

    /// Write the whole of `part` to `out`, checking every chunk and then the part's hash.
    pub fn write_part<W: Write>(
        &mut self,
        part: &Part,
        mut out: W,
        out_path: &Path,
    ) -> Result<(), PayloadError> {
        let mut verifier = PartVerifier::new(part);
        for index in 0..part.chunks.len() {
            let bytes = self.read_chunk(part, index)?;
            verifier.update(&bytes);
            out.write_all(&bytes)
                .map_err(|e| PayloadError::io(out_path, e))?;
        }
        verifier.finish()
    }

    /// A `Read + Seek` view of `part`'s uncompressed bytes (each chunk checked as it is read).
    pub fn part_reader<'a>(&'a mut self, part: &'a Part) -> PartReader<'a> {
        PartReader {
            file: self,
            part,
            pos: 0,
            cached: None,
        }
    }
}

/// The uncompressed bytes of one part, decoded chunk by chunk on demand (one chunk cached).
#[derive(Debug)]
pub struct PartReader<'a> {
    file: &'a mut PayloadFile,
    part: &'a Part,
    pos: u64,
    cached: Option<(usize, Vec<u8>)>,
}

impl Read for PartReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.part.size || buf.is_empty() {
            return Ok(0);
        }
        let index = self.part.chunks.partition_point(|c| c.end() <= self.pos);
        let Some(chunk) = self.part.chunks.get(index) else {
            return Ok(0);
        };
        if self.cached.as_ref().is_none_or(|(i, _)| *i != index) {
            let bytes = self
                .file
                .read_chunk(self.part, index)
                .map_err(std::io::Error::other)?;
            self.cached = Some((index, bytes));
        }
        let Some((_, bytes)) = &self.cached else {
            return Ok(0);
        };
        let at = (self.pos - chunk.offset) as usize;
        let avail = bytes.get(at..).unwrap_or_default();
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.part.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the part",
            )),
        }
    }
}

/// What a full verification of a payload file found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The key id of the trusted signature that verified.
    pub key_id: String,
    /// The key file (or origin) that signature verified with.
    pub key_origin: String,
    /// The number of chunks checked.
    pub chunks_checked: usize,
    /// The UKI's `usrhash=`, equal to the manifest's usr root hash.
    pub uki_usrhash: String,
}

/// Every check of a payload file: the manifest ([`verify_manifest`]), every chunk and every
/// part hash, and the manifest's usr root hash against the UKI's `usrhash=`.
pub fn verify_file(
    path: &Path,
    keys: &TrustedKeys,
    expect: &Expectations,
) -> Result<Verified, PayloadError> {
    let mut file = PayloadFile::open(path)?;
    let (key_id, key_origin) = keys.verify(&file.header.manifest_bytes, &file.header.signatures)?;
    let manifest = verify_manifest(&file.header, keys, expect)?;
    let mut chunks_checked = 0;
    for part in &manifest.parts {
        file.write_part(part, std::io::sink(), Path::new("/dev/null"))?;
        chunks_checked += part.chunks.len();
    }
    let uki = manifest
        .part(PartName::Uki)
        .ok_or_else(|| PayloadError::malformed("no uki part"))?;
    let usrhash = uki_usrhash(file.part_reader(uki))?;
    check_uki_root_hash(&manifest, &usrhash)?;
    Ok(Verified {
        manifest,
        key_id,
        key_origin,
        chunks_checked,
        uki_usrhash: usrhash,
    })
}
