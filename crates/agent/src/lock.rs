//! Reboot locks: the FleetLock client (zincati's protocol, docs/reboot.md) and locksmith's
//! etcd semaphore ([`crate::etcd`]) behind one [`RebootLock`].
//!
//! Both are owned and recursive: taking a lock this node already holds succeeds, releasing a
//! lock it does not hold succeeds. The agent takes the lock before it reboots into a staged
//! update and releases it only after the new boot was blessed (or the node came back on the
//! old version), and at start whenever it may still hold one from an earlier boot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::etcd::EtcdLock;
use crate::settings::{RebootStrategy, Settings};

/// Zincati's application id for the app-specific machine id (FleetLock's client id).
pub const ZINCATI_APP_ID: &str = "de35106b6ec24688b63afddaa156679b";

/// A lock operation failed; every variant names the service and says why.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The service could not be reached or did not answer (connection, timeout, bad body).
    #[error("{url}: {detail}")]
    Unavailable {
        /// The endpoint tried (the last one when there are several).
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The service answered with an error (FleetLock `{kind, value}`, or etcd's message).
    #[error("{url}: HTTP {status} {kind}: {value}")]
    Refused {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// FleetLock error kind (or `generic_http_<status>`).
        kind: String,
        /// Detail from the service.
        value: String,
    },
    /// Every slot of the semaphore is held by other nodes.
    #[error("{key}: all {max} slot(s) are held by {holders:?}")]
    Full {
        /// The semaphore (etcd key).
        key: String,
        /// Its size.
        max: i64,
        /// Its holders.
        holders: Vec<String>,
    },
    /// Another client changed the semaphore between our read and our write, again and again.
    #[error("{key}: the semaphore changed under us {attempts} times (compare-and-swap lost)")]
    Conflict {
        /// The etcd key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The stored semaphore is not locksmith's JSON.
    #[error("{key}: not a locksmith semaphore: {detail}")]
    Corrupt {
        /// The etcd key.
        key: String,
        /// The parser's message.
        detail: String,
    },
    /// A file the identity comes from.
    #[error("reading {path}: {detail}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The strategy takes no lock.
    #[error("reboot strategy {0} takes no lock")]
    NoLock(&'static str),
}

impl LockError {
    /// A stable slug for `status` and logs.
    pub fn reason(&self) -> String {
        match self {
            LockError::Unavailable { .. } => "lock_service_unavailable".into(),
            LockError::Refused { kind, .. } => format!("lock_refused_{kind}"),
            LockError::Full { .. } => "lock_full".into(),
            LockError::Conflict { .. } => "lock_conflict".into(),
            LockError::Corrupt { .. } => "lock_corrupt".into(),
            LockError::Identity { .. } => "lock_identity".into(),
            LockError::NoLock(_) => "no_lock".into(),
        }
    }
}

/// One holder of a semaphore, as `lock status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatus {
    /// Which service (`etcd key ...` or the FleetLock URL).
    pub service: String,
    /// The group.
    pub group: String,
    /// This node's holder id.
    pub id: String,
    /// Slots (etcd `max`), when the service tells.
    pub max: Option<i64>,
    /// Free slots (etcd `semaphore`), when the service tells.
    pub available: Option<i64>,
    /// Holders, when the service tells (FleetLock has no read operation).
    pub holders: Option<Vec<String>>,
}

/// A FleetLock client for one server, group and id.
#[derive(Debug, Clone)]
pub struct FleetLockClient {
    http: reqwest::Client,
    base: url::Url,
    /// FleetLock `client_params.group`.
    pub group: String,
    /// FleetLock `client_params.id`.
    pub id: String,
}

#[derive(Serialize)]
struct Body<'a> {
    client_params: Params<'a>,
}

#[derive(Serialize)]
struct Params<'a> {
    id: &'a str,
    group: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    kind: String,
    value: String,
}

impl FleetLockClient {
    /// A client for the FleetLock server at `base` (a missing trailing slash is added, so a
    /// base with a path keeps it when `v1/pre-reboot` is joined).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        group: &str,
        id: &str,
    ) -> Result<FleetLockClient, LockError> {
        let with_slash = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        let base = url::Url::parse(&with_slash).map_err(|e| LockError::Unavailable {
            url: base.to_owned(),
            detail: format!("not a URL: {e}"),
        })?;
        Ok(FleetLockClient {
            http,
            base,
            group: group.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The URL of `op` (`pre-reboot` or `steady-state`).
    pub fn url(&self, op: &str) -> String {
        self.base
            .join(&format!("v1/{op}"))
            .map(|u| u.to_string())
            .unwrap_or_else(|_| format!("{}v1/{op}", self.base))
    }

    async fn post(&self, op: &str, id: &str) -> Result<(), LockError> {
        let url = self.url(op);
        let body = serde_json::to_vec_pretty(&Body {
            client_params: Params {
                id,
                group: &self.group,
            },
        })
        .map_err(|e| LockError::Unavailable {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let resp = self
            .http
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| LockError::Unavailable {
                url: url.clone(),
                detail: format!("client_failed_request: {e}"),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let (kind, value) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) if !b.kind.is_empty() => (b.kind, b.value),
            _ => (
                format!("generic_http_{}", status.as_u16()),
                text.chars().take(200).collect(),
            ),
        };
        Err(LockError::Refused {
            url,
            status: status.as_u16(),
            kind,
            value,
        })
    }

    /// `pre-reboot` (RecursiveLock) for this node.
    pub async fn pre_reboot(&self) -> Result<(), LockError> {
        self.post("pre-reboot", &self.id).await
    }

    /// `steady-state` (UnlockIfHeld) for `id` (this node's, or another's for `lock unlock`).
    pub async fn steady_state(&self, id: &str) -> Result<(), LockError> {
        self.post("steady-state", id).await
    }
}

/// The lock of a coordinated strategy.
#[derive(Debug, Clone)]
pub enum RebootLock {
    /// FleetLock.
    Fleetlock(FleetLockClient),
    /// locksmith's semaphore in etcd v3.
    Etcd(EtcdLock),
}

impl RebootLock {
    /// The lock the settings ask for; `machine_id` is the node's `/etc/machine-id`.
    pub fn from_settings(
        http: &reqwest::Client,
        settings: &Settings,
        machine_id_path: &Path,
    ) -> Result<RebootLock, LockError> {
        let r = &settings.reboot;
        match &r.strategy {
            RebootStrategy::Fleetlock { url } => {
                let id = match &r.lock_id {
                    Some(id) => id.clone(),
                    None => app_specific_id(&read_machine_id(machine_id_path)?, ZINCATI_APP_ID)
                        .ok_or_else(|| LockError::Identity {
                            path: machine_id_path.to_owned(),
                            detail: "not 32 hex digits".into(),
                        })?,
                };
                let group = r
                    .lock_group
                    .clone()
                    .unwrap_or_else(|| settings.group.clone());
                Ok(RebootLock::Fleetlock(FleetLockClient::new(
                    http.clone(),
                    url,
                    &group,
                    &id,
                )?))
            }
            RebootStrategy::EtcdLock { endpoints } => {
                let id = match &r.lock_id {
                    Some(id) => id.clone(),
                    None => read_machine_id(machine_id_path)?,
                };
                let group = r.lock_group.clone().unwrap_or_default();
                Ok(RebootLock::Etcd(EtcdLock::new(
                    http.clone(),
                    endpoints.clone(),
                    &group,
                    &id,
                )))
            }
            RebootStrategy::Reboot => Err(LockError::NoLock("reboot")),
            RebootStrategy::Off => Err(LockError::NoLock("off")),
        }
    }

    /// This node's holder id.
    pub fn id(&self) -> &str {
        match self {
            RebootLock::Fleetlock(c) => &c.id,
            RebootLock::Etcd(e) => &e.id,
        }
    }

    /// Takes a slot for this node (success when it already holds one).
    pub async fn acquire(&self) -> Result<(), LockError> {
        match self {
            RebootLock::Fleetlock(c) => c.pre_reboot().await,
            RebootLock::Etcd(e) => e.lock(&e.id).await.map(|_| ()),
        }
    }

    /// Releases this node's slot (success when it holds none).
    pub async fn release(&self) -> Result<(), LockError> {
        self.unlock(self.id()).await
    }

    /// Releases `id`'s slot: the operator's `lock unlock ID`.
    pub async fn unlock(&self, id: &str) -> Result<(), LockError> {
        match self {
            RebootLock::Fleetlock(c) => c.steady_state(id).await,
            RebootLock::Etcd(e) => e.unlock(id).await.map(|_| ()),
        }
    }

    /// What the service says about the semaphore (FleetLock servers have no read operation).
    pub async fn status(&self) -> Result<LockStatus, LockError> {
        match self {
            RebootLock::Fleetlock(c) => Ok(LockStatus {
                service: c.base.to_string(),
                group: c.group.clone(),
                id: c.id.clone(),
                max: None,
                available: None,
                holders: None,
            }),
            RebootLock::Etcd(e) => {
                let (sem, _) = e.read_or_create().await?;
                Ok(LockStatus {
                    service: format!("etcd {} key {}", e.endpoints.join(","), e.key),
                    group: e.group.clone(),
                    id: e.id.clone(),
                    max: Some(sem.max),
                    available: Some(sem.semaphore),
                    holders: Some(sem.holders.unwrap_or_default()),
                })
            }
        }
    }
}

fn read_machine_id(path: &Path) -> Result<String, LockError> {
    let text = std::fs::read_to_string(path).map_err(|e| LockError::Identity {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let id = text.trim().to_owned();
    if id.is_empty() {
        return Err(LockError::Identity {
            path: path.to_owned(),
            detail: "empty".into(),
        });
    }
    Ok(id)
}

/// systemd's `sd_id128_get_machine_app_specific`: HMAC-SHA256 keyed with the machine id's 16
/// bytes over the app id's 16 bytes, the first 16 bytes made a v4 UUID; lowercase hex without
/// dashes, as Zincati sends it. `None` when either id is not 32 hex digits.
pub fn app_specific_id(machine_id: &str, app_id: &str) -> Option<String> {
    let key = hex::decode(machine_id.trim())
        .ok()
        .filter(|k| k.len() == 16)?;
    let msg = hex::decode(app_id.trim()).ok().filter(|m| m.len() == 16)?;
    let mac = hmac_sha256(&key, &msg);
    let mut id = [0u8; 16];
    id.copy_from_slice(&mac[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Some(hex::encode(id))
}

/// HMAC-SHA256 (RFC 2104) for keys up to the block size, which is all machine ids need.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.map(|k| k ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The first wait between lock attempts (locksmith's 5 s).
pub const LOCK_BACKOFF_BASE: Duration = Duration::from_secs(5);

/// Backoff between lock attempts: `base` doubling per attempt, capped at 60 x `base`
/// (5 s to 5 min with locksmith's base).
pub fn lock_backoff(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(base.saturating_mul(60))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn app_specific_id_matches_the_published_vector() {
        // poseidon/fleetlock internal/nodes_test.go: machine id -> Zincati's FleetLock id.
        assert_eq!(
            app_specific_id("1c09ca98649c4c7abc779cd04c96812e", ZINCATI_APP_ID).as_deref(),
            Some("978a225b3d7b40e9acd7ce9b62f68444")
        );
        assert_eq!(app_specific_id("xyz", ZINCATI_APP_ID), None);
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_bounds() {
        let cases = [
            (0, 5),
            (1, 5),
            (2, 10),
            (3, 20),
            (6, 160),
            (7, 300),
            (40, 300),
        ];
        for (n, secs) in cases {
            assert_eq!(
                lock_backoff(LOCK_BACKOFF_BASE, n),
                Duration::from_secs(secs),
                "{n}"
            );
        }
    }

    #[test]
    fn urls_keep_the_base_path() {
        let c = |b: &str| FleetLockClient::new(reqwest::Client::new(), b, "g", "i").unwrap();
        assert_eq!(
            c("http://h:8080").url("pre-reboot"),
            "http://h:8080/v1/pre-reboot"
        );
        assert_eq!(
            c("http://h/fl").url("steady-state"),
            "http://h/fl/v1/steady-state"
        );
        assert_eq!(
            c("http://h/fl/").url("pre-reboot"),
            "http://h/fl/v1/pre-reboot"
        );
    }
}
