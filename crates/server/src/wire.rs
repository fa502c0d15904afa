//! The one place where the data layer's entity types become the REST wire types of
//! `keelson-api-types`. The REST API and the dashboard both
//! show what these conversions make, so the JSON and the pages cannot drift apart.

use keelson_api_types as api;

use crate::db;

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
            extensions: p.extensions.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<db::extensions::Extension> for api::PackageExtension {
    fn from(e: db::extensions::Extension) -> Self {
        api::PackageExtension {
            name: e.name,
            size: e.size,
            sha256: e.sha256_hex,
            sha1: e.sha1_hex,
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

impl From<db::instances::Instance> for api::Instance {
    fn from(r: db::instances::Instance) -> Self {
        api::Instance {
            id: r.id,
            machine_id: r.machine_id,
            application_id: r.application_id,
            group: r.group_name,
            version: r.version,
            status: api::status_name(r.status).to_string(),
            ip: r.ip,
            alias: r.alias,
            oem: r.oem,
            aleph_version: r.aleph_version,
            last_check: r.last_check,
            created_at: r.created_at,
        }
    }
}

impl From<db::groups::GroupView> for api::Group {
    fn from(v: db::groups::GroupView) -> Self {
        let g = v.group;
        let versions: Vec<api::VersionCount> = v
            .versions
            .into_iter()
            .map(api::VersionCount::from)
            .collect();
        let on_target = match &v.target_version {
            Some(t) => versions
                .iter()
                .filter(|c| &c.version == t)
                .map(|c| c.count)
                .sum(),
            None => 0,
        };
        let (in_progress, succeeded, failed) = v.grants;
        let rollout = api::RolloutProgress {
            target_version: v.target_version,
            instances: versions.iter().map(|c| c.count).sum(),
            on_target,
            in_progress,
            succeeded,
            failed,
            halted: g.policy.halted_version.is_some(),
        };
        api::Group {
            id: g.id,
            application_id: g.application_id,
            name: g.name,
            track: g.track,
            channel: g.channel,
            policy: g.policy,
            versions,
            statuses: v.statuses.into_iter().map(api::StatusCount::from).collect(),
            rollout,
            created_at: g.created_at,
        }
    }
}

impl From<db::fleetlock::Holder> for api::FleetLockHolder {
    fn from(h: db::fleetlock::Holder) -> Self {
        api::FleetLockHolder {
            group: h.group,
            id: h.id,
            acquired_at: h.acquired_at,
        }
    }
}
