//! How a part is cut into chunks: the parameters the manifest records (`chunking`) and the one
//! chunker that `payload build` and the node agent both run, so that the agent can cut the
//! partitions it already has exactly as the build cut the new release and find the chunks they
//! share by hash.

use std::io::Read;

use fastcdc::v2020::{self, Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

use crate::{MAX_CHUNK_SIZE, PayloadError};

/// Content-defined chunking: FastCDC as published in 2020 (`fastcdc::v2020`, normalisation
/// level 1, gear table seed 0). A boundary depends only on the bytes just before it, so an
/// insertion moves the boundaries near it and no others.
pub const FASTCDC_2020: &str = "fastcdc-2020";

/// Fixed-size chunks (`min_size` = `avg_size` = `max_size`); format 1 payloads are cut so.
pub const FIXED: &str = "fixed";

/// The chunking of format 1 payloads, which do not record it: 1 MiB fixed chunks.
pub const DEFAULT_CHUNK_SIZE: u64 = 1024 * 1024;

/// The chunking parameters a manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// [`FASTCDC_2020`] or [`FIXED`]; a reader refuses any other (`unknown_chunking`).
    pub algorithm: String,
    /// Smallest chunk (but the last of a part).
    pub min_size: u64,
    /// Chunk size aimed at.
    pub avg_size: u64,
    /// Largest chunk.
    pub max_size: u64,
}

impl Default for Chunking {
    /// What `payload build` uses: FastCDC, 8 KiB / 32 KiB / 128 KiB. Measured on two builds
    /// of /usr a package apart (docs/benchmarks.md, "delta"): erofs changes a few bytes of
    /// metadata all over the image, so smaller chunks download less (16/64/256 KiB: 21.7% of
    /// usr, 8/32/128: 16.6%, 4/16/64: 12.6%) but make the manifest larger (about 230 bytes a
    /// chunk); 8/32/128 keeps a full 768 MiB usr partition's manifest near 5 MiB.
    fn default() -> Self {
        Chunking::fastcdc(8 << 10, 32 << 10, 128 << 10)
    }
}

impl Chunking {
    /// Fixed chunks of `size` bytes.
    pub fn fixed(size: u64) -> Chunking {
        Chunking {
            algorithm: FIXED.to_owned(),
            min_size: size,
            avg_size: size,
            max_size: size,
        }
    }

    /// FastCDC (2020) with these sizes.
    pub fn fastcdc(min_size: u64, avg_size: u64, max_size: u64) -> Chunking {
        Chunking {
            algorithm: FASTCDC_2020.to_owned(),
            min_size,
            avg_size,
            max_size,
        }
    }

    /// The algorithm is known and the sizes are within its bounds (UnknownChunking or
    /// Malformed otherwise).
    pub fn check(&self) -> Result<(), PayloadError> {
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        let bad = |why: String| {
            Err(PayloadError::malformed(format!(
                "chunking {} {min}/{avg}/{max}: {why}",
                self.algorithm
            )))
        };
        match self.algorithm.as_str() {
            FIXED => {
                if min != avg || avg != max {
                    return bad("fixed chunks need min_size = avg_size = max_size".into());
                }
                if max == 0 || max > MAX_CHUNK_SIZE {
                    return bad(format!("the size must be 1..={MAX_CHUNK_SIZE}"));
                }
            }
            FASTCDC_2020 => {
                let within = |v: u64, lo: usize, hi: usize| (lo as u64..=hi as u64).contains(&v);
                if !within(min, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX)
                    || !within(avg, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX)
                    || !within(max, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX)
                    || max > MAX_CHUNK_SIZE
                {
                    return bad(format!(
                        "sizes must be within {}..={} / {}..={} / {}..={}",
                        v2020::MINIMUM_MIN,
                        v2020::MINIMUM_MAX,
                        v2020::AVERAGE_MIN,
                        v2020::AVERAGE_MAX,
                        v2020::MAXIMUM_MIN,
                        v2020::MAXIMUM_MAX.min(MAX_CHUNK_SIZE as usize)
                    ));
                }
                if !(min <= avg && avg <= max) {
                    return bad("want min_size <= avg_size <= max_size".into());
                }
                if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
                    return bad("sizes must be even".into());
                }
            }
            other => {
                return Err(PayloadError::UnknownChunking {
                    algorithm: other.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Cut what `reader` yields into chunks (offset, bytes), in order; only one chunk (and
    /// for FastCDC one `max_size` buffer) is in memory at a time. The parameters are checked
    /// first.
    pub fn chunks<R: Read>(&self, reader: R) -> Result<Chunks<R>, PayloadError> {
        self.check()?;
        // Within MAX_CHUNK_SIZE (checked), so these fit a usize.
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let inner = if self.algorithm == FIXED {
            Inner::Fixed {
                reader,
                size: self.max_size,
                offset: 0,
                done: false,
            }
        } else {
            Inner::Cdc(Box::new(StreamCDC::with_level(
                reader,
                size(self.min_size),
                size(self.avg_size),
                size(self.max_size),
                Normalization::Level1,
            )))
        };
        Ok(Chunks { inner })
    }
}

/// The chunks of one part, from [`Chunking::chunks`].
pub struct Chunks<R: Read> {
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Fixed {
        reader: R,
        size: u64,
        offset: u64,
        done: bool,
    },
    Cdc(Box<StreamCDC<R>>),
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = std::io::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Fixed {
                reader,
                size,
                offset,
                done,
            } => {
                if *done {
                    return None;
                }
                let mut buf = Vec::new();
                if let Err(e) = reader.take(*size).read_to_end(&mut buf) {
                    *done = true;
                    return Some(Err(e));
                }
                if (buf.len() as u64) < *size {
                    *done = true;
                }
                if buf.is_empty() {
                    return None;
                }
                let at = *offset;
                *offset += buf.len() as u64;
                Some(Ok((at, buf)))
            }
            Inner::Cdc(cdc) => cdc
                .next()
                .map(|r| r.map(|c| (c.offset, c.data)).map_err(std::io::Error::from)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::noise;

    fn cut(c: &Chunking, data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        c.chunks(data).unwrap().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn chunks_tile_the_input_and_respect_the_bounds() {
        let data = noise(3_000_000, 7);
        for c in [Chunking::default(), Chunking::fixed(100_000)] {
            let chunks = cut(&c, &data);
            let mut end = 0u64;
            for (i, (off, bytes)) in chunks.iter().enumerate() {
                assert_eq!(*off, end, "{c:?} chunk {i}");
                assert!(bytes.len() as u64 <= c.max_size);
                if i + 1 < chunks.len() {
                    assert!(bytes.len() as u64 >= c.min_size);
                }
                end += bytes.len() as u64;
            }
            assert_eq!(end, data.len() as u64);
        }
        assert!(cut(&Chunking::default(), &[]).is_empty());
        assert!(cut(&Chunking::fixed(10), &[]).is_empty());
        // Exactly two fixed chunks: no empty third one.
        assert_eq!(cut(&Chunking::fixed(10), &[1u8; 20]).len(), 2);
    }

    #[test]
    fn an_insertion_moves_only_nearby_boundaries() {
        let a = noise(4_000_000, 11);
        let mut b = a[..1_000_000].to_vec();
        b.extend_from_slice(&noise(5_000, 12));
        b.extend_from_slice(&a[1_000_000..]);
        let c = Chunking::default();
        let hashes = |d: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            cut(&c, d).into_iter().map(|(_, b)| b).collect()
        };
        let (ha, hb) = (hashes(&a), hashes(&b));
        let shared: usize = hb.iter().filter(|x| ha.contains(*x)).map(|x| x.len()).sum();
        // All but a few chunks around the insertion are shared.
        assert!(
            shared as f64 > 0.9 * a.len() as f64,
            "shared {shared} of {}",
            a.len()
        );
        // Fixed chunks share only what precedes the insertion.
        let f = Chunking::fixed(65_536);
        let fa: std::collections::HashSet<Vec<u8>> =
            cut(&f, &a).into_iter().map(|(_, b)| b).collect();
        let fshared: usize = cut(&f, &b)
            .into_iter()
            .filter(|(_, x)| fa.contains(x))
            .map(|(_, x)| x.len())
            .sum();
        assert!((fshared as f64) < 0.3 * a.len() as f64, "{fshared}");
    }

    #[test]
    fn unknown_algorithms_and_bad_sizes_are_refused() {
        let c = Chunking {
            algorithm: "rabin".into(),
            ..Chunking::default()
        };
        let e = c.check().unwrap_err();
        assert_eq!(e.reason(), "unknown_chunking");
        assert!(e.to_string().contains("rabin"), "{e}");
        for bad in [
            Chunking::fastcdc(16, 64 << 10, 256 << 10),
            Chunking::fastcdc(64 << 10, 16 << 10, 256 << 10),
            Chunking::fastcdc(16 << 10, 64 << 10, 32 << 20),
            Chunking::fastcdc(16385, 64 << 10, 256 << 10),
            Chunking::fixed(0),
            Chunking {
                algorithm: FIXED.into(),
                min_size: 1,
                avg_size: 2,
                max_size: 2,
            },
        ] {
            let e = bad.check().unwrap_err();
            assert_eq!(e.reason(), "malformed", "{bad:?}");
            assert!(bad.chunks(&[][..]).is_err());
        }
    }
}
