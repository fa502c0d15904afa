//! The one version ordering of Keelson, used by the grant algorithm, the REST API's lists, the
//! dashboard, the payload tools and the node agent.
//!
//! A version is one or more dot-separated numbers (`4081.2.0`, `1.2`, `10`; at most 8 parts,
//! missing trailing parts count as zero, so `4081.2` equals `4081.2.0`), optionally followed by
//! `-prerelease` and `+build`. Precedence is semver's (semver.org, section 11) generalised to
//! any number of numeric parts:
//! - numeric parts compare as numbers;
//! - a version with a pre-release sorts before the same version without one
//!   (`2.0.0-rc1 < 2.0.0`);
//! - pre-releases compare identifier by identifier (split on `.`): numeric identifiers as
//!   numbers and below alphanumeric ones, alphanumeric ones in ASCII order, and a shorter list
//!   first when all else is equal (`alpha < alpha.1 < alpha.beta < beta < beta.2 < beta.11 <
//!   rc.1`);
//! - build metadata is ignored for precedence (`1.0.0+a == 1.0.0+b`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// At most this many numeric parts.
const MAX_PARTS: usize = 8;

/// A parsed version; see the crate documentation for the order.
#[derive(Clone, Debug)]
pub struct Version {
    parts: Vec<u64>,
    pre: Vec<Identifier>,
    text: String,
}

/// One dot-separated identifier of a pre-release.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identifier {
    Numeric(u64),
    Alpha(String),
}

impl Ord for Identifier {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Identifier::Numeric(a), Identifier::Numeric(b)) => a.cmp(b),
            (Identifier::Numeric(_), Identifier::Alpha(_)) => Ordering::Less,
            (Identifier::Alpha(_), Identifier::Numeric(_)) => Ordering::Greater,
            (Identifier::Alpha(a), Identifier::Alpha(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A version string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid version {value:?}: expected dot-separated numbers like 4081.2.0, optionally with -prerelease and +build"
)]
pub struct VersionError {
    /// The rejected text.
    pub value: String,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Version {
    /// Parse `text` (see the crate documentation for the grammar).
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let err = || VersionError {
            value: text.to_string(),
        };
        let (rest, build) = match text.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (text, None),
        };
        if let Some(b) = build
            && !b.split('.').all(is_identifier)
        {
            return Err(err());
        }
        let (nums, pre) = match rest.split_once('-') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        if nums.is_empty() {
            return Err(err());
        }
        let mut parts = Vec::new();
        for p in nums.split('.') {
            if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            parts.push(p.parse::<u64>().map_err(|_| err())?);
        }
        if parts.len() > MAX_PARTS {
            return Err(err());
        }
        let mut ids = Vec::new();
        if let Some(p) = pre {
            for id in p.split('.') {
                if !is_identifier(id) {
                    return Err(err());
                }
                if id.bytes().all(|b| b.is_ascii_digit()) {
                    // Longer than u64 compares as text rather than failing: still a valid order.
                    match id.parse::<u64>() {
                        Ok(n) => ids.push(Identifier::Numeric(n)),
                        Err(_) => ids.push(Identifier::Alpha(id.to_string())),
                    }
                } else {
                    ids.push(Identifier::Alpha(id.to_string()));
                }
            }
        }
        Ok(Version {
            parts,
            pre: ids,
            text: text.to_string(),
        })
    }

    /// The text this version was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the version carries a pre-release (`2.0.0-rc1`).
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

/// Compare two version strings by [`Version`] precedence; text that does not parse sorts
/// before every valid version, and among itself by plain text, so that a list of arbitrary
/// strings still has one stable order.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre.cmp(&other.pre),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn order_table() {
        let table = [
            ("1.2.10", "1.2.9", Ordering::Greater),
            ("4081.2.0", "4081.2", Ordering::Equal),
            ("2.0.0-rc1", "2.0.0", Ordering::Less),
            ("2.0.0-rc1", "2.0.0-rc2", Ordering::Less),
            ("10", "9.9.9", Ordering::Greater),
            ("1.0.0+build.5", "1.0.0+build.6", Ordering::Equal),
            ("1.0.0-rc.1+x", "1.0.0", Ordering::Less),
            ("1.0.0-2", "1.0.0-10", Ordering::Less),
            ("1.0.0-10", "1.0.0-alpha", Ordering::Less),
            ("3975.2.1", "3975.2.0+fix", Ordering::Greater),
        ];
        for (a, b, want) in table {
            assert_eq!(v(a).cmp(&v(b)), want, "{a} vs {b}");
        }
    }

    #[test]
    fn semver_spec_example_chain() {
        // semver.org section 11.4, in increasing order.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for w in chain.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn bad_versions_are_rejected() {
        for bad in [
            "",
            "1..2",
            "a.b",
            "1.2-",
            "-rc",
            " 1.2",
            "1.2.3.4.5.6.7.8.9",
            "99999999999999999999",
            "1.0+",
            "1.0-rc..1",
            "1.0-rc_1",
            "1.0+b@d",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn compare_strings_puts_invalid_first() {
        let mut list = vec!["2.0.0", "junk", "2.0.0-rc1", "10.0", "1.9"];
        list.sort_by(|a, b| compare(a, b));
        assert_eq!(list, ["junk", "1.9", "2.0.0-rc1", "2.0.0", "10.0"]);
    }

    #[test]
    fn serde_round_trip_keeps_text() {
        let x: Version = serde_json::from_str("\"4081.2.0-rc.1+b7\"").unwrap();
        assert_eq!(x.as_str(), "4081.2.0-rc.1+b7");
        assert!(x.is_prerelease());
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"4081.2.0-rc.1+b7\"");
        assert!(serde_json::from_str::<Version>("\"x\"").is_err());
    }

    proptest::proptest! {
        /// Parsing never panics; the order is antisymmetric and transitive.
        #[test]
        fn order_is_total(a in "[0-9.a-z+-]{0,14}", b in "[0-9.]{1,9}(-[0-9a-z.]{1,5})?", c in "[0-9.]{1,9}(-[0-9a-z.]{1,5})?") {
            let _ = Version::parse(&a);
            if let (Ok(a), Ok(b), Ok(c)) = (Version::parse(&a), Version::parse(&b), Version::parse(&c)) {
                proptest::prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
                if a <= b && b <= c {
                    proptest::prop_assert!(a <= c);
                }
            }
        }
    }
}
