//! The one place where the data layer's entity types become the REST wire types of
//! `keelson-api-types` (and back, for the rollout policy). The REST API and the dashboard both
//! show what these conversions make, so the JSON and the pages cannot drift apart.

use keelson_api_types as api;

use crate::db;
use crate::grant::RolloutPolicy;

impl From<db::applications::Application> for api::Application {
    fn from(a: db::applications::Application) -> Self {
        api::Application {
            id: a.id,
            name: a.name,
            description: a.description,
            created_at: a.created_at,
        }
    }
}

impl From<db::packages::Package> for api::Package {
    fn from(p: db::packages::Package) -> Self {
        let download_path = p.download_path();
        api::Package {
            id: p.id,
            application_id: p.application_id,
            version: p.version,
            filename: p.filename,
            url: p.url,
            stored: p.stored_path.is_some(),
            download_path,
            size: p.size,
            sha1_hex: p.sha1_hex,
            sha256_hex: p.sha256_hex,
            created_at: p.created_at,
        }
    }
}

impl From<db::channels::ChannelView> for api::Channel {
    fn from(c: db::channels::ChannelView) -> Self {
        api::Channel {
            id: c.channel.id,
            application_id: c.channel.application_id,
            name: c.channel.name,
            version: c.channel.package_version,
            floors: c.floors,
            created_at: c.channel.created_at,
        }
    }
}

impl From<db::activity::Activity> for api::ActivityEntry {
    fn from(a: db::activity::Activity) -> Self {
        api::ActivityEntry {
            id: a.id,
            created_at: a.created_at,
            severity: a.severity,
            kind: a.kind,
            actor: a.actor,
            application_id: a.application_id,
            group_id: a.group_id,
            version: a.version,
            message: a.message,
        }
    }
}

impl From<db::tokens::TokenInfo> for api::TokenInfo {
    fn from(t: db::tokens::TokenInfo) -> Self {
        api::TokenInfo {
            id: t.id,
            role: t.role,
            description: t.description,
            created_at: t.created_at,
            last_used: t.last_used,
        }
    }
}

impl From<db::groups::VersionCount> for api::VersionCount {
    fn from(v: db::groups::VersionCount) -> Self {
        api::VersionCount {
            version: v.version,
            count: v.count,
        }
    }
}

impl From<db::groups::StatusCount> for api::StatusCount {
    fn from(s: db::groups::StatusCount) -> Self {
        api::StatusCount {
            status: api::status_name(s.status).to_string(),
            count: s.count,
        }
    }
}

impl From<db::instances::StatusChange> for api::StatusEntry {
    fn from(h: db::instances::StatusChange) -> Self {
        api::StatusEntry {
            status: api::status_name(h.status).to_string(),
            version: h.version,
            message: h.message,
            created_at: h.created_at,
        }
    }
}

impl From<db::instances::Event> for api::EventEntry {
    fn from(e: db::instances::Event) -> Self {
        api::EventEntry {
            event_type: e.event_type,
            event_result: e.event_result,
            error_code: e.error_code,
            version: e.version,
            previous_version: e.previous_version,
            created_at: e.created_at,
            reason: e.reason,
        }
    }
}

/// An instance row of the search or detail query.
pub fn instance(r: db::instances::ListRow) -> api::Instance {
    api::Instance {
        id: r.0,
        machine_id: r.1,
        application_id: r.2,
        group: r.3,
        version: r.4,
        status: api::status_name(r.5).to_string(),
        ip: r.6,
        alias: r.7,
        oem: r.8,
        aleph_version: r.9,
        last_check: r.10,
        created_at: r.11,
    }
}

/// A group's stored policy and halt as the API shows them.
pub fn policy(
    rollout: RolloutPolicy,
    halted_version: Option<String>,
    halted_reason: Option<String>,
) -> api::Policy {
    let RolloutPolicy {
        updates_enabled,
        safe_mode,
        max_updates_per_period,
        period_secs,
        update_timeout_secs,
        timezone,
        maintenance_windows,
        rollout_percent,
        failure_threshold_percent,
        pinned_version,
        fleetlock_slots,
    } = rollout;
    api::Policy {
        updates_enabled,
        safe_mode,
        max_updates_per_period,
        period_secs,
        update_timeout_secs,
        timezone,
        maintenance_windows,
        rollout_percent,
        failure_threshold_percent,
        pinned_version,
        fleetlock_slots,
        halted_version,
        halted_reason,
    }
}

/// The part of an API policy the grant engine reads.
pub fn rollout_policy(p: &api::Policy) -> RolloutPolicy {
    RolloutPolicy {
        updates_enabled: p.updates_enabled,
        safe_mode: p.safe_mode,
        max_updates_per_period: p.max_updates_per_period,
        period_secs: p.period_secs,
        update_timeout_secs: p.update_timeout_secs,
        timezone: p.timezone.clone(),
        maintenance_windows: p.maintenance_windows.clone(),
        rollout_percent: p.rollout_percent,
        failure_threshold_percent: p.failure_threshold_percent,
        pinned_version: p.pinned_version.clone(),
        fleetlock_slots: p.fleetlock_slots,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policy_round_trips_through_the_wire_type() {
        let rollout = RolloutPolicy {
            rollout_percent: 25,
            pinned_version: Some("2.0.0".into()),
            maintenance_windows: vec![api::MaintenanceWindow {
                days: vec!["sat".into()],
                start: "22:00".into(),
                end: "04:00".into(),
            }],
            ..RolloutPolicy::default()
        };
        let p = policy(
            rollout.clone(),
            Some("3.0.0".into()),
            Some("failures".into()),
        );
        assert_eq!(rollout_policy(&p), rollout);
        // The API's JSON is the engine's policy plus the halt, in the engine's field order.
        let engine = serde_json::to_string(&rollout).unwrap();
        let expected = format!(
            r#"{},"halted_version":"3.0.0","halted_reason":"failures"}}"#,
            engine.trim_end_matches('}')
        );
        assert_eq!(serde_json::to_string(&p).unwrap(), expected);
    }
}
