//! Bad input gets a clear error naming the value or file, and leaves no partial output behind.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use keelson_verity::{SaltSpec, VerityError, VerityParams, format};

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Each case: params, data size, expected text in the error. The hash file must not appear and
/// no temporary file may be left in the directory.
#[test]
fn rejected_parameters_write_nothing() {
    let cases: Vec<(&str, VerityParams, u64, &str)> = vec![
        (
            "data block size 8192",
            VerityParams::default().with_block_sizes(8192, 4096),
            65536,
            "data block size 8192",
        ),
        (
            "hash block size 1000",
            VerityParams::default().with_block_sizes(4096, 1000),
            65536,
            "hash block size 1000",
        ),
        (
            "hash block size 256",
            VerityParams::default().with_block_sizes(4096, 256),
            65536,
            "hash block size 256",
        ),
        (
            "salt 257 bytes",
            VerityParams::default().with_salt(vec![0; 257]),
            65536,
            "257 bytes",
        ),
        (
            "random salt 300 bytes",
            VerityParams {
                salt: SaltSpec::Random(300),
                ..VerityParams::default()
            },
            65536,
            "300 bytes",
        ),
        (
            "hash offset 1000",
            VerityParams::default().with_hash_offset(1000),
            65536,
            "hash offset 1000",
        ),
        (
            "no-superblock offset 512",
            VerityParams::default()
                .with_superblock(false)
                .with_hash_offset(512),
            65536,
            "hash offset 512",
        ),
        (
            "zero data blocks",
            VerityParams::default().with_data_blocks(0),
            65536,
            "at least 1",
        ),
        (
            "too many data blocks",
            VerityParams::default().with_data_blocks(17),
            65536,
            "17 data blocks",
        ),
        (
            "data smaller than a block",
            VerityParams::default(),
            4095,
            "smaller than one 4096-byte",
        ),
        ("empty data", VerityParams::default(), 0, "0 bytes"),
    ];
    for (name, params, size, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let hash = dir.path().join("hash");
        std::fs::write(&data, vec![1u8; size as usize]).unwrap();
        let err = format(&data, &hash, &params).unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
        assert!(!err.is_mismatch(), "{name}");
        assert_eq!(
            listing(dir.path()),
            vec!["data".to_string()],
            "{name}: left files behind"
        );
        assert_eq!(
            std::fs::read(&data).unwrap(),
            vec![1u8; size as usize],
            "{name}"
        );
    }
}

#[test]
fn same_file_errors_leave_the_data_untouched() {
    let cases: Vec<(&str, VerityParams, &str)> = vec![
        (
            "unaligned offset",
            VerityParams::default().with_hash_offset(65536 + 100),
            "not a multiple of 512",
        ),
        (
            "offset inside the data",
            VerityParams::default()
                .with_hash_offset(32768)
                .with_data_blocks(16),
            "overlaps the data area",
        ),
        (
            "offset 0",
            VerityParams::default().with_hash_offset(0),
            "smaller than one",
        ),
        (
            "data blocks past the file",
            VerityParams::default()
                .with_hash_offset(1 << 20)
                .with_data_blocks(17),
            "17 data blocks",
        ),
    ];
    for (name, params, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("disk");
        let content: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&data, &content).unwrap();
        let err = format(&data, &data, &params).unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
        assert_eq!(
            std::fs::read(&data).unwrap(),
            content,
            "{name}: data file changed"
        );
        assert_eq!(listing(dir.path()), vec!["disk".to_string()], "{name}");
    }
}

#[test]
fn partial_last_block_is_ignored_like_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let ragged = dir.path().join("ragged");
    let mut content = vec![7u8; 5 * 4096];
    std::fs::write(&whole, &content).unwrap();
    content.extend_from_slice(&[8u8; 1000]);
    std::fs::write(&ragged, &content).unwrap();
    let p = VerityParams::default().with_salt(vec![]);
    let a = format(&whole, &dir.path().join("h1"), &p).unwrap();
    let b = format(&ragged, &dir.path().join("h2"), &p).unwrap();
    assert_eq!(b.data_blocks, 5);
    assert_eq!(a.root_hash, b.root_hash);
}

#[test]
fn failed_format_keeps_an_existing_hash_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("hash");
    std::fs::write(&data, vec![0u8; 8192]).unwrap();
    std::fs::write(&hash, b"previous tree").unwrap();
    let err = format(&data, &hash, &VerityParams::default().with_data_blocks(3)).unwrap_err();
    assert!(matches!(err, VerityError::DataTooShort { .. }), "{err}");
    assert_eq!(std::fs::read(&hash).unwrap(), b"previous tree");
    assert_eq!(
        listing(dir.path()),
        vec!["data".to_string(), "hash".to_string()]
    );
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("no-such-data");
    let err = format(&data, &dir.path().join("h"), &VerityParams::default()).unwrap_err();
    assert!(err.to_string().contains("no-such-data"), "{err}");

    let data = dir.path().join("data");
    std::fs::write(&data, vec![0u8; 8192]).unwrap();
    let hash = dir.path().join("no-such-dir").join("hash");
    let err = format(&data, &hash, &VerityParams::default()).unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    let err = keelson_verity::dump(&data, 0).unwrap_err();
    assert!(err.to_string().contains("no verity superblock"), "{err}");
    assert!(err.to_string().contains("data"), "{err}");
}

#[test]
fn hash_offset_into_an_existing_file_keeps_what_is_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("parts");
    std::fs::write(&data, vec![4u8; 3 * 4096]).unwrap();
    std::fs::write(&hash, vec![0xeeu8; 8192]).unwrap();
    let p = VerityParams::default().with_hash_offset(4096);
    let info = format(&data, &hash, &p).unwrap();
    let bytes = std::fs::read(&hash).unwrap();
    assert_eq!(&bytes[..4096], &[0xeeu8; 4096][..]);
    assert_eq!(&bytes[4096..4104], b"verity\0\0");
    assert_eq!(bytes.len() as u64, info.hash_device_size);
    keelson_verity::verify(&data, &hash, info.root_hash.as_deref().unwrap(), &p).unwrap();
}

#[test]
fn existing_hash_file_at_offset_zero_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = dir.path().join("hash");
    std::fs::write(&data, vec![6u8; 200 * 4096]).unwrap();
    std::fs::write(&hash, vec![0xffu8; 1 << 20]).unwrap();
    let info = format(&data, &hash, &VerityParams::default()).unwrap();
    assert_eq!(
        std::fs::metadata(&hash).unwrap().len(),
        info.hash_device_size
    );
    assert_eq!(
        listing(dir.path()),
        vec!["data".to_string(), "hash".to_string()]
    );
    keelson_verity::verify(
        &data,
        &hash,
        info.root_hash.as_deref().unwrap(),
        &VerityParams::default(),
    )
    .unwrap();
}
