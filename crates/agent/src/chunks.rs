//! Where the chunks of an update come from before they are written: the chunk store under
//! `/var/lib/keelson/chunks` (every downloaded chunk, verified, as the payload's zstd frame,
//! named by the sha256 of its uncompressed bytes) and the index of the chunks the running
//! system already holds (the active slot's usr and usr-verity partitions and the running
//! version's UKI on the ESP, cut with the manifest's chunking). Neither
//! is trusted: every chunk taken from either is hashed again against the signed manifest each
//! time it is used, and a copy that does not match is dropped and fetched again.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use keelson_payload::{Chunk, Chunking, PartName};
use sha2::{Digest, Sha256};

use crate::boot::SlotView;

/// Errors of the store and the index; each names the file or device involved.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// Reading or writing a store file or the disk failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest's chunking cannot be run.
    #[error(transparent)]
    Payload(#[from] keelson_payload::PayloadError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ChunkError {
    let path = path.to_owned();
    move |source| ChunkError::Io {
        action,
        path,
        source,
    }
}

/// The chunk store: one file per distinct downloaded chunk, `<sha256>.zst`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created on the first [`Store::put`]).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.zst"))
    }

    /// Whether a copy of the chunk with this sha256 is stored (not yet checked).
    pub fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// The chunk's uncompressed bytes from its stored copy, checked against the manifest
    /// (`decode_chunk`: size and sha256); `None` when there is no copy or it does not match,
    /// in which case the bad copy is removed.
    pub fn get(
        &self,
        part: PartName,
        index: usize,
        chunk: &Chunk,
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let path = self.path(&chunk.sha256);
        let compressed = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        match keelson_payload::decode_chunk(part, index, chunk, &compressed) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping a bad stored chunk");
                fs::remove_file(&path).map_err(io("removing", &path))?;
                Ok(None)
            }
        }
    }

    /// Stores a chunk's compressed bytes (already checked by the caller) through a temporary
    /// name and a rename; durable at the next [`Store::sync`].
    pub fn put(&self, chunk: &Chunk, compressed: &[u8]) -> Result<(), ChunkError> {
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.path(&chunk.sha256);
        let tmp = self.dir.join(format!(".{}.tmp", chunk.sha256));
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(compressed).map_err(io("writing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io("renaming into", &path))
    }

    /// Makes every chunk stored so far durable (one `syncfs` of the store's file system).
    pub fn sync(&self) -> Result<(), ChunkError> {
        if !self.dir.is_dir() {
            return Ok(());
        }
        let d = File::open(&self.dir).map_err(io("opening", &self.dir))?;
        rustix::fs::syncfs(&d).map_err(|e| io("syncing", &self.dir)(e.into()))
    }

    /// Removes the store and everything in it.
    pub fn remove(&self) -> Result<(), ChunkError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &self.dir)(e)),
        }
    }
}

/// Where a chunk's bytes are: a file or device, an offset, a length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file or device (the disk, or the running version's UKI on the ESP).
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// Number of bytes.
    pub size: u64,
}

/// A stretch of a file or device the running system already holds, to cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The file or device.
    pub path: PathBuf,
    /// Where the stretch starts.
    pub offset: u64,
    /// How long it is.
    pub len: u64,
}

impl Region {
    /// The active slot's usr (up to its erofs image's size, else the whole partition) and
    /// usr-verity partitions on `disk`.
    pub fn slot(disk: &Path, view: &SlotView) -> Result<Vec<Region>, ChunkError> {
        let mut f = File::open(disk).map_err(io("opening", disk))?;
        f.seek(SeekFrom::Start(view.usr_offset))
            .map_err(io("seeking in", disk))?;
        let mut head = vec![0u8; 1064];
        let n = read_up_to(&mut (&mut f).take(view.usr_size), &mut head)
            .map_err(io("reading", disk))?;
        head.truncate(n);
        let usr_len = erofs_size_of(&head).map_or(view.usr_size, |s| s.min(view.usr_size));
        Ok(vec![
            Region {
                path: disk.to_owned(),
                offset: view.usr_offset,
                len: usr_len,
            },
            Region {
                path: disk.to_owned(),
                offset: view.verity_offset,
                len: view.verity_size,
            },
        ])
    }

    /// A whole file (the running version's UKI).
    pub fn file(path: &Path) -> Result<Region, ChunkError> {
        let len = fs::metadata(path).map_err(io("reading", path))?.len();
        Ok(Region {
            path: path.to_owned(),
            offset: 0,
            len,
        })
    }
}

/// The chunks the running system already holds that the new release lists, by sha256.
#[derive(Debug, Clone, Default)]
pub struct Index {
    found: HashMap<String, Location>,
}

impl Index {
    /// Cuts each region with `chunking` and keeps the chunks whose sha256 is in `wanted`.
    /// Reads each region once, one chunk in memory at a time.
    pub fn build(
        regions: &[Region],
        chunking: &Chunking,
        wanted: &HashSet<&str>,
    ) -> Result<Index, ChunkError> {
        let mut found = HashMap::new();
        for r in regions {
            let mut f = File::open(&r.path).map_err(io("opening", &r.path))?;
            f.seek(SeekFrom::Start(r.offset))
                .map_err(io("seeking in", &r.path))?;
            let reader = BufReader::with_capacity(1 << 20, f.take(r.len));
            for c in chunking.chunks(reader)? {
                let (at, bytes) = c.map_err(io("reading", &r.path))?;
                let sha = hex::encode(Sha256::digest(&bytes));
                if wanted.contains(sha.as_str()) {
                    found.entry(sha).or_insert(Location {
                        path: r.path.clone(),
                        offset: r.offset + at,
                        size: bytes.len() as u64,
                    });
                }
            }
        }
        Ok(Index { found })
    }

    /// An index that finds nothing.
    pub fn empty() -> Index {
        Index::default()
    }

    /// Whether the slot holds a chunk with this sha256 (as it was when indexed).
    pub fn contains(&self, sha256: &str) -> bool {
        self.found.contains_key(sha256)
    }

    /// Number of distinct chunks found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The chunk's bytes read from the slot now, if indexed and they still hash to the
    /// manifest's sha256 (`None` otherwise: the caller downloads it).
    pub fn get(&self, chunk: &Chunk) -> Result<Option<Vec<u8>>, ChunkError> {
        let Some(loc) = self.found.get(&chunk.sha256) else {
            return Ok(None);
        };
        if loc.size != chunk.size {
            return Ok(None);
        }
        let path = &loc.path;
        let mut f = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(io("opening", path))?;
        f.seek(SeekFrom::Start(loc.offset))
            .map_err(io("seeking in", path))?;
        let mut bytes = Vec::new();
        (&mut f)
            .take(loc.size)
            .read_to_end(&mut bytes)
            .map_err(io("reading", path))?;
        if hex::encode(Sha256::digest(&bytes)) == chunk.sha256 {
            Ok(Some(bytes))
        } else {
            tracing::warn!(path = %path.display(), offset = loc.offset, "an indexed local chunk changed; downloading it");
            Ok(None)
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The size of the erofs image at the start of a partition, from its superblock (at 1024:
/// magic 0xE0F5E1E2 (le32), `blkszbits` at +12, `blocks` (le32) at +36), so the slot is cut as
/// its build cut it and not over the partition's unused tail.
fn erofs_size_of(head: &[u8]) -> Option<u64> {
    let sb = head.get(1024..1064)?;
    let magic = u32::from_le_bytes(sb[0..4].try_into().ok()?);
    let bits = u32::from(sb[12]);
    let blocks = u64::from(u32::from_le_bytes(sb[36..40].try_into().ok()?));
    (magic == 0xE0F5_E1E2 && (9..=16).contains(&bits)).then(|| blocks << bits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keelson_disk::UsrSlot;
    use keelson_payload::testing::noise;

    /// A chunk of `bytes` with its zstd frame, taken from a payload keelson-payload built.
    fn chunk_of(bytes: &[u8]) -> (Chunk, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let root = "ab".repeat(32);
        let img = dir.path().join("img");
        keelson_payload::testing::fake_image_dir(
            &img,
            "keelson",
            "1.0.0",
            &root,
            bytes,
            b"v",
            &format!("usrhash={root}"),
        )
        .unwrap();
        let input = keelson_payload::BuildInput::from_image_dir(&img, "1.0.0").unwrap();
        let out = dir.path().join("p");
        let opts = keelson_payload::BuildOptions {
            chunking: Chunking::fixed(bytes.len() as u64),
            ..keelson_payload::BuildOptions::default()
        };
        let m = keelson_payload::build(&input, &out, &opts).unwrap();
        let h = keelson_payload::read_header_file(&out).unwrap();
        let c = m.parts[0].chunks[0].clone();
        let all = std::fs::read(&out).unwrap();
        let start = (h.data_start + c.data_offset) as usize;
        let frame = all[start..start + c.data_size as usize].to_vec();
        (c, frame)
    }

    #[test]
    fn a_bad_stored_copy_is_dropped_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("chunks"));
        let data = noise(50_000, 3);
        let (chunk, compressed) = chunk_of(&data);
        assert!(store.get(PartName::Usr, 0, &chunk).unwrap().is_none());
        store.put(&chunk, &compressed).unwrap();
        store.sync().unwrap();
        assert!(store.contains(&chunk.sha256));
        assert_eq!(store.get(PartName::Usr, 0, &chunk).unwrap().unwrap(), data);
        // One flipped bit in the stored copy: not returned, and gone.
        let path = store.dir().join(format!("{}.zst", chunk.sha256));
        let mut bad = compressed.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(store.get(PartName::Usr, 0, &chunk).unwrap().is_none());
        assert!(!store.contains(&chunk.sha256));
        // A truncated copy (a power cut before the data reached the disk) likewise.
        std::fs::write(&path, &compressed[..3]).unwrap();
        assert!(store.get(PartName::Usr, 0, &chunk).unwrap().is_none());
        store.remove().unwrap();
        assert!(!store.dir().exists());
        store.remove().unwrap();
    }

    #[test]
    fn the_index_finds_shared_chunks_and_rechecks_them_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let old = noise(600_000, 1);
        let mut new = old[..200_000].to_vec();
        new.extend_from_slice(&noise(3000, 2));
        new.extend_from_slice(&old[200_000..]);
        // The slot: usr at 4096 (1 MiB partition), verity after it.
        let mut img = vec![0u8; 4096];
        img.extend_from_slice(&old);
        img.resize(4096 + (1 << 20), 0);
        img.extend_from_slice(&[7u8; 8192]);
        std::fs::write(&disk, &img).unwrap();
        let view = SlotView {
            slot: UsrSlot::A,
            version: Some("1.0.0".into()),
            usr_offset: 4096,
            usr_size: 1 << 20,
            verity_offset: 4096 + (1 << 20),
            verity_size: 8192,
        };
        let c = Chunking::fastcdc(4096, 16384, 65536);
        let new_chunks: Vec<(u64, Vec<u8>)> =
            c.chunks(&new[..]).unwrap().map(|r| r.unwrap()).collect();
        let hashes: Vec<String> = new_chunks
            .iter()
            .map(|(_, b)| hex::encode(Sha256::digest(b)))
            .collect();
        let wanted: HashSet<&str> = hashes.iter().map(String::as_str).collect();
        let index = Index::build(&Region::slot(&disk, &view).unwrap(), &c, &wanted).unwrap();
        let shared: u64 = new_chunks
            .iter()
            .zip(&hashes)
            .filter(|(_, h)| index.contains(h))
            .map(|((_, b), _)| b.len() as u64)
            .sum();
        assert!(shared > 500_000, "shared {shared}");
        // Every hit reads back the right bytes.
        let (off, bytes) = &new_chunks[0];
        let chunk = Chunk {
            offset: *off,
            size: bytes.len() as u64,
            sha256: hashes[0].clone(),
            data_offset: 0,
            data_size: 1,
        };
        assert_eq!(index.get(&chunk).unwrap().as_deref(), Some(&bytes[..]));
        // The slot changed under the index: the chunk is not returned.
        let mut img = std::fs::read(&disk).unwrap();
        img[4096 + 10] ^= 0xff;
        std::fs::write(&disk, &img).unwrap();
        assert_eq!(index.get(&chunk).unwrap(), None);
    }

    #[test]
    fn erofs_superblock_bounds_the_usr_image() {
        let mut head = vec![0u8; 1064];
        head[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        head[1024 + 12] = 12;
        head[1024 + 36..1024 + 40].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(erofs_size_of(&head), Some(409_600));
        head[1024] = 0;
        assert_eq!(erofs_size_of(&head), None);
        assert_eq!(erofs_size_of(&head[..100]), None);
    }
}
