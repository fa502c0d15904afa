//! Randomized comparison against the real `veritysetup format` (cryptsetup 2.6.1): root hash and
//! every byte of the hash area, over sizes, block sizes, digests, formats, salts, superblock
//! on/off and separate hash file vs `--hash-offset` in the data file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use keelson_verity::{HashAlgorithm, HashType, VerityParams, format, verify};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const CASES: u64 = 60;

fn veritysetup() -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join("veritysetup");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "veritysetup not found in /usr/sbin, /sbin, /usr/bin or /bin: this test compares against it; \
         install it with `cargo xtask deps` (Debian package cryptsetup-bin)"
    );
}

#[derive(Debug)]
struct Case {
    dbs: u32,
    hbs: u32,
    alg: HashAlgorithm,
    ty: HashType,
    salt: Vec<u8>,
    superblock: bool,
    /// None: separate hash file at offset `sep_offset`; Some(extra): same file, hash after data.
    same_file_gap: Option<u64>,
    sep_offset: u64,
    blocks_in_file: u64,
    tail: u64,
    data_blocks: Option<u64>,
    uuid: String,
}

fn pick<T: Copy>(rng: &mut StdRng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

fn random_case(rng: &mut StdRng) -> Case {
    let sizes = [512u32, 1024, 2048, 4096];
    let dbs = pick(rng, &sizes);
    let hbs = pick(rng, &sizes);
    let superblock = rng.random_bool(0.5);
    let salt_len = pick(rng, &[0usize, 0, 1, 3, 32, 32, 64, 100, 256]);
    let mut salt = vec![0u8; salt_len];
    rng.fill_bytes(&mut salt);
    // Mostly small trees, sometimes enough blocks for three levels with small hash blocks.
    let blocks_in_file = if rng.random_bool(0.2) {
        rng.random_range(1..=3)
    } else {
        rng.random_range(1..=700)
    };
    let same_file = rng.random_bool(0.4);
    let align = if superblock { 512 } else { u64::from(hbs) };
    let data_blocks = if rng.random_bool(0.3) {
        Some(rng.random_range(1..=blocks_in_file))
    } else {
        None
    };
    Case {
        dbs,
        hbs,
        alg: pick(rng, &HashAlgorithm::ALL),
        ty: pick(rng, &[HashType::Normal, HashType::ChromeOs]),
        salt,
        superblock,
        same_file_gap: same_file.then(|| align * rng.random_range(0..3)),
        sep_offset: if rng.random_bool(0.3) {
            align * rng.random_range(1..5)
        } else {
            0
        },
        blocks_in_file,
        // A partial block at the end is ignored by veritysetup; not with a shared file, where
        // the hash area starts right after the data.
        tail: if same_file || rng.random_bool(0.7) {
            0
        } else {
            rng.random_range(1..u64::from(dbs))
        },
        data_blocks,
        uuid: uuid::Uuid::from_bytes(rng.random())
            .hyphenated()
            .to_string(),
    }
}

fn salt_arg(salt: &[u8]) -> String {
    if salt.is_empty() {
        "-".into()
    } else {
        hex::encode(salt)
    }
}

fn run_veritysetup(
    c: &Case,
    data: &Path,
    hash: &Path,
    hash_offset: u64,
    data_blocks: Option<u64>,
) -> String {
    let mut cmd = Command::new(veritysetup());
    cmd.arg("format")
        .arg(data)
        .arg(hash)
        .arg(format!("--data-block-size={}", c.dbs))
        .arg(format!("--hash-block-size={}", c.hbs))
        .arg(format!("--hash={}", c.alg))
        .arg(format!("--format={}", c.ty.number()))
        .arg(format!("--salt={}", salt_arg(&c.salt)))
        .arg(format!("--hash-offset={hash_offset}"));
    if c.superblock {
        cmd.arg(format!("--uuid={}", c.uuid));
    } else {
        cmd.arg("--no-superblock");
    }
    if let Some(n) = data_blocks {
        cmd.arg(format!("--data-blocks={n}"));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no `Root hash:` in veritysetup output:\n{stdout}"))
}

fn veritysetup_verify(
    c: &Case,
    data: &Path,
    hash: &Path,
    hash_offset: u64,
    info: &keelson_verity::VerityInfo,
) -> Command {
    let mut cmd = Command::new(veritysetup());
    cmd.arg("verify")
        .arg(data)
        .arg(hash)
        .arg(info.root_hash_hex())
        .arg(format!("--hash-offset={hash_offset}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if !c.superblock {
        cmd.arg("--no-superblock")
            .arg(format!("--data-block-size={}", c.dbs))
            .arg(format!("--hash-block-size={}", c.hbs))
            .arg(format!("--hash={}", c.alg))
            .arg(format!("--format={}", c.ty.number()))
            .arg(format!("--salt={}", salt_arg(&c.salt)))
            .arg(format!("--data-blocks={}", info.data_blocks));
    }
    cmd
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x80;
    f.write_all_at(&b, offset).unwrap();
}

fn write_data(path: &Path, rng: &mut StdRng, len: u64) {
    let mut buf = vec![0u8; len as usize];
    // Some runs of zero blocks too, so equal blocks appear.
    if rng.random_bool(0.7) {
        rng.fill_bytes(&mut buf);
    }
    std::fs::write(path, buf).unwrap();
}

#[test]
fn random_cases_match_veritysetup_byte_for_byte() {
    let mut rng = StdRng::seed_from_u64(0x006b_6565_6c73_6f6e);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..CASES {
        let c = random_case(&mut rng);
        let data_len = c.blocks_in_file * u64::from(c.dbs) + c.tail;
        let ours_data = dir.path().join(format!("{i}-ours.img"));
        let theirs_data = dir.path().join(format!("{i}-theirs.img"));
        write_data(&ours_data, &mut rng, data_len);
        std::fs::copy(&ours_data, &theirs_data).unwrap();
        let effective_blocks = c.data_blocks.unwrap_or(c.blocks_in_file);
        let (ours_hash, theirs_hash, offset, their_blocks) = match c.same_file_gap {
            Some(gap) => {
                let align = if c.superblock { 512 } else { u64::from(c.hbs) };
                let offset = data_len.div_ceil(align) * align + gap;
                // veritysetup counts the whole file as data unless told: pass the count.
                (
                    ours_data.clone(),
                    theirs_data.clone(),
                    offset,
                    Some(effective_blocks),
                )
            }
            None => (
                dir.path().join(format!("{i}-ours.hash")),
                dir.path().join(format!("{i}-theirs.hash")),
                // veritysetup 2.6.1 cannot write a superblock at a non-zero offset of a new
                // hash file when there is no tree (one data block): "Error during update of
                // verity header". Our own tests cover that case; skip it here.
                if effective_blocks == 1 && c.superblock {
                    0
                } else {
                    c.sep_offset
                },
                c.data_blocks,
            ),
        };
        let mut params = VerityParams::default()
            .with_block_sizes(c.dbs, c.hbs)
            .with_algorithm(c.alg)
            .with_hash_type(c.ty)
            .with_salt(c.salt.clone())
            .with_superblock(c.superblock)
            .with_hash_offset(offset)
            .with_uuid(keelson_verity::parse_uuid(&c.uuid).unwrap());
        if let Some(n) = c.data_blocks {
            params = params.with_data_blocks(n);
        }
        let info = format(&ours_data, &ours_hash, &params)
            .unwrap_or_else(|e| panic!("case {i} {c:?}: {e}"));
        let root = run_veritysetup(&c, &theirs_data, &theirs_hash, offset, their_blocks);
        assert_eq!(
            info.root_hash_hex(),
            root,
            "case {i}: root hash differs for {c:?}"
        );
        assert_eq!(info.data_blocks, effective_blocks, "case {i}: {c:?}");
        let ours = std::fs::read(&ours_hash).unwrap();
        let theirs = std::fs::read(&theirs_hash).unwrap();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "case {i}: hash file sizes differ for {c:?}"
        );
        if let Some(p) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!("case {i}: hash files differ first at byte {p} for {c:?}");
        }
        // Our verify accepts what veritysetup wrote. Without a superblock the data block count
        // has to be given again: the shared file has grown past the old data end.
        let params = params.with_data_blocks(info.data_blocks);
        verify(
            &theirs_data,
            &theirs_hash,
            info.root_hash.as_deref().unwrap(),
            &params,
        )
        .unwrap_or_else(|e| panic!("case {i}: verify of veritysetup's tree failed: {e} for {c:?}"));
        // Corrupt one data byte: both verifiers must reject it, ours naming that block.
        let block = rng.random_range(0..info.data_blocks);
        let at = block * u64::from(c.dbs) + rng.random_range(0..u64::from(c.dbs));
        flip(&theirs_data, at);
        let err = verify(
            &theirs_data,
            &theirs_hash,
            info.root_hash.as_deref().unwrap(),
            &params,
        )
        .unwrap_err();
        let expected_block = if info.data_blocks == 1 {
            None
        } else {
            Some(block)
        };
        match (&err, expected_block) {
            (keelson_verity::VerityError::DataBlockMismatch { index, .. }, Some(b)) => {
                assert_eq!(*index, b, "case {i}: {err}")
            }
            (keelson_verity::VerityError::RootHashMismatch { .. }, None) => {}
            _ => panic!("case {i}: unexpected {err} for {c:?}"),
        }
        let status = veritysetup_verify(&c, &theirs_data, &theirs_hash, offset, &info)
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "case {i}: veritysetup verify accepted corrupted data"
        );
        for p in [&ours_data, &theirs_data, &ours_hash, &theirs_hash] {
            let _ = std::fs::remove_file(p);
        }
    }
}
