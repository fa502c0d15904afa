//! The test vectors of docs image-format.md section 3, checked against cryptsetup 2.6.1.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::Path;

use keelson_verity::{HashAlgorithm, HashType, VerityParams, format, verify};

const COMPAT_SALT: &str = "e48da609055204e89ae53b655ca2216dd983cf3cb829f34f63a297d106d53e2d";

fn zero_file(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

fn salt(s: &str) -> Vec<u8> {
    if s == "-" {
        Vec::new()
    } else {
        hex::decode(s).unwrap()
    }
}

/// cryptsetup `tests/verity-compat-test`: an 8 MiB all-zero data device.
#[test]
fn verity_compat_test_8mib_zero_device() {
    let cases: &[(u32, HashType, HashAlgorithm, &str, &str)] = &[
        (
            512,
            HashType::Normal,
            HashAlgorithm::Sha256,
            COMPAT_SALT,
            "9de18652fe74edfb9b805aaed72ae2aa48f94333f1ba5c452ac33b1c39325174",
        ),
        (
            1024,
            HashType::Normal,
            HashAlgorithm::Sha256,
            COMPAT_SALT,
            "54d92778750495d1f80832b486ebd007617d746271511bbf0e295e143da2b3df",
        ),
        (
            4096,
            HashType::Normal,
            HashAlgorithm::Sha256,
            COMPAT_SALT,
            "e522df0f97da4febb882ac40f30b37dc0b444bf6df418929463fa25280f09d5c",
        ),
        (
            4096,
            HashType::ChromeOs,
            HashAlgorithm::Sha256,
            COMPAT_SALT,
            "cbbf4ebd004ef65e29b935bb635a39cf754d677f3fa10b0126da725bbdf10f7d",
        ),
        (
            4096,
            HashType::Normal,
            HashAlgorithm::Sha256,
            "-",
            "ef29c902d87350f1da4bfa536e16cebc162a909bf89abe448b81ec500d4fb9bf",
        ),
        (
            1024,
            HashType::Normal,
            HashAlgorithm::Sha1,
            COMPAT_SALT,
            "d0e9163ca8844aaa2e88fe5265a8c5d9ee494a99",
        ),
        (
            1024,
            HashType::Normal,
            HashAlgorithm::Sha1,
            "dadada",
            "73509e8e868be6b8ac939817a98a3d35121413b2",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    zero_file(&data, 8 << 20);
    for (i, &(bs, ty, alg, s, root)) in cases.iter().enumerate() {
        for superblock in [true, false] {
            let hash = dir.path().join(format!("hash-{i}-{superblock}"));
            let params = VerityParams::default()
                .with_block_sizes(bs, bs)
                .with_hash_type(ty)
                .with_algorithm(alg)
                .with_salt(salt(s))
                .with_superblock(superblock);
            let info = format(&data, &hash, &params).unwrap();
            assert_eq!(
                info.root_hash_hex(),
                root,
                "case {i} superblock={superblock}"
            );
            assert_eq!(info.data_blocks, (8 << 20) / u64::from(bs));
            let got = std::fs::metadata(&hash).unwrap().len();
            assert_eq!(got, info.hash_device_size, "case {i}");
            verify(&data, &hash, &info.root_hash.clone().unwrap(), &params).unwrap();
        }
    }
}

/// Our own runs of veritysetup: 4 KiB blocks, no salt, no superblock.
#[test]
fn own_runs_without_superblock() {
    let pattern: Vec<u8> = (0..4096).map(|i| (i % 256) as u8).collect();
    type Case<'a> = (&'a str, Option<&'a [u8]>, u64, &'a str, u64);
    let cases: &[Case] = &[
        (
            "129 zero blocks",
            None,
            129 * 4096,
            "3e5d285ca1f11edfca6327028471f08b75634ff3361264b88d79ee2e95cacb84",
            12288,
        ),
        (
            "16384 zero blocks",
            None,
            16384 * 4096,
            "45d65d6f9e5a962f4d80b5f1bd7a918152251c27bdad8c5f52b590c129833372",
            528384,
        ),
        (
            "one block 0..255 x16",
            Some(&pattern),
            4096,
            "c8f5d0341d54d951a71b136e6e2afcb14d11ed8489a7ae126a8fee0df6ecf193",
            0,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, &(name, content, len, root, hash_size)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        match content {
            Some(c) => std::fs::write(&data, c).unwrap(),
            None => zero_file(&data, len),
        }
        let hash = dir.path().join(format!("hash-{i}"));
        let params = VerityParams::default()
            .with_salt(Vec::new())
            .with_superblock(false);
        let info = format(&data, &hash, &params).unwrap();
        assert_eq!(info.root_hash_hex(), root, "{name}");
        assert_eq!(std::fs::metadata(&hash).unwrap().len(), hash_size, "{name}");
        assert_eq!(info.hash_device_size, hash_size, "{name}");
    }
}

/// 129 zero blocks, salt `aa`, hash area in the same file after the data, superblock on.
#[test]
fn same_file_with_superblock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("disk");
    zero_file(&data, 129 * 4096);
    let params = VerityParams::default()
        .with_salt(vec![0xaa])
        .with_hash_offset(129 * 4096);
    let info = format(&data, &data, &params).unwrap();
    assert_eq!(
        info.root_hash_hex(),
        "2c03d2ffc512acf2dfbbc4013c3bae82571ba920082c9b95c56d4136ad2ad114"
    );
    assert_eq!(info.data_blocks, 129);
    assert_eq!(info.hash_blocks, 3);
    assert_eq!(info.hash_start_block, 130);
    // Data, superblock block, 3 tree blocks: what veritysetup leaves.
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 544768);
    let dumped = keelson_verity::dump(&data, 129 * 4096).unwrap();
    assert_eq!(dumped.data_blocks, 129);
    assert_eq!(dumped.salt, vec![0xaa]);
    assert_eq!(dumped.uuid, info.uuid);
    verify(&data, &data, &info.root_hash.clone().unwrap(), &params).unwrap();
}
