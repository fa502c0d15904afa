//! `verify` names the first bad block: a data block, a hash block (level, index) or the root.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use keelson_verity::{HashAlgorithm, VerityError, VerityInfo, VerityParams, format, verify};

/// 300 data blocks of 512 bytes, sha256, 512-byte hash blocks: 16 entries per hash block, so
/// levels of 19, 2 and 1 blocks, stored top-down after the superblock block.
struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    hash: PathBuf,
    info: VerityInfo,
    params: VerityParams,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("hash");
    let bytes: Vec<u8> = (0..300 * 512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&data, bytes).unwrap();
    let params = VerityParams::default()
        .with_block_sizes(512, 512)
        .with_salt(vec![0x5a; 16]);
    let info = format(&data, &hash, &params).unwrap();
    assert_eq!(info.hash_blocks, 19 + 2 + 1);
    Fixture {
        _dir: dir,
        data,
        hash,
        info,
        params,
    }
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, offset).unwrap();
}

fn root(f: &Fixture) -> Vec<u8> {
    f.info.root_hash.clone().unwrap()
}

/// Block offsets: superblock block 0, level 2 at block 1, level 1 at 2..4, level 0 at 4..23.
fn hash_block_offset(level: usize, index: u64) -> u64 {
    let start = [4u64, 2, 1][level];
    (start + index) * 512
}

#[test]
fn intact_tree_verifies() {
    let f = fixture();
    let info = verify(&f.data, &f.hash, &root(&f), &VerityParams::default()).unwrap();
    assert_eq!(info.data_blocks, 300);
    assert_eq!(info.salt, vec![0x5a; 16]);
}

#[test]
fn flipped_data_byte_names_the_data_block() {
    for block in [0u64, 123, 299] {
        let f = fixture();
        flip(&f.data, block * 512 + 77);
        let err = verify(&f.data, &f.hash, &root(&f), &f.params).unwrap_err();
        match &err {
            VerityError::DataBlockMismatch { index, offset, .. } => {
                assert_eq!(*index, block);
                assert_eq!(*offset, block * 512);
            }
            other => panic!("block {block}: expected a data block mismatch, got {other}"),
        }
        assert!(err.is_mismatch());
        assert!(
            err.to_string().contains(&format!("data block {block}")),
            "{err}"
        );
    }
}

#[test]
fn flipped_hash_byte_names_the_hash_block() {
    // (level, index, byte within the block): digests and also the zero padding of the last
    // level-0 block (300 = 18*16 + 12, so entries 12..16 of block 18 are padding).
    let cases: &[(usize, u64, u64)] = &[(0, 0, 0), (0, 5, 40), (0, 18, 511), (1, 1, 3)];
    for &(level, index, byte) in cases {
        let f = fixture();
        flip(&f.hash, hash_block_offset(level, index) + byte);
        let err = verify(&f.data, &f.hash, &root(&f), &f.params).unwrap_err();
        match &err {
            VerityError::HashBlockMismatch {
                level: l,
                index: i,
                offset,
                parent_level,
                ..
            } => {
                assert_eq!((*l, *i), (level, index), "{err}");
                assert_eq!(*offset, hash_block_offset(level, index));
                assert_eq!(*parent_level, level + 1);
            }
            other => panic!("({level},{index}): expected a hash block mismatch, got {other}"),
        }
    }
}

#[test]
fn flipped_top_block_or_wrong_root_is_a_root_mismatch() {
    let f = fixture();
    flip(&f.hash, hash_block_offset(2, 0) + 9);
    let err = verify(&f.data, &f.hash, &root(&f), &f.params).unwrap_err();
    assert!(matches!(err, VerityError::RootHashMismatch { .. }), "{err}");

    let f = fixture();
    let mut wrong = root(&f);
    wrong[0] ^= 0xff;
    let err = verify(&f.data, &f.hash, &wrong, &f.params).unwrap_err();
    assert!(err.to_string().contains(&hex::encode(&wrong)), "{err}");
    assert!(err.to_string().contains(&f.info.root_hash_hex()), "{err}");
}

#[test]
fn single_block_tree_checks_the_data_against_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("hash");
    std::fs::write(&data, vec![3u8; 4096]).unwrap();
    let info = format(&data, &hash, &VerityParams::default()).unwrap();
    let r = info.root_hash.clone().unwrap();
    verify(&data, &hash, &r, &VerityParams::default()).unwrap();
    flip(&data, 100);
    let err = verify(&data, &hash, &r, &VerityParams::default()).unwrap_err();
    assert!(matches!(err, VerityError::RootHashMismatch { .. }), "{err}");
}

#[test]
fn damaged_files_give_errors_that_name_them() {
    // Corrupt superblock signature.
    let f = fixture();
    flip(&f.hash, 0);
    let err = verify(&f.data, &f.hash, &root(&f), &f.params).unwrap_err();
    assert!(matches!(err, VerityError::Superblock { .. }), "{err}");
    assert!(err.to_string().contains("hash"), "{err}");

    // Truncated hash file.
    let f = fixture();
    let h = OpenOptions::new().write(true).open(&f.hash).unwrap();
    h.set_len(20 * 512).unwrap();
    let err = verify(&f.data, &f.hash, &root(&f), &f.params).unwrap_err();
    assert!(
        matches!(
            err,
            VerityError::HashTruncated {
                needed: 11776,
                size: 10240,
                ..
            }
        ),
        "{err}"
    );

    // Truncated data file.
    let f = fixture();
    let d = OpenOptions::new().write(true).open(&f.data).unwrap();
    d.set_len(299 * 512 + 10).unwrap();
    let err = verify(&f.data, &f.hash, &root(&f), &f.params).unwrap_err();
    assert!(matches!(err, VerityError::DataTooShort { .. }), "{err}");
    assert!(err.to_string().contains("data"), "{err}");

    // Root hash of the wrong length.
    let f = fixture();
    let err = verify(&f.data, &f.hash, &[0u8; 20], &f.params).unwrap_err();
    assert!(
        matches!(err, VerityError::RootHashFormat { ref reason, .. } if reason.contains("sha256")),
        "{err}"
    );
}

#[test]
fn verify_without_superblock_uses_the_given_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("hash");
    std::fs::write(&data, vec![9u8; 40 * 1024]).unwrap();
    let params = VerityParams::default()
        .with_block_sizes(1024, 1024)
        .with_algorithm(HashAlgorithm::Sha1)
        .with_salt(vec![1, 2, 3])
        .with_superblock(false);
    let info = format(&data, &hash, &params).unwrap();
    let r = info.root_hash.clone().unwrap();
    verify(&data, &hash, &r, &params).unwrap();
    // A different salt gives a different tree: the root check fails.
    let wrong = params.clone().with_salt(vec![1, 2, 4]);
    assert!(verify(&data, &hash, &r, &wrong).unwrap_err().is_mismatch());
    // A random salt cannot be verified against.
    let random = VerityParams {
        salt: keelson_verity::SaltSpec::Random(32),
        ..params
    };
    let err = verify(&data, &hash, &r, &random).unwrap_err();
    assert!(err.to_string().contains("salt"), "{err}");
}

/// One data block, superblock at offset 512 of a new file: veritysetup 2.6.1 fails to write this
/// ("Error during update of verity header"); we write the superblock and pad to a hash block.
#[test]
fn single_block_with_superblock_at_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("hash");
    std::fs::write(&data, vec![5u8; 4096]).unwrap();
    let params = VerityParams::default()
        .with_block_sizes(4096, 2048)
        .with_hash_offset(512);
    let info = format(&data, &hash, &params).unwrap();
    assert_eq!(info.hash_blocks, 0);
    assert_eq!(std::fs::metadata(&hash).unwrap().len(), 2048);
    let sb = keelson_verity::dump(&hash, 512).unwrap();
    assert_eq!(sb.data_blocks, 1);
    verify(&data, &hash, &root_of(&info), &params).unwrap();
}

fn root_of(info: &VerityInfo) -> Vec<u8> {
    info.root_hash.clone().unwrap()
}
