//! Download and apply: the payload header by range request, every manifest check, the room
//! checks, then two phases. Fetch: each part chunk by chunk, from a checked local copy (the
//! chunk store, the running system: `chunks.rs`) or downloaded by range request (runs of
//! adjacent chunks) -> `decode_chunk` -> chunk store, through `PartVerifier`; nothing outside
//! `/var/lib/keelson` changes. Write: only once every chunk and part passed, the slot is
//! cleared (and the old version's boot entries removed), each part is written from the
//! local chunks, each hashed again, into the inactive usr and usr-verity partitions and a
//! temporary UKI on the ESP (synced and the progress saved every [`CHECKPOINT_BYTES`]); then
//! the UKI's usrhash, the GPT UUIDs and labels, and the UKI's rename to
//! `keelson_<version>+3.efi`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use keelson_disk::{Disk, UsrSlot};
use keelson_payload::{
    Chunk, Expectations, Header, Manifest, Part, PartName, PartVerifier, PayloadError, TrustedKeys,
};

use crate::boot::{self, Layout, OsRelease};
use crate::chunks::{ChunkError, Index, Region, Store};
use crate::esp;
use crate::paths::Paths;
use crate::state::{Phase, Progress, Target};

/// Extra free space the ESP must keep besides the UKI (FAT metadata, a margin).
pub const ESP_MARGIN: u64 = 1 << 20;

/// Extra free space the chunk store's file system (/var) must keep besides the chunks.
pub const STORE_MARGIN: u64 = 16 << 20;

/// Written bytes are synced and the progress saved (a checkpoint) at least this often, at the
/// end of each part and before a failed range request is returned: a power cut redoes at most
/// this much, and a 1 MiB chunk no longer costs three fsyncs (data, state file, state dir).
pub const CHECKPOINT_BYTES: u64 = 16 << 20;

/// Why an apply failed. [`ApplyError::reason`] gives the slug shown in `status`,
/// [`ApplyError::code`] the update_engine error code reported.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A range request failed or was cut: the download resumes at the next chunk.
    #[error("downloading {url} bytes {start}-{end}: {message}")]
    Download {
        /// The payload URL.
        url: String,
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
        /// What happened.
        message: String,
    },
    /// A payload check refused it (signature, expiry, version, hashes, root hash...).
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The manifest is for another version than the server offered.
    #[error("the server offered {offered} but the payload's manifest is version {manifest}")]
    VersionMismatch {
        /// Offered.
        offered: String,
        /// In the manifest.
        manifest: String,
    },
    /// No trusted keys are installed.
    #[error("no trusted update keys in {dir}")]
    NoKeys {
        /// The key directory.
        dir: PathBuf,
    },
    /// A target is too small.
    #[error("no room for {what} on {target}: needs {need} bytes, has {have}")]
    NoRoom {
        /// `usr`, `usr-verity` or `uki`.
        what: &'static str,
        /// The partition or the ESP directory.
        target: String,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// Reading or writing a partition or file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The device or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The partition table could not be read or written.
    #[error(transparent)]
    Disk(#[from] keelson_disk::DiskError),
    /// The running system could not be read.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A boot entry operation failed.
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    /// Saving progress failed.
    #[error("saving progress: {0}")]
    Save(String),
    /// The chunk store or the active slot's index failed.
    #[error(transparent)]
    Chunks(#[from] ChunkError),
}

impl ApplyError {
    /// Short stable slug for `status`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Download { .. } => "download",
            ApplyError::Payload(e) => e.reason(),
            ApplyError::VersionMismatch { .. } => "version_mismatch",
            ApplyError::NoKeys { .. } => "no_trusted_keys",
            ApplyError::NoRoom { what: "uki", .. } => "no_room_esp",
            ApplyError::NoRoom {
                what: "chunk-store",
                ..
            } => "no_room_var",
            ApplyError::NoRoom { .. } => "no_room_partition",
            ApplyError::Io { .. } => "io",
            ApplyError::Disk(_) => "disk",
            ApplyError::Boot(_) => "boot",
            ApplyError::Esp(_) => "esp",
            ApplyError::Save(_) => "state",
            ApplyError::Chunks(ChunkError::Payload(e)) => e.reason(),
            ApplyError::Chunks(_) => "io",
        }
    }

    /// A transient failure: keep the progress and resume later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApplyError::Download { .. })
    }

    /// The update_engine error code (`ActionExitCode`) reported with the 3/0 event.
    pub fn code(&self) -> u32 {
        use keelson_omaha::ExitCode as C;
        let c = match self {
            ApplyError::Download { .. } => C::DownloadTransferError,
            ApplyError::Payload(e) => match e {
                PayloadError::Unsigned => C::DownloadSignatureMissingInManifest,
                PayloadError::UnknownKey { .. } => C::DownloadPayloadPubKeyVerificationError,
                PayloadError::BadSignature { .. } => C::DownloadPayloadVerificationError,
                PayloadError::ChunkHash { .. } | PayloadError::ChunkDecode { .. } => {
                    C::DownloadOperationHashMismatch
                }
                PayloadError::ChunkSize { .. } | PayloadError::PartSize { .. } => {
                    C::PayloadSizeMismatchError
                }
                PayloadError::PartHash { .. } => C::PayloadHashMismatchError,
                PayloadError::RootHashMismatch { .. } | PayloadError::BadUki { .. } => {
                    C::NewKernelVerificationError
                }
                PayloadError::Expired { .. }
                | PayloadError::WrongOs { .. }
                | PayloadError::WrongArch { .. }
                | PayloadError::NotNewer { .. }
                | PayloadError::BadVersion { .. } => C::DownloadNewPartitionInfoError,
                _ => C::DownloadManifestParseError,
            },
            ApplyError::VersionMismatch { .. } => C::DownloadNewPartitionInfoError,
            ApplyError::NoKeys { .. } => C::DownloadPayloadPubKeyVerificationError,
            ApplyError::NoRoom { what: "uki", .. } => C::KernelDeviceOpenError,
            ApplyError::NoRoom {
                what: "chunk-store",
                ..
            } => C::DownloadWriteError,
            ApplyError::NoRoom { .. } => C::InstallDeviceOpenError,
            ApplyError::Chunks(ChunkError::Payload(_)) => C::DownloadManifestParseError,
            ApplyError::Io { .. } | ApplyError::Disk(_) | ApplyError::Chunks(_) => {
                C::DownloadWriteError
            }
            ApplyError::Boot(_) | ApplyError::Esp(_) | ApplyError::Save(_) => C::Error,
        };
        c.code()
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError {
    let path = path.to_owned();
    move |source| ApplyError::Io {
        action,
        path,
        source,
    }
}

/// Everything an apply needs from the running node.
#[derive(Debug)]
pub struct Node<'a> {
    /// All paths.
    pub paths: &'a Paths,
    /// Disk and slots.
    pub layout: &'a Layout,
    /// os-release of the running /usr.
    pub os: &'a OsRelease,
    /// The time (for expiry).
    pub now: DateTime<Utc>,
}

/// Range requests against one payload URL.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    url: String,
}

impl Fetcher {
    /// A fetcher for `url`.
    pub fn new(http: reqwest::Client, url: &str) -> Fetcher {
        Fetcher {
            http,
            url: url.to_owned(),
        }
    }

    /// Bytes `start..start+len` of the payload, exactly.
    pub async fn range(&self, start: u64, len: u64) -> Result<Vec<u8>, ApplyError> {
        let end = start + len.max(1) - 1;
        let fail = |message: String| ApplyError::Download {
            url: self.url.clone(),
            start,
            end,
            message,
        };
        let r = self
            .http
            .get(&self.url)
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if r.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(fail(format!("HTTP {} (expected 206)", r.status())));
        }
        let body = r.bytes().await.map_err(|e| fail(format!("body: {e}")))?;
        if body.len() as u64 != len {
            return Err(fail(format!("got {} bytes, expected {len}", body.len())));
        }
        Ok(body.to_vec())
    }

    /// The header: the 24-byte prefix, then the two JSON blobs.
    pub async fn header(&self) -> Result<Header, ApplyError> {
        let prefix = self.range(0, 24).await?;
        let prefix: [u8; 24] = prefix
            .as_slice()
            .try_into()
            .map_err(|_| PayloadError::Truncated {
                what: "the payload prefix".into(),
            })
            .map_err(ApplyError::Payload)?;
        let len = keelson_payload::header_len(&prefix)?;
        let bytes = self.range(0, len).await?;
        Ok(keelson_payload::read_header(&bytes[..])?)
    }
}

/// A range request running on its own task; dropping it cancels the request.
struct Ahead {
    task: tokio::task::JoinHandle<Result<Vec<u8>, ApplyError>>,
    url: String,
    start: u64,
    len: u64,
}

impl Ahead {
    fn spawn(fetcher: &Fetcher, start: u64, len: u64) -> Ahead {
        let f = fetcher.clone();
        Ahead {
            task: tokio::spawn(async move { f.range(start, len).await }),
            url: fetcher.url.clone(),
            start,
            len,
        }
    }

    async fn join(mut self) -> Result<Vec<u8>, ApplyError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ApplyError::Download {
                url: self.url.clone(),
                start: self.start,
                end: self.start + self.len.max(1) - 1,
                message: format!("the download task ended: {e}"),
            }),
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetches and verifies the manifest of `target` (every check before anything is written).
pub async fn fetch_manifest(
    node: &Node<'_>,
    fetcher: &Fetcher,
    target: &Target,
) -> Result<(Header, Manifest), ApplyError> {
    let header = fetcher.header().await?;
    let dir = node.paths.update_keys();
    let keys = TrustedKeys::load_dir(&dir)?;
    if keys.is_empty() {
        return Err(ApplyError::NoKeys { dir });
    }
    let manifest = keelson_payload::verify_manifest(
        &header,
        &keys,
        &Expectations {
            os_id: &node.os.id,
            arch: boot::systemd_arch(),
            running_version: &node.os.version_id,
            now: node.now,
        },
    )?;
    if manifest.version != target.version {
        return Err(ApplyError::VersionMismatch {
            offered: target.version.clone(),
            manifest: manifest.version.clone(),
        });
    }
    Ok((header, manifest))
}

fn part_of(m: &Manifest, name: PartName) -> Result<&Part, ApplyError> {
    m.part(name).ok_or_else(|| {
        ApplyError::Payload(PayloadError::Malformed {
            what: format!("no {} part", name.as_str()),
        })
    })
}

/// Checks that the inactive slot and the ESP have room for the payload's parts.
pub fn check_room(node: &Node<'_>, m: &Manifest, slot: UsrSlot) -> Result<(), ApplyError> {
    let view = node.layout.slot(slot).ok_or(ApplyError::NoRoom {
        what: "usr",
        target: format!("slot {}", slot.name()),
        need: 0,
        have: 0,
    })?;
    let disk = node.layout.disk.display();
    let usr = part_of(m, PartName::Usr)?;
    if usr.size > view.usr_size {
        return Err(ApplyError::NoRoom {
            what: "usr",
            target: format!("{disk} partition {}", slot.usr_partition()),
            need: usr.size,
            have: view.usr_size,
        });
    }
    let verity = part_of(m, PartName::UsrVerity)?;
    if verity.size > view.verity_size {
        return Err(ApplyError::NoRoom {
            what: "usr-verity",
            target: format!("{disk} partition {}", slot.verity_partition()),
            need: verity.size,
            have: view.verity_size,
        });
    }
    let uki = part_of(m, PartName::Uki)?;
    let linux = node.paths.esp_linux();
    std::fs::create_dir_all(&linux).map_err(io("creating", &linux))?;
    let partial = std::fs::metadata(linux.join(esp::temp_name(&m.version)))
        .map(|md| md.len())
        .unwrap_or(0);
    // The version the slot holds now is removed, boot entries included, before the first byte
    // is written (`apply`): its UKIs' room counts, or an ESP with room for two versions
    // (128 MiB, 44 MB UKIs) could never take a third.
    let replaced: u64 = match view.version.as_deref() {
        Some(old) if old != m.version && old != node.os.version_id => esp::entries(&linux)?
            .iter()
            .filter(|e| e.version == old)
            .filter_map(|e| std::fs::metadata(linux.join(&e.file_name)).ok())
            .map(|md| md.len())
            .sum(),
        _ => 0,
    };
    let have = esp::free_bytes(&linux)?
        .saturating_add(partial)
        .saturating_add(replaced);
    let need = uki.size.saturating_add(ESP_MARGIN);
    if need > have {
        return Err(ApplyError::NoRoom {
            what: "uki",
            target: format!("the ESP ({})", node.paths.esp().display()),
            need,
            have,
        });
    }
    Ok(())
}

/// Where a part's bytes go.
struct Dest {
    file: File,
    path: PathBuf,
    base: u64,
}

impl Dest {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ApplyError> {
        self.file
            .seek(SeekFrom::Start(self.base + offset))
            .map_err(io("seeking in", &self.path))?;
        self.file
            .write_all(bytes)
            .map_err(io("writing", &self.path))
    }

    fn sync(&self) -> Result<(), ApplyError> {
        self.file.sync_data().map_err(io("syncing", &self.path))
    }
}

/// The UKI's temporary path on the ESP.
pub fn uki_temp(paths: &Paths, version: &str) -> PathBuf {
    paths.esp_linux().join(esp::temp_name(version))
}

/// Where the chunks of an apply come from: the chunk store, the active slot, the payload.
struct Sources<'a> {
    store: Store,
    index: Index,
    fetcher: &'a Fetcher,
    data_start: u64,
}

impl Sources<'_> {
    /// A checked local copy: from the store, else from the active slot.
    fn local(
        &self,
        part: PartName,
        i: usize,
        chunk: &Chunk,
    ) -> Result<Option<Vec<u8>>, ApplyError> {
        if let Some(b) = self.store.get(part, i, chunk)? {
            return Ok(Some(b));
        }
        Ok(self.index.get(chunk)?)
    }

    fn ahead_run(&self, run: &Run) -> Ahead {
        Ahead::spawn(self.fetcher, self.data_start + run.data_offset, run.len)
    }

    /// Downloads one chunk now (no request ahead).
    async fn download(&self, chunk: &Chunk) -> Result<Vec<u8>, ApplyError> {
        self.fetcher
            .range(self.data_start + chunk.data_offset, chunk.data_size)
            .await
    }
}

/// The index of the chunks `m` lists that the running system holds: the active slot's usr
/// and usr-verity partitions and the running version's UKI on the ESP. What cannot be read
/// is left out (it costs only downloads).
fn index_running_system(node: &Node<'_>, m: &Manifest) -> Index {
    let mut regions = Vec::new();
    if let Some(view) = node.layout.slot(node.layout.running) {
        match Region::slot(&node.layout.disk, view) {
            Ok(r) => regions.extend(r),
            Err(e) => tracing::warn!(error = %e, "cannot read the active slot; not reusing it"),
        }
    }
    let linux = node.paths.esp_linux();
    if let Ok(entries) = esp::entries(&linux)
        && let Some(e) = entries.iter().find(|e| e.version == node.os.version_id)
        && let Ok(r) = Region::file(&linux.join(&e.file_name))
    {
        regions.push(r);
    }
    let wanted: HashSet<&str> = m
        .parts
        .iter()
        .flat_map(|p| p.chunks.iter().map(|c| c.sha256.as_str()))
        .collect();
    match Index::build(&regions, &m.effective_chunking(), &wanted) {
        Ok(index) => index,
        Err(e) => {
            tracing::warn!(error = %e, "cannot index the running system; downloading every chunk");
            Index::empty()
        }
    }
}

/// Checks that the chunk store's file system has room for the chunks to download.
pub fn check_store_room(store: &Path, need: u64) -> Result<(), ApplyError> {
    std::fs::create_dir_all(store).map_err(io("creating", store))?;
    let have = esp::free_bytes(store)?;
    let need = need.saturating_add(STORE_MARGIN);
    if need > have {
        return Err(ApplyError::NoRoom {
            what: "chunk-store",
            target: format!("{} (/var)", store.display()),
            need,
            have,
        });
    }
    Ok(())
}

/// Downloads and installs `target` into the inactive slot, resuming from `progress`, in two
/// phases (`Progress::phase`). Fetch: every chunk is taken from the chunk store or the active
/// slot when a copy there hashes right, else downloaded (one range request ahead) and kept in
/// the store; every chunk and every part is checked, and nothing outside `/var/lib/keelson`
/// changes. Write: only then the slot is cleared (GPT) with the old version's boot entries,
/// each part is written from the local chunks, each hashed again as it is written, the UKI
/// checked and installed, and the store removed. `save` persists progress at each checkpoint
/// ([`CHECKPOINT_BYTES`], the end of a part and of the fetch phase, a failed range request).
/// Returns the slot written.
pub async fn apply(
    node: &Node<'_>,
    http: &reqwest::Client,
    target: &Target,
    mut progress: Progress,
    save: &mut dyn FnMut(&Progress) -> Result<(), String>,
) -> Result<UsrSlot, ApplyError> {
    let fetcher = Fetcher::new(http.clone(), &target.url);
    let (header, manifest) = fetch_manifest(node, &fetcher, target).await?;
    let slot = node.layout.inactive();
    check_room(node, &manifest, slot)?;
    let view = node
        .layout
        .slot(slot)
        .cloned()
        .ok_or(boot::BootError::NoRunningSlot {
            disk: node.layout.disk.clone(),
            uuid: String::new(),
        })?;
    let parts_total: u64 = manifest.parts.iter().map(|p| p.size).sum();
    let resuming = progress.slot.as_deref() == Some(slot.name());
    if !resuming {
        progress = Progress {
            slot: Some(slot.name().to_owned()),
            bytes_total: parts_total.saturating_mul(2),
            ..Progress::default()
        };
    }
    // The GPT names this version only after an install's every check passed.
    let ours = resuming && view.version.as_deref() == Some(manifest.version.as_str());
    let installed = node
        .paths
        .esp_linux()
        .join(esp::staged_name(&manifest.version));
    if ours && installed.exists() {
        // A power cut after the UKI's rename, before the state said so: already installed.
        return Ok(slot);
    }
    let store = Store::new(node.paths.chunk_store());
    let order = [PartName::Usr, PartName::UsrVerity, PartName::Uki];
    let done = |p: &Progress, name: PartName| p.parts_done.iter().any(|d| d == name.as_str());
    // The active slot is indexed only when some chunk still to handle is not in the store.
    let needs_index = order.iter().any(|&n| {
        !done(&progress, n)
            && part_of(&manifest, n)
                .map(|p| p.chunks.iter().any(|c| !store.contains(&c.sha256)))
                .unwrap_or(false)
    });
    let index = if needs_index {
        index_running_system(node, &manifest)
    } else {
        Index::empty()
    };
    let sources = Sources {
        store,
        index,
        fetcher: &fetcher,
        data_start: header.data_start,
    };
    if progress.phase == Phase::Fetch {
        fetch(&manifest, &sources, &mut progress, save).await?;
        progress.phase = Phase::Write;
        progress.parts_done.clear();
        progress.part = None;
        progress.next_chunk = 0;
        progress.bytes_done = parts_total;
        save(&progress).map_err(ApplyError::Save)?;
        crate::failpoint::hit("fetched");
    }
    // Every chunk and part checked: only now the slot and the boot entries change. The slot
    // is about to be overwritten: if it names another version, that version is gone.
    if let Some(old) = view.version.as_ref().filter(|_| !ours) {
        let mut disk = Disk::open_rw(&node.layout.disk)?;
        disk.clear_usr_slot(slot)?;
        disk.commit()?;
        esp::remove_version(&node.paths.esp_linux(), old)?;
    }
    let uki_tmp = uki_temp(node.paths, &manifest.version);
    for name in order {
        if done(&progress, name) {
            continue;
        }
        let part = part_of(&manifest, name)?;
        let mut dest = match name {
            PartName::Usr | PartName::UsrVerity => Dest {
                file: OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&node.layout.disk)
                    .map_err(io("opening", &node.layout.disk))?,
                path: node.layout.disk.clone(),
                base: if name == PartName::Usr {
                    view.usr_offset
                } else {
                    view.verity_offset
                },
            },
            PartName::Uki => Dest {
                file: OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&uki_tmp)
                    .map_err(io("opening", &uki_tmp))?,
                path: uki_tmp.clone(),
                base: 0,
            },
        };
        let start = if progress.part.as_deref() == Some(name.as_str()) {
            usize::try_from(progress.next_chunk).unwrap_or(0)
        } else {
            0
        };
        // Bytes written since the last checkpoint (sync, then progress saved).
        let mut unsynced = 0u64;
        for (i, chunk) in part.chunks.iter().enumerate().skip(start) {
            // Each chunk is checked again as it is written: never a byte unverified.
            let bytes = match sources.local(name, i, chunk)? {
                Some(b) => b,
                None => match sources.download(chunk).await {
                    Ok(c) => {
                        progress.bytes_downloaded =
                            progress.bytes_downloaded.saturating_add(c.len() as u64);
                        keelson_payload::decode_chunk(name, i, chunk, &c)?
                    }
                    Err(e) => {
                        if unsynced > 0 {
                            dest.sync()?;
                            save(&progress).map_err(ApplyError::Save)?;
                        }
                        return Err(e);
                    }
                },
            };
            dest.write_at(chunk.offset, &bytes)?;
            crate::failpoint::chunk(name.as_str(), i);
            progress.part = Some(name.as_str().to_owned());
            progress.next_chunk = i as u64 + 1;
            progress.bytes_done = progress.bytes_done.saturating_add(chunk.size);
            unsynced = unsynced.saturating_add(chunk.size);
            if unsynced >= CHECKPOINT_BYTES {
                dest.sync()?;
                save(&progress).map_err(ApplyError::Save)?;
                unsynced = 0;
            }
        }
        if name == PartName::Uki {
            dest.file
                .set_len(part.size)
                .map_err(io("truncating", &uki_tmp))?;
        }
        dest.sync()?;
        progress.parts_done.push(name.as_str().to_owned());
        progress.part = None;
        progress.next_chunk = 0;
        save(&progress).map_err(ApplyError::Save)?;
    }
    // Every byte verified; the UKI must pin exactly this usr.
    let f = File::open(&uki_tmp).map_err(io("opening", &uki_tmp))?;
    let usrhash = keelson_payload::uki_usrhash(f)?;
    keelson_payload::check_uki_root_hash(&manifest, &usrhash)?;
    let root_hash = hex::decode(&manifest.usr_root_hash).map_err(|_| {
        ApplyError::Payload(PayloadError::Malformed {
            what: format!("usr_root_hash {:?} is not hex", manifest.usr_root_hash),
        })
    })?;
    install(node, slot, &manifest.version, &root_hash, &uki_tmp)?;
    if let Err(e) = sources.store.remove() {
        tracing::warn!(error = %e, "removing the chunk store");
    }
    Ok(slot)
}

/// With content-defined chunks, a request fetches consecutive chunks (their compressed
/// copies adjacent in the payload) until it holds at least this many bytes, so that small
/// chunks do not cost a request each (keelson-server answers a range request in about
/// 10 ms on a loaded machine: 7,700 requests for a 250 MiB payload took 133 s). Fixed
/// chunks (format 1, or `fixed`), already sized for a request, go one per request.
pub const RUN_BYTES: u64 = 2 << 20;

/// Chunks `first..=last` of a part, downloaded by one range request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: usize,
    last: usize,
    /// Offset of the first chunk's compressed bytes, relative to `data_start`.
    data_offset: u64,
    /// Compressed bytes of the whole run.
    len: u64,
}

/// The runs of the chunks `plan` marks for download, each growing while it holds less than
/// `max_run` bytes ([`RUN_BYTES`], or 0: a chunk per run).
fn runs(part: &Part, plan: &[bool], max_run: u64) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (i, c) in part.chunks.iter().enumerate() {
        if !plan.get(i).copied().unwrap_or(false) {
            continue;
        }
        if let Some(r) = out.last_mut()
            && r.last + 1 == i
            && r.data_offset.saturating_add(r.len) == c.data_offset
            && r.len < max_run
        {
            r.last = i;
            r.len = r.len.saturating_add(c.data_size);
            continue;
        }
        out.push(Run {
            first: i,
            last: i,
            data_offset: c.data_offset,
            len: c.data_size,
        });
    }
    out
}

/// A run's bytes cut into its chunks' compressed copies, by chunk index.
fn split_run(part: &Part, run: &Run, data: Vec<u8>) -> HashMap<usize, Vec<u8>> {
    let mut out = HashMap::new();
    for i in run.first..=run.last {
        if let Some(c) = part.chunks.get(i) {
            let from = usize::try_from(c.data_offset - run.data_offset).unwrap_or(usize::MAX);
            let to = from.saturating_add(usize::try_from(c.data_size).unwrap_or(usize::MAX));
            if let Some(b) = data.get(from..to) {
                out.insert(i, b.to_vec());
            }
        }
    }
    out
}

/// The fetch phase: every part not done yet, chunk by chunk from a checked local copy or the
/// payload, through the part's verifier; downloaded chunks go to the store.
async fn fetch(
    manifest: &Manifest,
    sources: &Sources<'_>,
    progress: &mut Progress,
    save: &mut dyn FnMut(&Progress) -> Result<(), String>,
) -> Result<(), ApplyError> {
    let order = [PartName::Usr, PartName::UsrVerity, PartName::Uki];
    let max_run = if manifest.effective_chunking().algorithm == keelson_payload::FIXED {
        0
    } else {
        RUN_BYTES
    };
    let pending: Vec<&Part> = order
        .iter()
        .filter(|n| !progress.parts_done.iter().any(|d| d == n.as_str()))
        .map(|&n| part_of(manifest, n))
        .collect::<Result<_, _>>()?;
    // The plan: which chunks to download (not local now, and not downloaded earlier in this
    // run), and the room that takes in the store.
    let mut have: HashSet<&str> = HashSet::new();
    let mut need = 0u64;
    let plan: Vec<Vec<bool>> = pending
        .iter()
        .map(|p| {
            p.chunks
                .iter()
                .map(|c| {
                    let local = have.contains(c.sha256.as_str())
                        || sources.store.contains(&c.sha256)
                        || sources.index.contains(&c.sha256);
                    if !local {
                        need = need.saturating_add(c.data_size);
                        have.insert(&c.sha256);
                    }
                    !local
                })
                .collect()
        })
        .collect();
    check_store_room(sources.store.dir(), need)?;
    // A part cut short is fetched again from its first chunk (the ones it had are local
    // now), so its hash covers all of it.
    progress.part = None;
    progress.next_chunk = 0;
    progress.bytes_done = manifest
        .parts
        .iter()
        .filter(|p| progress.parts_done.iter().any(|d| d == p.name.as_str()))
        .map(|p| p.size)
        .sum();
    for (part, plan) in pending.into_iter().zip(plan) {
        let name = part.name;
        let mut verifier = PartVerifier::new(part);
        let runs = runs(part, &plan, max_run);
        // One range request ahead: the next run of chunks to download downloads while this
        // one is checked and stored. It is sent only once the one before it has arrived, so
        // requests still go out one at a time and in order (a resume and a cut download mean
        // the same chunks).
        let mut next_run = 0usize;
        let spawn_next = |next_run: &mut usize| {
            let r = runs.get(*next_run).map(|r| (*r, sources.ahead_run(r)));
            *next_run += 1;
            r
        };
        let mut ahead = spawn_next(&mut next_run);
        // The compressed chunks of the run that arrived last, by index.
        let mut arrived: HashMap<usize, Vec<u8>> = HashMap::new();
        let mut unsynced = 0u64;
        for (i, chunk) in part.chunks.iter().enumerate() {
            let local = if plan[i] {
                None
            } else {
                sources.local(name, i, chunk)?
            };
            let bytes = match local {
                Some(b) => {
                    progress.bytes_reused = progress.bytes_reused.saturating_add(chunk.size);
                    b
                }
                None => {
                    let fetched = if let Some(c) = arrived.remove(&i) {
                        Ok(c)
                    } else {
                        match ahead.take() {
                            Some((run, a)) if run.first == i => {
                                let r = a.join().await;
                                ahead = spawn_next(&mut next_run);
                                r.map(|data| {
                                    arrived = split_run(part, &run, data);
                                    arrived.remove(&i).unwrap_or_default()
                                })
                            }
                            // A local copy that turned out bad: download it now.
                            other => {
                                ahead = other;
                                sources.download(chunk).await
                            }
                        }
                    };
                    let compressed = match fetched {
                        Ok(c) => c,
                        Err(e) => {
                            // Keep what was fetched: the retry finds it in the store.
                            sources.store.sync()?;
                            save(progress).map_err(ApplyError::Save)?;
                            return Err(e);
                        }
                    };
                    let bytes = keelson_payload::decode_chunk(name, i, chunk, &compressed)?;
                    sources.store.put(chunk, &compressed)?;
                    progress.bytes_downloaded = progress
                        .bytes_downloaded
                        .saturating_add(compressed.len() as u64);
                    bytes
                }
            };
            verifier.update(&bytes);
            crate::failpoint::fetched(name.as_str(), i);
            progress.part = Some(name.as_str().to_owned());
            progress.next_chunk = i as u64 + 1;
            progress.bytes_done = progress.bytes_done.saturating_add(chunk.size);
            unsynced = unsynced.saturating_add(chunk.size);
            if unsynced >= CHECKPOINT_BYTES {
                sources.store.sync()?;
                save(progress).map_err(ApplyError::Save)?;
                unsynced = 0;
            }
        }
        verifier.finish()?;
        sources.store.sync()?;
        progress.parts_done.push(name.as_str().to_owned());
        progress.part = None;
        progress.next_chunk = 0;
        save(progress).map_err(ApplyError::Save)?;
    }
    Ok(())
}

/// The switch, after every check: GPT UUIDs and labels of the slot, then the UKI's rename
/// to `keelson_<version>+3.efi`, then the removal of entries no slot holds any more.
fn install(
    node: &Node<'_>,
    slot: UsrSlot,
    version: &str,
    root_hash: &[u8],
    uki_tmp: &Path,
) -> Result<(), ApplyError> {
    let (usr_uuid, verity_uuid) = keelson_disk::uuids_from_root_hash(root_hash)?;
    let mut disk = Disk::open_rw(&node.layout.disk)?;
    disk.set_uuid(slot.usr_partition(), usr_uuid)?;
    disk.set_uuid(slot.verity_partition(), verity_uuid)?;
    disk.set_label(slot.usr_partition(), &keelson_disk::usr_label(version))?;
    disk.set_label(
        slot.verity_partition(),
        &keelson_disk::usr_verity_label(version),
    )?;
    disk.commit()?;
    crate::failpoint::hit("uki-before-rename");
    let linux = node.paths.esp_linux();
    let final_path = linux.join(esp::staged_name(version));
    esp::rename_durably(uki_tmp, &final_path)?;
    crate::failpoint::hit("uki-after-rename");
    let running = node
        .layout
        .slot(node.layout.running)
        .and_then(|s| s.version.clone())
        .unwrap_or_else(|| node.os.version_id.clone());
    esp::remove_unused(&linux, &[running.as_str(), version, &node.os.version_id])?;
    Ok(())
}

/// Removes a failed apply's temporary UKI (the ESP is left as it was) and the chunk store.
pub fn discard_temp(paths: &Paths, version: &str) {
    let _ = std::fs::remove_file(uki_temp(paths, version));
    if let Err(e) = Store::new(paths.chunk_store()).remove() {
        tracing::warn!(error = %e, "removing the chunk store");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::boot::SlotView;
    use keelson_payload::Part;

    fn manifest(usr: u64, verity: u64, uki: u64) -> Manifest {
        let part = |name, size| Part {
            name,
            size,
            sha256: String::new(),
            chunks: Vec::new(),
        };
        Manifest {
            format: 1,
            os_id: "keelson".into(),
            arch: "x86-64".into(),
            version: "2.0.0".into(),
            usr_root_hash: String::new(),
            created: Utc::now(),
            expires: Utc::now(),
            chunking: None,
            parts: vec![
                part(PartName::Usr, usr),
                part(PartName::UsrVerity, verity),
                part(PartName::Uki, uki),
            ],
        }
    }

    #[test]
    fn runs_join_adjacent_small_chunks_up_to_run_bytes() {
        let kib = 1024u64;
        // Compressed sizes; chunk 5 shares an earlier copy (not adjacent in the data area).
        let sizes = [
            100 * kib,
            100 * kib,
            100 * kib,
            10 * kib,
            300 * kib,
            50 * kib,
            5 * kib,
        ];
        let mut chunks = Vec::new();
        let mut data = 0u64;
        for (i, &z) in sizes.iter().enumerate() {
            let data_offset = if i == 5 { 0 } else { data };
            chunks.push(Chunk {
                offset: i as u64 * 1000,
                size: 1000,
                sha256: String::new(),
                data_offset,
                data_size: z,
            });
            if i != 5 {
                data += z;
            }
        }
        let part = Part {
            name: PartName::Usr,
            size: 7000,
            sha256: String::new(),
            chunks,
        };
        let all = [true; 7];
        let r: Vec<(usize, usize)> = runs(&part, &all, 256 * kib)
            .iter()
            .map(|r| (r.first, r.last))
            .collect();
        // 0-2 reach 300 KiB; 3-4 (4 alone is big); 5 not adjacent; 6.
        assert_eq!(r, vec![(0, 2), (3, 4), (5, 5), (6, 6)]);
        // A chunk not to download splits a run.
        let plan = [true, false, true, true, true, true, true];
        let r: Vec<(usize, usize)> = runs(&part, &plan, 256 * kib)
            .iter()
            .map(|r| (r.first, r.last))
            .collect();
        assert_eq!(r, vec![(0, 0), (2, 4), (5, 5), (6, 6)]);
        // A run's bytes split back into its chunks.
        // Fixed chunks: one per run.
        assert_eq!(runs(&part, &all, 0).len(), 7);
        let run = runs(&part, &all, 256 * kib)[0];
        let bytes: Vec<u8> = (0..run.len).map(|b| (b % 251) as u8).collect();
        let got = split_run(&part, &run, bytes.clone());
        assert_eq!(got.len(), 3);
        assert_eq!(got[&1], bytes[(100 * kib) as usize..(200 * kib) as usize]);
    }

    #[test]
    fn room_is_checked_per_target_with_its_own_reason() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let view = |slot| SlotView {
            slot,
            version: None,
            usr_offset: 0,
            usr_size: 100,
            verity_offset: 100,
            verity_size: 10,
        };
        let layout = Layout {
            disk: dir.path().join("disk"),
            running: UsrSlot::A,
            slots: vec![view(UsrSlot::A), view(UsrSlot::B)],
        };
        let os = OsRelease {
            id: "keelson".into(),
            version_id: "1.0.0".into(),
        };
        let node = Node {
            paths: &paths,
            layout: &layout,
            os: &os,
            now: Utc::now(),
        };
        check_room(&node, &manifest(100, 10, 10), UsrSlot::B).unwrap();
        let cases = [
            (manifest(101, 10, 10), "no_room_partition", "partition 4"),
            (manifest(100, 11, 10), "no_room_partition", "partition 5"),
            // Larger than any ESP: the ESP is "full" for this UKI.
            (manifest(100, 10, u64::MAX / 2), "no_room_esp", "the ESP"),
        ];
        for (m, reason, names) in cases {
            let e = check_room(&node, &m, UsrSlot::B).unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
            assert!(e.to_string().contains(names), "{e}");
        }
    }
}
