//! locksmith's reboot semaphore, kept in etcd v3 and changed only by compare-and-swap
//! transactions, so that Keelson and Flatcar nodes (and `locksmithctl` through a v3 client)
//! share one semaphore.
//!
//! Key: `coreos.com/updateengine/rebootlock/semaphore`, or for group G
//! `coreos.com/updateengine/rebootlock/groups/<query-escaped G>/semaphore`. Value: locksmith's
//! JSON `{"semaphore": free, "max": slots, "holders": [sorted ids] | null}`, created as
//! `semaphore=1, max=1` when absent. Every change reads the value and its `mod_revision`,
//! changes it in memory, and writes it in a transaction that succeeds only if the
//! `mod_revision` is unchanged; a lost race re-reads and tries again (a few times).
//!
//! The agent talks to etcd's JSON gRPC gateway (`POST /v3/kv/range`, `/v3/kv/txn`, keys and
//! values base64), which every etcd since 3.4 serves on its client URL: no protobuf toolchain.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::lock::LockError;

/// locksmith's key prefix.
pub const PREFIX: &str = "coreos.com/updateengine/rebootlock";

/// How many times a change re-reads and retries after losing a compare-and-swap.
pub const CAS_ATTEMPTS: u32 = 20;

/// The semaphore's value, field for field as locksmith stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    /// Free slots (may go negative after `set-max` lowered the size).
    pub semaphore: i64,
    /// Slots.
    pub max: i64,
    /// Holders, sorted; `null` when empty (Go's nil slice).
    pub holders: Option<Vec<String>>,
}

impl Semaphore {
    /// locksmith's initial value.
    pub fn initial() -> Semaphore {
        Semaphore {
            semaphore: 1,
            max: 1,
            holders: None,
        }
    }

    /// Whether `id` holds a slot.
    pub fn holds(&self, id: &str) -> bool {
        self.holders
            .as_ref()
            .is_some_and(|h| h.iter().any(|x| x == id))
    }
}

/// locksmith's key for `group` (the empty group is the default semaphore).
pub fn key_for(group: &str) -> String {
    if group.is_empty() {
        format!("{PREFIX}/semaphore")
    } else {
        format!("{PREFIX}/groups/{}/semaphore", query_escape(group))
    }
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What a lock or unlock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The semaphore was changed.
    Done(Semaphore),
    /// Nothing to change (already held by the id, or not held).
    Unchanged(Semaphore),
}

/// The semaphore of one group on some etcd endpoints, for one holder id.
#[derive(Debug, Clone)]
pub struct EtcdLock {
    http: reqwest::Client,
    /// Client URLs, tried in order until one answers.
    pub endpoints: Vec<String>,
    /// locksmith group (empty = default).
    pub group: String,
    /// The etcd key.
    pub key: String,
    /// This node's holder id (its machine id).
    pub id: String,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    #[serde(default)]
    value: String,
    #[serde(default)]
    mod_revision: String,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
}

impl EtcdLock {
    /// The semaphore of `group` on `endpoints` for holder `id`.
    pub fn new(http: reqwest::Client, endpoints: Vec<String>, group: &str, id: &str) -> EtcdLock {
        EtcdLock {
            http,
            endpoints,
            key: key_for(group),
            group: group.to_owned(),
            id: id.to_owned(),
        }
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, LockError> {
        let mut last = LockError::Unavailable {
            url: String::new(),
            detail: "no etcd endpoints configured".into(),
        };
        for ep in &self.endpoints {
            let url = format!("{}{path}", ep.trim_end_matches('/'));
            let resp = match self.http.post(&url).json(body).send().await {
                Ok(r) => r,
                Err(e) => {
                    // locksmith moves on to the next endpoint when one does not answer.
                    last = LockError::Unavailable {
                        url,
                        detail: e.to_string(),
                    };
                    continue;
                }
            };
            let status = resp.status();
            let text = resp.text().await.map_err(|e| LockError::Unavailable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
            if !status.is_success() {
                return Err(LockError::Refused {
                    url,
                    status: status.as_u16(),
                    kind: format!("etcd_http_{}", status.as_u16()),
                    value: text.chars().take(300).collect(),
                });
            }
            return serde_json::from_str(&text).map_err(|e| LockError::Unavailable {
                url,
                detail: format!("unexpected etcd answer: {e}"),
            });
        }
        Err(last)
    }

    /// Reads the semaphore and its `mod_revision`; `None` when the key does not exist.
    pub async fn read(&self) -> Result<Option<(Semaphore, String)>, LockError> {
        let r: RangeResponse = self
            .call("/v3/kv/range", &json!({"key": B64.encode(&self.key)}))
            .await?;
        let Some(kv) = r.kvs.into_iter().next() else {
            return Ok(None);
        };
        let corrupt = |detail: String| LockError::Corrupt {
            key: self.key.clone(),
            detail,
        };
        let bytes = B64
            .decode(kv.value.as_bytes())
            .map_err(|e| corrupt(e.to_string()))?;
        let sem: Semaphore = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some((sem, kv.mod_revision)))
    }

    /// Reads the semaphore, creating locksmith's initial one if absent (create-if-absent).
    pub async fn read_or_create(&self) -> Result<(Semaphore, String), LockError> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some(found) = self.read().await? {
                return Ok(found);
            }
            let init =
                serde_json::to_vec(&Semaphore::initial()).map_err(|e| LockError::Corrupt {
                    key: self.key.clone(),
                    detail: e.to_string(),
                })?;
            let _: TxnResponse = self
                .call(
                    "/v3/kv/txn",
                    &json!({
                        "compare": [{"key": B64.encode(&self.key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
                        "success": [{"request_put": {"key": B64.encode(&self.key), "value": B64.encode(init)}}],
                    }),
                )
                .await?;
        }
        Err(LockError::Conflict {
            key: self.key.clone(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Writes `next` if the key's `mod_revision` is still `rev`; `false` when it changed.
    async fn swap(&self, rev: &str, next: &Semaphore) -> Result<bool, LockError> {
        let value = serde_json::to_vec(next).map_err(|e| LockError::Corrupt {
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        let r: TxnResponse = self
            .call(
                "/v3/kv/txn",
                &json!({
                    "compare": [{"key": B64.encode(&self.key), "target": "MOD", "result": "EQUAL", "mod_revision": rev}],
                    "success": [{"request_put": {"key": B64.encode(&self.key), "value": B64.encode(value)}}],
                }),
            )
            .await?;
        Ok(r.succeeded)
    }

    /// Read, change in memory with `f` (`Ok(None)` = nothing to do), compare-and-swap;
    /// re-read and retry when another client won the race.
    async fn change(
        &self,
        f: impl Fn(&Semaphore) -> Result<Option<Semaphore>, LockError>,
    ) -> Result<Change, LockError> {
        for _ in 0..CAS_ATTEMPTS {
            let (sem, rev) = self.read_or_create().await?;
            let Some(next) = f(&sem)? else {
                return Ok(Change::Unchanged(sem));
            };
            if self.swap(&rev, &next).await? {
                return Ok(Change::Done(next));
            }
        }
        Err(LockError::Conflict {
            key: self.key.clone(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Takes a slot for `id`: already holding one is success (the lock is recursive, as
    /// locksmithd treats "holder exists"); no free slot is [`LockError::Full`].
    pub async fn lock(&self, id: &str) -> Result<Change, LockError> {
        self.change(|s| {
            if s.holds(id) {
                return Ok(None);
            }
            if s.semaphore <= 0 {
                return Err(LockError::Full {
                    key: self.key.clone(),
                    max: s.max,
                    holders: s.holders.clone().unwrap_or_default(),
                });
            }
            let mut holders = s.holders.clone().unwrap_or_default();
            holders.push(id.to_owned());
            holders.sort();
            Ok(Some(Semaphore {
                semaphore: s.semaphore - 1,
                max: s.max,
                holders: Some(holders),
            }))
        })
        .await
    }

    /// Releases `id`'s slot; not holding one is success.
    pub async fn unlock(&self, id: &str) -> Result<Change, LockError> {
        self.change(|s| {
            if !s.holds(id) {
                return Ok(None);
            }
            let holders: Vec<String> = s
                .holders
                .iter()
                .flatten()
                .filter(|h| *h != id)
                .cloned()
                .collect();
            Ok(Some(Semaphore {
                semaphore: s.semaphore + 1,
                max: s.max,
                holders: if holders.is_empty() {
                    None
                } else {
                    Some(holders)
                },
            }))
        })
        .await
    }

    /// locksmith's `set-max N`: `semaphore += N - max; max = N` (holders are kept).
    pub async fn set_max(&self, max: i64) -> Result<Change, LockError> {
        self.change(|s| {
            if s.max == max {
                return Ok(None);
            }
            Ok(Some(Semaphore {
                semaphore: s.semaphore + (max - s.max),
                max,
                holders: s.holders.clone(),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_as_locksmith_names_them() {
        let cases = [
            ("", "coreos.com/updateengine/rebootlock/semaphore"),
            (
                "lb",
                "coreos.com/updateengine/rebootlock/groups/lb/semaphore",
            ),
            (
                "prod/database",
                "coreos.com/updateengine/rebootlock/groups/prod%2Fdatabase/semaphore",
            ),
            (
                "a b",
                "coreos.com/updateengine/rebootlock/groups/a+b/semaphore",
            ),
        ];
        for (group, key) in cases {
            assert_eq!(key_for(group), key, "{group}");
        }
    }

    #[test]
    fn value_is_locksmiths_json() {
        let v = serde_json::to_string(&Semaphore::initial()).unwrap();
        assert_eq!(v, r#"{"semaphore":1,"max":1,"holders":null}"#);
        let s: Semaphore =
            serde_json::from_str(r#"{"semaphore":0,"max":2,"holders":["a","b"]}"#).unwrap();
        assert!(s.holds("b"));
        assert!(!s.holds("c"));
    }
}
