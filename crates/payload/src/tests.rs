//! Round trips and every refusal, each with its own error.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{Duration, TimeZone, Utc};

use crate::testing::{MACHINE_ARM64, fake_image_dir, minimal_pe, minimal_uki, noise};
use crate::*;

const ROOT: &str = "3f1c2a9b8e7d6c5b4a392817160504f3e2d1c0b9a8978675645342312010fedc";
const CHUNK: u64 = 64 * 1024;

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKeyFile,
    keys: TrustedKeys,
    usr: Vec<u8>,
    verity: Vec<u8>,
}

fn created() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 14, 0, 0).unwrap()
}

fn expect<'a>() -> Expectations<'a> {
    Expectations {
        os_id: "keelson",
        arch: "x86-64",
        running_version: "0.1.0",
        now: created() + Duration::days(1),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let g = generate_key(&dir.path().join("keys"), "dev").unwrap();
    let key = SigningKeyFile::load(&g.private).unwrap();
    let keys = TrustedKeys::load_dir(&dir.path().join("keys")).unwrap();
    // usr: 5 chunks of noise, 2 identical zero chunks, a compressible tail, and a partial chunk.
    let mut usr = noise(5 * CHUNK as usize, 7);
    usr.extend(vec![0u8; 2 * CHUNK as usize]);
    usr.extend(b"keelson ".repeat(CHUNK as usize / 8));
    usr.extend(noise(1234, 9));
    let verity = noise(3 * CHUNK as usize + 17, 11);
    Fixture {
        dir,
        key,
        keys,
        usr,
        verity,
    }
}

impl Fixture {
    fn image(&self, version: &str, root: &str, cmdline_root: &str) -> BuildInput {
        let d = self.dir.path().join(format!("image-{version}"));
        fake_image_dir(
            &d,
            "keelson",
            version,
            root,
            &self.usr,
            &self.verity,
            &format!("console=ttyS0 usrhash={cmdline_root} rw"),
        )
        .unwrap();
        BuildInput::from_image_dir(&d, version).unwrap()
    }

    fn build(&self, version: &str, keys: Vec<&SigningKeyFile>) -> PathBuf {
        let input = self.image(version, ROOT, ROOT);
        let out = self.dir.path().join(format!("keelson_{version}.payload"));
        let read = std::sync::atomic::AtomicU64::new(0);
        let progress = |n: u64| {
            read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let opts = BuildOptions {
            chunking: crate::Chunking::fixed(CHUNK),
            created: created(),
            expires_in: Duration::days(30),
            keys,
            progress: Some(&progress),
            ..BuildOptions::default()
        };
        build(&input, &out, &opts).unwrap();
        // Progress counts every byte of every part once.
        let total: u64 = [&input.usr, &input.usr_verity, &input.uki]
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(read.into_inner(), total);
        out
    }
}

fn manifest_of(path: &Path) -> Manifest {
    Manifest::from_bytes(&read_header_file(path).unwrap().manifest_bytes).unwrap()
}

/// Rewrite the payload at `path` with a new header (same data area).
fn rewrite_header(path: &Path, f: impl FnOnce(&mut Header)) {
    let bytes = fs::read(path).unwrap();
    let mut h = read_header(&bytes[..]).unwrap();
    let data = bytes[h.data_start as usize..].to_vec();
    f(&mut h);
    let h = Header::new(h.manifest_bytes.clone(), h.signatures.clone()).unwrap();
    let mut out = h.to_bytes().unwrap();
    out.extend(data);
    fs::write(path, out).unwrap();
}

#[test]
fn round_trip_restores_every_part_and_dedupes_identical_chunks() {
    let fx = fixture();
    let path = fx.build("0.2.0", vec![&fx.key]);
    let v = verify_file(&path, &fx.keys, &expect()).unwrap();
    assert_eq!(v.key_id, fx.key.key_id());
    assert_eq!(v.uki_usrhash, ROOT);
    let m = v.manifest;
    assert_eq!(
        (m.os_id.as_str(), m.arch.as_str(), m.version.as_str()),
        ("keelson", "x86-64", "0.2.0")
    );
    assert_eq!(m.expires, created() + Duration::days(30));
    let usr = m.part(PartName::Usr).unwrap();
    assert_eq!(usr.size, fx.usr.len() as u64);
    assert_eq!(usr.chunks.len(), 9);
    assert_eq!(usr.chunks[8].size, 1234);
    // The two zero chunks share one stored copy, and it is small.
    assert_eq!(usr.chunks[5].data_offset, usr.chunks[6].data_offset);
    assert!(usr.chunks[5].data_size < 1024);
    let offsets: std::collections::HashSet<u64> = m
        .parts
        .iter()
        .flat_map(|p| p.chunks.iter().map(|c| c.data_offset))
        .collect();
    assert_eq!(
        offsets.len(),
        m.parts.iter().map(|p| p.chunks.len()).sum::<usize>() - 1
    );

    let mut file = PayloadFile::open(&path).unwrap();
    for (name, want) in [
        (PartName::Usr, fx.usr.clone()),
        (PartName::UsrVerity, fx.verity.clone()),
        (
            PartName::Uki,
            minimal_uki(&format!("console=ttyS0 usrhash={ROOT} rw")),
        ),
    ] {
        let mut got = Vec::new();
        file.write_part(m.part(name).unwrap(), &mut got, Path::new("mem"))
            .unwrap();
        assert_eq!(got, want, "{name}");
    }
    // The header length from the first 24 bytes is where the data starts.
    let bytes = fs::read(&path).unwrap();
    let prefix: [u8; 24] = bytes[..24].try_into().unwrap();
    assert_eq!(header_len(&prefix).unwrap(), file.header().data_start);
    // No temporary file is left next to the output.
    let names: Vec<_> = fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn decode_chunk_and_part_verifier_check_against_the_manifest() {
    let fx = fixture();
    let path = fx.build("0.2.0", vec![&fx.key]);
    let m = manifest_of(&path);
    let mut file = PayloadFile::open(&path).unwrap();
    let part = m.part(PartName::UsrVerity).unwrap();
    let mut pv = PartVerifier::new(part);
    for (i, c) in part.chunks.iter().enumerate() {
        let z = file.read_compressed(part.name, i, c).unwrap();
        let bytes = decode_chunk(part.name, i, c, &z).unwrap();
        assert_eq!(bytes, fx.verity[c.offset as usize..c.end() as usize]);
        pv.update(&bytes);
    }
    pv.finish().unwrap();

    // Fewer bytes than the part: PartSize; same size, other bytes: PartHash.
    let mut short = PartVerifier::new(part);
    short.update(&fx.verity[1..]);
    assert_eq!(short.finish().unwrap_err().reason(), "part_size");
    let mut other = PartVerifier::new(part);
    let mut v = fx.verity.clone();
    v[100] ^= 1;
    other.update(&v);
    assert!(matches!(
        other.finish(),
        Err(PayloadError::PartHash {
            part: PartName::UsrVerity,
            ..
        })
    ));

    // A chunk whose manifest size is larger than its data: ChunkSize (uncompressed).
    let c = &part.chunks[0];
    let z = file.read_compressed(part.name, 0, c).unwrap();
    let mut bigger = c.clone();
    bigger.size += 1;
    let e = decode_chunk(part.name, 0, &bigger, &z).unwrap_err();
    assert!(
        matches!(e, PayloadError::ChunkSize { what: "uncompressed", want, got, .. } if want == got + 1),
        "{e}"
    );
    // Compressed bytes of another length than data_size: ChunkSize (compressed).
    let e = decode_chunk(part.name, 0, c, &z[1..]).unwrap_err();
    assert!(
        matches!(
            e,
            PayloadError::ChunkSize {
                what: "compressed",
                ..
            }
        ),
        "{e}"
    );
    // Garbage instead of a zstd frame: ChunkDecode.
    let e = decode_chunk(part.name, 0, c, &vec![0x55; z.len()]).unwrap_err();
    assert_eq!(e.reason(), "chunk_decode", "{e}");
}

#[test]
fn tampered_chunk_byte_is_a_chunk_hash_error() {
    let fx = fixture();
    let path = fx.build("0.2.0", vec![&fx.key]);
    let m = manifest_of(&path);
    let h = read_header_file(&path).unwrap();
    // Chunk 3 of usr is noise, stored raw: flip one byte in the middle of its data.
    let c = &m.part(PartName::Usr).unwrap().chunks[3];
    let mut bytes = fs::read(&path).unwrap();
    let at = (h.data_start + c.data_offset + c.data_size / 2) as usize;
    bytes[at] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    // The manifest still verifies; the chunk does not.
    verify_manifest(&read_header_file(&path).unwrap(), &fx.keys, &expect()).unwrap();
    let e = verify_file(&path, &fx.keys, &expect()).unwrap_err();
    match &e {
        PayloadError::ChunkHash {
            part,
            index,
            offset,
            want,
            got,
        } => {
            assert_eq!((*part, *index, *offset), (PartName::Usr, 3, 3 * CHUNK));
            assert_eq!(want, &c.sha256);
            assert_ne!(want, got);
        }
        other => panic!("want ChunkHash, got {other}"),
    }
    assert_eq!(e.reason(), "chunk_hash");
}

#[test]
fn tampered_manifest_byte_is_a_bad_signature() {
    let fx = fixture();
    let path = fx.build("0.2.0", vec![&fx.key]);
    rewrite_header(&path, |h| {
        // Still valid JSON, and a sound manifest: only the version changes.
        let text = String::from_utf8(h.manifest_bytes.clone()).unwrap();
        h.manifest_bytes = text
            .replacen("\"version\": \"0.2.0\"", "\"version\": \"0.3.0\"", 1)
            .into_bytes();
    });
    let h = read_header_file(&path).unwrap();
    assert!(Manifest::from_bytes(&h.manifest_bytes).is_ok());
    let e = verify_manifest(&h, &fx.keys, &expect()).unwrap_err();
    assert!(
        matches!(&e, PayloadError::BadSignature { key_id } if key_id == fx.key.key_id()),
        "{e}"
    );
    assert_eq!(e.reason(), "bad_signature");
}

#[test]
fn signature_refusals_unknown_key_unsigned_and_garbage() {
    let fx = fixture();
    let other_dir = fx.dir.path().join("other");
    let g = generate_key(&other_dir, "other").unwrap();
    let other = SigningKeyFile::load(&g.private).unwrap();

    let path = fx.build("0.2.0", vec![&other]);
    let e = verify_file(&path, &fx.keys, &expect()).unwrap_err();
    assert!(
        matches!(&e, PayloadError::UnknownKey { key_ids } if key_ids == &vec![g.key_id.clone()]),
        "{e}"
    );
    assert_eq!(e.reason(), "unknown_key");

    let path = fx.build("0.2.1", vec![]);
    let e = verify_file(&path, &fx.keys, &expect()).unwrap_err();
    assert!(matches!(e, PayloadError::Unsigned), "{e}");
    // No trusted keys at all is no excuse either.
    let e = verify_file(&path, &TrustedKeys::default(), &expect()).unwrap_err();
    assert!(matches!(e, PayloadError::Unsigned), "{e}");

    // A trusted key id with a signature that is not 64 bytes of base64: BadSignature.
    let path = fx.build("0.2.2", vec![&fx.key]);
    rewrite_header(&path, |h| {
        h.signatures[0].ed25519 = "bm90IGEgc2lnbmF0dXJl".into()
    });
    let e = verify_file(&path, &fx.keys, &expect()).unwrap_err();
    assert_eq!(e.reason(), "bad_signature", "{e}");
}

#[test]
fn two_signatures_pass_when_either_key_is_trusted() {
    let fx = fixture();
    let new_dir = fx.dir.path().join("new");
    let g = generate_key(&new_dir, "new").unwrap();
    let new = SigningKeyFile::load(&g.private).unwrap();
    let path = fx.build("0.2.0", vec![&fx.key]);
    let before = read_header_file(&path).unwrap();
    // `sign` adds the new key's signature, keeping the manifest bytes.
    sign(&path, &new).unwrap();
    let after = read_header_file(&path).unwrap();
    assert_eq!(after.manifest_bytes, before.manifest_bytes);
    assert_eq!(after.signatures.len(), 2);
    assert_eq!(after.signatures[0], before.signatures[0]);
    // Signing again with the same key replaces, not duplicates.
    sign(&path, &new).unwrap();
    assert_eq!(read_header_file(&path).unwrap().signatures.len(), 2);

    let only_new = TrustedKeys::load_dir(&new_dir).unwrap();
    assert_eq!(
        verify_file(&path, &only_new, &expect()).unwrap().key_id,
        g.key_id
    );
    assert_eq!(
        verify_file(&path, &fx.keys, &expect()).unwrap().key_id,
        fx.key.key_id()
    );
    // A bad signature by an untrusted key does not spoil a good one by a trusted key.
    rewrite_header(&path, |h| {
        h.signatures[0].ed25519 = h.signatures[1].ed25519.clone()
    });
    assert_eq!(
        verify_file(&path, &only_new, &expect()).unwrap().key_id,
        g.key_id
    );
    assert_eq!(
        verify_file(&path, &fx.keys, &expect())
            .unwrap_err()
            .reason(),
        "bad_signature"
    );
}

#[test]
fn expiry_os_arch_and_version_refusals() {
    let fx = fixture();
    let path = fx.build("0.2.0", vec![&fx.key]);
    let h = read_header_file(&path).unwrap();
    let check = |e: Expectations| verify_manifest(&h, &fx.keys, &e);

    let late = created() + Duration::days(30);
    let e = check(Expectations {
        now: late,
        ..expect()
    })
    .unwrap_err();
    assert!(
        matches!(e, PayloadError::Expired { expires, now } if expires == late && now == late),
        "{e}"
    );
    check(Expectations {
        now: late - Duration::seconds(1),
        ..expect()
    })
    .unwrap();

    let e = check(Expectations {
        os_id: "flatcar",
        ..expect()
    })
    .unwrap_err();
    assert!(
        matches!(&e, PayloadError::WrongOs { want, got } if want == "flatcar" && got == "keelson"),
        "{e}"
    );
    let e = check(Expectations {
        arch: "arm64",
        ..expect()
    })
    .unwrap_err();
    assert!(
        matches!(&e, PayloadError::WrongArch { want, got } if want == "arm64" && got == "x86-64"),
        "{e}"
    );

    for running in ["0.2.0", "0.2.0+other-build", "0.2", "0.10.0", "1.0.0-rc1"] {
        let e = check(Expectations {
            running_version: running,
            ..expect()
        })
        .unwrap_err();
        assert!(
            matches!(&e, PayloadError::NotNewer { version, .. } if version == "0.2.0"),
            "{running}: {e}"
        );
        assert_eq!(e.reason(), "not_newer");
    }
    for running in ["0.1.9", "0.2.0-rc1", "0.1"] {
        check(Expectations {
            running_version: running,
            ..expect()
        })
        .unwrap();
    }
    let e = check(Expectations {
        running_version: "latest",
        ..expect()
    })
    .unwrap_err();
    assert!(
        matches!(&e, PayloadError::BadVersion { value } if value == "latest"),
        "{e}"
    );

    // The order of the checks: an expired manifest for another OS reports the expiry.
    let e = check(Expectations {
        now: late,
        os_id: "flatcar",
        ..expect()
    })
    .unwrap_err();
    assert_eq!(e.reason(), "expired");
}

#[test]
fn root_hash_that_is_not_the_ukis_usrhash_is_refused_by_build() {
    let fx = fixture();
    let other = "aa".repeat(32);
    let input = fx.image("0.2.0", ROOT, &other);
    let out = fx.dir.path().join("mismatch.payload");
    let e = build(&input, &out, &BuildOptions::default()).unwrap_err();
    assert!(
        matches!(&e, PayloadError::RootHashMismatch { manifest, uki } if manifest == ROOT && uki == &other),
        "{e}"
    );
    assert_eq!(e.reason(), "root_hash_mismatch");
    assert!(!out.exists());
    assert!(
        fs::read_dir(fx.dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );

    let m = manifest_of(&fx.build("0.2.0", vec![&fx.key]));
    check_uki_root_hash(&m, &ROOT.to_uppercase()).unwrap();
    assert_eq!(
        check_uki_root_hash(&m, &other).unwrap_err().reason(),
        "root_hash_mismatch"
    );
}

#[test]
fn truncated_payloads_are_refused_without_panic() {
    let fx = fixture();
    let path = fx.build("0.2.0", vec![&fx.key]);
    let bytes = fs::read(&path).unwrap();
    let h = read_header(&bytes[..]).unwrap();
    for cut in [0, 5, 23, 24, 100, h.data_start as usize - 1] {
        let e = read_header(&bytes[..cut]).unwrap_err();
        assert_eq!(e.reason(), "truncated", "cut at {cut}: {e}");
    }
    // Header complete, data area cut: the last chunk is past the end.
    let cut = fx.dir.path().join("cut.payload");
    fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    verify_manifest(&read_header_file(&cut).unwrap(), &fx.keys, &expect()).unwrap();
    let e = verify_file(&cut, &fx.keys, &expect()).unwrap_err();
    assert!(
        matches!(&e, PayloadError::Truncated { what } if what.contains("uki chunk")),
        "{e}"
    );
}

#[test]
fn oversize_or_bad_header_fields_are_malformed() {
    let mut prefix = [0u8; 24];
    prefix[..8].copy_from_slice(MAGIC);
    let with = |m: u64, s: u64| {
        let mut p = prefix;
        p[8..16].copy_from_slice(&m.to_be_bytes());
        p[16..24].copy_from_slice(&s.to_be_bytes());
        p
    };
    for (m, s) in [
        (u64::MAX, 10),
        (MAX_MANIFEST_LEN + 1, 10),
        (10, u64::MAX),
        (10, MAX_SIGNATURES_LEN + 1),
        (0, 10),
        (10, 0),
    ] {
        let p = with(m, s);
        assert_eq!(header_len(&p).unwrap_err().reason(), "malformed", "{m} {s}");
        // read_header refuses before allocating or reading anything more.
        let e = read_header(std::io::Read::chain(&p[..], std::io::repeat(b'x'))).unwrap_err();
        assert_eq!(e.reason(), "malformed", "{m} {s}");
    }
    assert_eq!(
        header_len(&with(MAX_MANIFEST_LEN, MAX_SIGNATURES_LEN)).unwrap(),
        24 + MAX_MANIFEST_LEN + MAX_SIGNATURES_LEN
    );
    let mut bad_magic = with(10, 10);
    bad_magic[0] = b'X';
    assert_eq!(header_len(&bad_magic).unwrap_err().reason(), "malformed");

    // Signatures that are not the signatures JSON.
    let mut bytes = with(2, 4).to_vec();
    bytes.extend_from_slice(b"{}[1]x");
    assert_eq!(read_header(&bytes[..]).unwrap_err().reason(), "malformed");
    let sigs = br#"{"signatures":[],"extra":1}"#;
    let mut bytes = with(2, sigs.len() as u64).to_vec();
    bytes.extend_from_slice(b"{}");
    bytes.extend_from_slice(sigs);
    assert_eq!(read_header(&bytes[..]).unwrap_err().reason(), "malformed");
    // The same with no extra field reads.
    let sigs = br#"{"signatures":[]}"#;
    let mut bytes = with(2, sigs.len() as u64).to_vec();
    bytes.extend_from_slice(b"{}");
    bytes.extend_from_slice(sigs);
    assert_eq!(
        read_header(&bytes[..]).unwrap().data_start,
        24 + 2 + sigs.len() as u64
    );
}

#[test]
fn unsound_manifests_are_malformed() {
    let fx = fixture();
    let m = manifest_of(&fx.build("0.2.0", vec![]));
    let check = |f: &dyn Fn(&mut Manifest)| {
        let mut m = m.clone();
        f(&mut m);
        let bytes = serde_json::to_vec(&m).unwrap();
        Manifest::from_bytes(&bytes).unwrap_err()
    };
    type Change = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(&str, Change)> = vec![
        ("gap", Box::new(|m| m.parts[0].chunks[1].offset += 1)),
        ("overlap", Box::new(|m| m.parts[0].chunks[1].offset -= 1)),
        ("short", Box::new(|m| m.parts[0].size += 1)),
        ("empty chunk", Box::new(|m| m.parts[1].chunks[0].size = 0)),
        (
            "duplicate part",
            Box::new(|m| m.parts[2] = m.parts[1].clone()),
        ),
        (
            "missing part",
            Box::new(|m| {
                m.parts.pop();
            }),
        ),
        ("format", Box::new(|m| m.format = 3)),
        ("format 1 with chunking", Box::new(|m| m.format = 1)),
        ("format 2 without chunking", Box::new(|m| m.chunking = None)),
        (
            "chunk larger than the chunking's max",
            Box::new(|m| {
                if let Some(c) = &mut m.chunking {
                    c.max_size = 1024;
                    c.min_size = 1024;
                    c.avg_size = 1024;
                }
            }),
        ),
        ("root hash", Box::new(|m| m.usr_root_hash = "xyz".into())),
        (
            "chunk hash",
            Box::new(|m| m.parts[0].chunks[0].sha256.make_ascii_uppercase()),
        ),
        (
            "huge chunk",
            Box::new(|m| {
                m.parts[1].chunks[0].size = MAX_CHUNK_SIZE + 1;
            }),
        ),
        (
            "huge data",
            Box::new(|m| m.parts[1].chunks[0].data_size = u64::MAX),
        ),
    ];
    for (what, f) in cases {
        assert_eq!(check(&*f).reason(), "malformed", "{what}");
    }
    // Unknown fields and part names are refused by the parser.
    let text = String::from_utf8(m.to_bytes().unwrap()).unwrap();
    for bad in [
        text.replacen("\"format\": 2,", "\"format\": 2, \"extra\": true,", 1),
        text.replacen("\"usr-verity\"", "\"home\"", 1),
        text.replacen("\"data_size\"", "\"data_bytes\"", 1),
        "[]".into(),
        "\u{0}".into(),
    ] {
        assert_ne!(bad, text);
        assert_eq!(
            Manifest::from_bytes(bad.as_bytes()).unwrap_err().reason(),
            "malformed"
        );
    }
}

#[test]
fn uki_cmdline_parsing() {
    use std::io::Cursor;
    let uki = minimal_uki("a=1 usrhash=ABCDEF01 b usrhash=0123abcd");
    let info = read_uki(Cursor::new(&uki)).unwrap();
    assert_eq!(info.arch, Some("x86-64"));
    assert_eq!(info.cmdline, "a=1 usrhash=ABCDEF01 b usrhash=0123abcd");
    // The last usrhash= wins, as on the kernel command line.
    assert_eq!(uki_usrhash(Cursor::new(&uki)).unwrap(), "0123abcd");

    let arm = minimal_pe(MACHINE_ARM64, &[(".cmdline", b"usrhash=AA\0\0")]);
    assert_eq!(read_uki(Cursor::new(&arm)).unwrap().arch, Some("arm64"));
    assert_eq!(uki_usrhash(Cursor::new(&arm)).unwrap(), "aa");

    let refusals: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("not PE", b"#!/bin/sh\n".repeat(20)),
        ("no cmdline", minimal_pe(0x8664, &[(".linux", b"kernel")])),
        ("no usrhash", minimal_uki("root=/dev/sda")),
        ("usrhash not hex", minimal_uki("usrhash=zz")),
        ("empty usrhash", minimal_uki("usrhash=")),
        ("truncated in .cmdline", {
            let at = uki.windows(8).position(|w| w == b"a=1 usrh").unwrap();
            uki[..at + 4].to_vec()
        }),
        ("lfanew past the end", {
            let mut u = uki.clone();
            u[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
            u
        }),
        ("too many sections", {
            let mut u = uki.clone();
            u[64 + 6..64 + 8].copy_from_slice(&u16::MAX.to_le_bytes());
            u
        }),
        ("huge cmdline", {
            let mut u = uki.clone();
            let sec = 64 + 24 + 240 + 40; // the second section: .cmdline
            u[sec + 8..sec + 12].copy_from_slice(&u32::MAX.to_le_bytes());
            u[sec + 16..sec + 20].copy_from_slice(&u32::MAX.to_le_bytes());
            u
        }),
    ];
    for (what, bytes) in refusals {
        let e = uki_usrhash(Cursor::new(&bytes)).unwrap_err();
        assert_eq!(e.reason(), "bad_uki", "{what}: {e}");
    }
}

#[test]
fn build_input_reads_the_image_build_record() {
    let fx = fixture();
    let input = fx.image("0.2.0", ROOT, ROOT);
    assert_eq!(input.os_id, "keelson");
    assert_eq!(input.arch, "x86-64");
    assert_eq!(input.usr_root_hash, ROOT);
    assert!(input.usr.ends_with("keelson_0.2.0.usr.erofs"));
    let dir = fx.dir.path().join("image-0.2.0");
    // Another version than the record's: a clear error naming the directory.
    let e = BuildInput::from_image_dir(&dir, "0.3.0").unwrap_err();
    assert!(
        matches!(&e, PayloadError::BuildInput { path, .. } if path == &dir),
        "{e}"
    );
    // A moved output directory still finds its parts by file name.
    let moved = fx.dir.path().join("moved");
    fs::rename(&dir, &moved).unwrap();
    let input = BuildInput::from_image_dir(&moved, "0.2.0").unwrap();
    assert!(input.uki.starts_with(&moved));
    // A record without a uki file is refused.
    let rec = moved.join("keelson_0.2.0.json");
    let text = fs::read_to_string(&rec)
        .unwrap()
        .replace("\"uki\"", "\"efi\"");
    fs::write(&rec, text).unwrap();
    let e = BuildInput::from_image_dir(&moved, "0.2.0").unwrap_err();
    assert!(e.to_string().contains("\"uki\""), "{e}");
}

#[test]
fn trusted_key_directory() {
    let fx = fixture();
    let keys_dir = fx.dir.path().join("keys");
    assert_eq!(fx.keys.key_ids(), vec![fx.key.key_id().to_string()]);
    assert!(!fx.keys.is_empty());
    // The private key is 0600, the public one world-readable; generate refuses to overwrite.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| fs::metadata(keys_dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("dev.key"), 0o600);
    assert_eq!(mode("dev.pem") & 0o044, 0o044);
    assert_eq!(generate_key(&keys_dir, "dev").unwrap_err().reason(), "io");
    assert!(generate_key(&keys_dir, "../x").is_err());
    // A private key among the trusted keys is refused, as is garbage.
    fs::copy(keys_dir.join("dev.key"), keys_dir.join("oops.pem")).unwrap();
    assert_eq!(
        TrustedKeys::load_dir(&keys_dir).unwrap_err().reason(),
        "bad_key"
    );
    fs::write(
        keys_dir.join("oops.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    assert_eq!(
        TrustedKeys::load_dir(&keys_dir).unwrap_err().reason(),
        "bad_key"
    );
    fs::remove_file(keys_dir.join("oops.pem")).unwrap();
    // An empty directory trusts nothing; a missing one is an error naming it.
    let empty = fx.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(TrustedKeys::load_dir(&empty).unwrap().is_empty());
    let missing = fx.dir.path().join("missing");
    assert!(
        matches!(TrustedKeys::load_dir(&missing), Err(PayloadError::Io { path, .. }) if path == missing)
    );
    // key_id is the first 8 bytes of sha256(raw public key), hex.
    let raw = [7u8; 32];
    assert_eq!(key_id(&raw).len(), 16);
    assert_eq!(
        key_id(&raw),
        hex::encode(
            &sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), raw))[..8]
        )
    );
}

fn openssl(args: &[&str]) -> String {
    keelson_cmd::run(std::process::Command::new("openssl").args(args)).unwrap()
}

#[test]
fn openssl_signatures_verify_with_our_code_and_ours_with_openssl() {
    use base64::Engine as _;
    let fx = fixture();
    let d = fx.dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let path = fx.build("0.2.0", vec![]);
    let h = read_header_file(&path).unwrap();
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(&h.manifest_bytes);
    fs::write(d.join("msg"), &msg).unwrap();

    // openssl's key and signature -> our verification.
    fs::create_dir(d.join("ossl")).unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &p("ossl.key")]);
    openssl(&[
        "pkey",
        "-in",
        &p("ossl.key"),
        "-pubout",
        "-out",
        &p("ossl/ossl.pem"),
    ]);
    openssl(&[
        "pkeyutl",
        "-sign",
        "-rawin",
        "-inkey",
        &p("ossl.key"),
        "-in",
        &p("msg"),
        "-out",
        &p("msg.sig"),
    ]);
    let trusted = TrustedKeys::load_dir(&d.join("ossl")).unwrap();
    let sig = fs::read(d.join("msg.sig")).unwrap();
    assert_eq!(sig.len(), 64);
    // Our code reads the openssl private key too, and (ed25519 being deterministic) signs the same.
    let ours = SigningKeyFile::load(&d.join("ossl.key")).unwrap();
    assert_eq!(trusted.key_ids(), vec![ours.key_id().to_string()]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
    assert_eq!(ours.sign_manifest(&h.manifest_bytes).ed25519, b64);
    rewrite_header(&path, |h| {
        h.signatures = vec![Signature {
            key_id: ours.key_id().into(),
            ed25519: b64.clone(),
        }];
    });
    assert_eq!(
        verify_file(&path, &trusted, &expect()).unwrap().key_id,
        ours.key_id()
    );

    // Our key and signature -> openssl's verification.
    let s = fx.key.sign_manifest(&h.manifest_bytes);
    fs::write(
        d.join("our.sig"),
        base64::engine::general_purpose::STANDARD
            .decode(&s.ed25519)
            .unwrap(),
    )
    .unwrap();
    let out = openssl(&[
        "pkeyutl",
        "-verify",
        "-rawin",
        "-pubin",
        "-inkey",
        &p("keys/dev.pem"),
        "-in",
        &p("msg"),
        "-sigfile",
        &p("our.sig"),
    ]);
    assert!(out.contains("Signature Verified Successfully"), "{out}");
    // openssl reads our private key file and derives the same public key.
    let pubout = openssl(&["pkey", "-in", &p("keys/dev.key"), "-pubout"]);
    assert_eq!(
        pubout.trim(),
        fs::read_to_string(d.join("keys/dev.pem")).unwrap().trim()
    );
    // And a tampered message fails openssl's verification (the check can fail).
    msg.push(b' ');
    fs::write(d.join("msg"), &msg).unwrap();
    let r = keelson_cmd::run(std::process::Command::new("openssl").args([
        "pkeyutl",
        "-verify",
        "-rawin",
        "-pubin",
        "-inkey",
        &p("keys/dev.pem"),
        "-in",
        &p("msg"),
        "-sigfile",
        &p("our.sig"),
    ]));
    assert!(r.is_err());
}

#[test]
fn docs_example_manifest_parses() {
    let doc = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/payload.md"
    ))
    .unwrap();
    let start = doc.find("```json\n").unwrap() + "```json\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let m = Manifest::from_bytes(&doc.as_bytes()[start..end]).unwrap();
    assert_eq!(m.version, "0.2.0");
    assert_eq!(m.part(PartName::Usr).unwrap().chunks.len(), 2);
    assert_eq!(
        m.part(PartName::Usr).unwrap().chunks[0].data_offset,
        m.part(PartName::Usr).unwrap().chunks[1].data_offset
    );
    check_manifest(
        &m,
        &Expectations {
            now: m.created,
            ..expect()
        },
    )
    .unwrap();
}

#[test]
fn zstd_cli_decodes_every_stored_chunk() {
    // The zstd command line tool (the reference implementation) reads our chunk frames.
    let fx = fixture();
    let path = fx.build("0.2.0", vec![]);
    let m = manifest_of(&path);
    let mut file = PayloadFile::open(&path).unwrap();
    let part = m.part(PartName::Usr).unwrap();
    let zdir = fx.dir.path().join("z");
    fs::create_dir(&zdir).unwrap();
    for (i, c) in part.chunks.iter().enumerate() {
        let z = file.read_compressed(part.name, i, c).unwrap();
        let zp = zdir.join(format!("{i}.zst"));
        fs::write(&zp, z).unwrap();
        keelson_cmd::run(
            std::process::Command::new("zstd")
                .args(["-q", "-d", "-f"])
                .arg(&zp),
        )
        .unwrap();
        let got = fs::read(zdir.join(i.to_string())).unwrap();
        assert_eq!(
            got,
            fx.usr[c.offset as usize..c.end() as usize],
            "chunk {i}"
        );
    }
}

#[test]
fn usrhash_of_a_uki_made_with_objcopy_from_the_systemd_stub() {
    // The pre-ukify way to make a UKI: objcopy adds .osrel/.cmdline to systemd's EFI stub.
    let stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    assert!(
        stub.exists(),
        "systemd-boot-efi is a host package (cargo xtask deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    fs::write(&cmdline, format!("console=ttyS0 rw usrhash={ROOT}\n\0")).unwrap();
    let osrel = dir.path().join("osrel");
    fs::write(&osrel, "ID=keelson\n").unwrap();
    let out = dir.path().join("uki.efi");
    keelson_cmd::run(
        std::process::Command::new("objcopy")
            .arg(format!("--add-section=.osrel={}", osrel.display()))
            .arg("--change-section-vma=.osrel=0x20000")
            .arg(format!("--add-section=.cmdline={}", cmdline.display()))
            .arg("--change-section-vma=.cmdline=0x30000")
            .arg(stub)
            .arg(&out),
    )
    .unwrap();
    let info = read_uki(fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(info.arch, Some("x86-64"));
    assert_eq!(info.cmdline, format!("console=ttyS0 rw usrhash={ROOT}"));
    assert_eq!(uki_usrhash(fs::File::open(&out).unwrap()).unwrap(), ROOT);
    // The stub alone has no command line.
    let e = uki_usrhash(fs::File::open(stub).unwrap()).unwrap_err();
    assert!(e.to_string().contains("no .cmdline"), "{e}");
}

#[test]
fn content_defined_chunks_round_trip_and_record_their_parameters() {
    let fx = fixture();
    let input = fx.image("0.3.0", ROOT, ROOT);
    let out = fx.dir.path().join("cdc.payload");
    let opts = BuildOptions {
        created: created(),
        keys: vec![&fx.key],
        ..BuildOptions::default()
    };
    build(&input, &out, &opts).unwrap();
    let v = verify_file(&out, &fx.keys, &expect()).unwrap();
    assert_eq!(v.manifest.format, FORMAT);
    assert_eq!(v.manifest.chunking, Some(Chunking::default()));
    assert_eq!(v.manifest.effective_chunking(), Chunking::default());
    // The chunks are the chunker's, over the part's bytes.
    let want: Vec<(u64, u64)> = Chunking::default()
        .chunks(&fx.usr[..])
        .unwrap()
        .map(|r| {
            let (o, b) = r.unwrap();
            (o, b.len() as u64)
        })
        .collect();
    let got: Vec<(u64, u64)> = v.manifest.parts[0]
        .chunks
        .iter()
        .map(|c| (c.offset, c.size))
        .collect();
    assert_eq!(got, want);
    assert!(got.len() > 3, "{got:?}");
}

#[test]
fn format_1_manifests_still_read_and_unknown_chunking_is_its_own_refusal() {
    let fx = fixture();
    let m = manifest_of(&fx.build("0.2.0", vec![]));
    let mut old = m.clone();
    old.format = 1;
    old.chunking = None;
    let back = Manifest::from_bytes(&serde_json::to_vec(&old).unwrap()).unwrap();
    assert_eq!(back.effective_chunking(), Chunking::fixed(CHUNK));
    let mut unknown = m.clone();
    if let Some(c) = &mut unknown.chunking {
        c.algorithm = "buzhash".into();
    }
    let e = Manifest::from_bytes(&serde_json::to_vec(&unknown).unwrap()).unwrap_err();
    assert_eq!(e.reason(), "unknown_chunking");
    assert!(e.to_string().contains("buzhash"), "{e}");
}
