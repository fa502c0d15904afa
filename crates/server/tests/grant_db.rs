//! The grant algorithm against a real database (SQLite and PostgreSQL, same tests): every rule
//! through `db::rollout::handle_reports` (as the Omaha endpoint calls it), with the clock
//! passed in.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use keelson_api_types::{ChannelUpdate, PolicyUpdate};
use keelson_server::db::{self, DbError};
use keelson_server::grant::{MaintenanceWindow, PolicyRules, RolloutPolicy, wave_bucket};

fn t0() -> DateTime<Utc> {
    // A Tuesday, 10:00 UTC.
    Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
}

/// The group `Stable` of the fleet.
async fn stable(env: &Env) -> db::groups::Group {
    db::groups::find(&env.db, APP, "Stable").await.unwrap()
}

/// Set every value of `Stable`'s policy (the halt stays), as `PUT .../policy` does.
async fn set_policy(env: &Env, p: RolloutPolicy) -> Result<(), DbError> {
    db::groups::change_policy(&env.db, "admin", APP, "Stable", p.into())
        .await
        .map(|_| ())
}

/// Lift `Stable`'s automatic halt, as `PUT .../policy {"resume": true}` does.
async fn resume(env: &Env) {
    let change = PolicyUpdate {
        resume: true,
        ..PolicyUpdate::default()
    };
    db::groups::change_policy(&env.db, "admin", APP, "Stable", change)
        .await
        .unwrap();
}

async fn status_of(env: &Env, machine: &str) -> i64 {
    instance(&env.db, machine).await.status
}

async fn full_update_cycle(b: Backend) {
    let env = env(b).await;
    let (gid, _) = fleet(&env, "2.0.0", RolloutPolicy::default()).await;
    assert_eq!(check(&env, "m1", "1.0.0", t0()).await, Ok("2.0.0".into()));
    assert_eq!(status_of(&env, "m1").await, 2, "UpdateGranted");
    // The node restarts mid-download and asks again: same answer (resend).
    assert_eq!(check(&env, "m1", "1.0.0", t0()).await, Ok("2.0.0".into()));
    assert_eq!(count(&env.db, "grants").await, 1);
    for (t, r, want) in [(13, 1, 7), (14, 1, 6), (3, 1, 5)] {
        let mut rep = report("m1", "1.0.0", t0());
        rep.update_check = false;
        rep.events = vec![event(t, r, None, "")];
        let _ = handle_report(&env.db, &rep).await.unwrap();
        assert_eq!(status_of(&env, "m1").await, want, "after event {t}/{r}");
    }
    complete(&env, "m1", "1.0.0", "2.0.0", t0() + Duration::minutes(5)).await;
    assert_eq!(status_of(&env, "m1").await, 4, "Complete");
    assert_eq!(
        check(&env, "m1", "2.0.0", t0() + Duration::minutes(50)).await,
        Err("up_to_date".into())
    );
    let (outcome,): (i64,) = sqlx::query_as("SELECT outcome FROM grants")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(outcome, 1);
    let inst = instance(&env.db, "m1").await;
    let detail = db::instances::detail(&env.db, inst.id)
        .await
        .unwrap()
        .unwrap();
    let codes: Vec<i64> = detail.history.iter().rev().map(|h| h.status).collect();
    assert_eq!(codes, vec![2, 7, 6, 5, 4]);
    assert_eq!(detail.events.len(), 4);
    let act = db::activity::list(&env.db, None, Some(gid), None, 50)
        .await
        .unwrap();
    assert!(act.iter().any(|a| a.kind == "rollout.started"), "{act:?}");
}
both!(full_update_cycle);

async fn updates_disabled_holds(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        updates_enabled: false,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    assert_eq!(
        check(&env, "m1", "1.0.0", t0()).await,
        Err("updates_disabled".into())
    );
    assert_eq!(status_of(&env, "m1").await, 8, "OnHold");
    assert_eq!(count(&env.db, "grants").await, 0);
}
both!(updates_disabled_holds);

async fn max_updates_per_period_and_in_progress(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        max_updates_per_period: 2,
        period_secs: 3600,
        update_timeout_secs: 7200,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    assert!(check(&env, "a", "1.0.0", t0()).await.is_ok());
    assert!(check(&env, "b", "1.0.0", t0()).await.is_ok());
    assert_eq!(
        check(&env, "c", "1.0.0", t0()).await,
        Err("period_limit_reached".into())
    );
    // Next period: the rate allows it, but two are still in progress.
    let later = t0() + Duration::seconds(3601);
    assert_eq!(
        check(&env, "c", "1.0.0", later).await,
        Err("concurrency_limit_reached".into())
    );
    complete(&env, "a", "1.0.0", "2.0.0", later).await;
    assert_eq!(check(&env, "c", "1.0.0", later).await, Ok("2.0.0".into()));
}
both!(max_updates_per_period_and_in_progress);

async fn safe_mode_one_first_and_halt_on_failure(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        safe_mode: true,
        ..Default::default()
    };
    let (gid, _) = fleet(&env, "2.0.0", policy).await;
    assert!(check(&env, "a", "1.0.0", t0()).await.is_ok());
    assert_eq!(
        check(&env, "b", "1.0.0", t0()).await,
        Err("safe_mode_waiting".into())
    );
    fail(&env, "a", "1.0.0", 10, t0() + Duration::minutes(3)).await;
    let g = stable(&env).await;
    assert_eq!(g.policy.halted_version.as_deref(), Some("2.0.0"));
    assert!(g.policy.halted_reason.unwrap().contains("safe mode"));
    assert_eq!(
        check(&env, "b", "1.0.0", t0() + Duration::minutes(4)).await,
        Err("rollout_halted".into())
    );
    // An admin resumes: the next node may try (safe mode still allows one at a time).
    resume(&env).await;
    let act = db::activity::list(&env.db, None, Some(gid), None, 50)
        .await
        .unwrap();
    assert!(act.iter().any(|a| a.kind == "rollout.halted"));
    assert!(act.iter().any(|a| a.kind == "rollout.resumed"));
}
both!(safe_mode_one_first_and_halt_on_failure);

async fn rollback_with_flag_bits_counts_as_failure(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        failure_threshold_percent: 40,
        ..Default::default()
    };
    let (gid, _) = fleet(&env, "2.0.0", policy).await;
    assert!(check(&env, "a", "1.0.0", t0()).await.is_ok());
    assert!(check(&env, "b", "1.0.0", t0()).await.is_ok());
    // a updates, reboots and reports success...
    complete(&env, "a", "1.0.0", "2.0.0", t0() + Duration::minutes(5)).await;
    // ... then b's new slot never gets marked good: GRUB falls back and update_engine reports
    // 3/0 with code 44 | non-production-URL flag (1 << 28) on its next check.
    let mut r = report("b", "1.0.0", t0() + Duration::minutes(30));
    r.events = vec![event(3, 0, Some(44 | (1 << 28)), "")];
    let ans = answer(&env, r).await;
    // 1 of 2 nodes failed = 50% > 40%: the rollout is halted, and b is answered noupdate
    // (never error-*), keeping the Error status the rollback gave it.
    assert_eq!(ans, Err("rolled_back".into()));
    let g = stable(&env).await;
    assert_eq!(g.policy.halted_version.as_deref(), Some("2.0.0"));
    assert_eq!(status_of(&env, "b").await, 3);
    assert_eq!(
        check(&env, "c", "1.0.0", t0() + Duration::minutes(31)).await,
        Err("rollout_halted".into())
    );
    let (failed,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM grants WHERE outcome = 3")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(failed, 1);
    let act = db::activity::list(&env.db, None, Some(gid), None, 50)
        .await
        .unwrap();
    let rb = act.iter().find(|a| a.kind == "instance.rollback").unwrap();
    assert!(rb.message.contains("error code 44"), "{}", rb.message);
    // After an admin resumes, b is still never offered the version it rolled back from (no
    // update/rollback loop) and keeps its Error status; other nodes go on.
    resume(&env).await;
    let later = t0() + Duration::minutes(40);
    assert_eq!(
        check(&env, "b", "1.0.0", later).await,
        Err("rolled_back".into())
    );
    assert_eq!(status_of(&env, "b").await, 3);
    assert_eq!(check(&env, "c", "1.0.0", later).await, Ok("2.0.0".into()));
    // A newer target is offered to b again.
    let newer = external_package(&env, "2.1.0").await;
    let change = ChannelUpdate {
        version: Some(Some(newer.version.clone())),
        floors: None,
    };
    db::channels::update(&env.db, "admin", APP, "stable", &change)
        .await
        .unwrap();
    assert_eq!(check(&env, "b", "1.0.0", later).await, Ok("2.1.0".into()));
}
both!(rollback_with_flag_bits_counts_as_failure);

async fn rollback_after_reported_success_still_fails_the_grant(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        failure_threshold_percent: 1,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    assert!(check(&env, "a", "1.0.0", t0()).await.is_ok());
    // The new version booted once and checked in (grant complete) ...
    complete(&env, "a", "1.0.0", "2.0.0", t0() + Duration::minutes(5)).await;
    // ... but was not marked good, so the next boot is the old slot, reporting a rollback.
    fail(&env, "a", "1.0.0", 44, t0() + Duration::minutes(9)).await;
    let g = stable(&env).await;
    assert_eq!(g.policy.halted_version.as_deref(), Some("2.0.0"));
}
both!(rollback_after_reported_success_still_fails_the_grant);

async fn update_timeout_counts_as_failure(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        update_timeout_secs: 600,
        failure_threshold_percent: 20,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    assert!(check(&env, "a", "1.0.0", t0()).await.is_ok());
    assert!(check(&env, "b", "2.0.0", t0()).await.is_err());
    // Within the timeout nothing is wrong.
    assert!(
        check(&env, "c", "1.0.0", t0() + Duration::seconds(599))
            .await
            .is_ok()
    );
    // a never completes: past the timeout it counts as failed (1 of 4 nodes = 25% > 20%).
    let ans = check(&env, "d", "1.0.0", t0() + Duration::seconds(601)).await;
    assert!(ans.unwrap_err().contains("rollout_halted"));
    let g = stable(&env).await;
    assert_eq!(g.policy.halted_version.as_deref(), Some("2.0.0"));
}
both!(update_timeout_counts_as_failure);

async fn maintenance_windows_in_time_zone(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        timezone: "Europe/Berlin".into(),
        maintenance_windows: vec![
            MaintenanceWindow {
                days: vec!["tue".into()],
                start: "11:00".into(),
                end: "13:00".into(),
            },
            MaintenanceWindow {
                days: vec!["sat".into()],
                start: "22:00".into(),
                end: "02:00".into(),
            },
        ],
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    // 10:00 UTC = 11:00 Berlin on Tuesday: inside.
    assert!(check(&env, "a", "1.0.0", t0()).await.is_ok());
    // 12:30 UTC = 13:30 Berlin: outside.
    assert_eq!(
        check(&env, "b", "1.0.0", t0() + Duration::minutes(150)).await,
        Err("outside_maintenance_window".into())
    );
    // Sunday 00:30 UTC = 01:30 Berlin, inside the Saturday window that crosses midnight.
    let sun = Utc.with_ymd_and_hms(2026, 11, 29, 0, 30, 0).unwrap();
    assert!(check(&env, "b", "1.0.0", sun).await.is_ok());
}
both!(maintenance_windows_in_time_zone);

async fn staged_wave_by_percentage(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        rollout_percent: 25,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy.clone()).await;
    let machines: Vec<String> = (0..120).map(|i| format!("node-{i:03}")).collect();
    let mut granted = 0;
    for m in &machines {
        let got = check(&env, m, "1.0.0", t0()).await;
        assert_eq!(
            got.is_ok(),
            wave_bucket(m) < 25,
            "{m} bucket {}",
            wave_bucket(m)
        );
        granted += i64::from(got.is_ok());
    }
    assert!(
        (10..=50).contains(&granted),
        "{granted} of 120 in a 25% wave"
    );
    // Widen the wave: the same nodes stay in, more join.
    let widened = RolloutPolicy {
        rollout_percent: 60,
        ..policy
    };
    set_policy(&env, widened).await.unwrap();
    let mut more = 0;
    for m in &machines {
        let got = check(&env, m, "1.0.0", t0() + Duration::minutes(1)).await;
        assert_eq!(got.is_ok(), wave_bucket(m) < 60);
        more += i64::from(got.is_ok());
    }
    assert!(more > granted);
}
both!(staged_wave_by_percentage);

async fn floors_come_first(b: Backend) {
    let env = env(b).await;
    fleet(&env, "3.0.0", RolloutPolicy::default()).await;
    let floor = external_package(&env, "2.0.0").await;
    let _other = external_package(&env, "2.5.0").await;
    let change = ChannelUpdate {
        version: None,
        floors: Some(vec![floor.version.clone()]),
    };
    db::channels::update(&env.db, "admin", APP, "stable", &change)
        .await
        .unwrap();
    assert_eq!(check(&env, "a", "1.0.0", t0()).await, Ok("2.0.0".into()));
    complete(&env, "a", "1.0.0", "2.0.0", t0() + Duration::minutes(10)).await;
    assert_eq!(
        check(&env, "a", "2.0.0", t0() + Duration::minutes(60)).await,
        Ok("3.0.0".into())
    );
    // A node already past the floor goes straight to the target.
    assert_eq!(check(&env, "b", "2.1.0", t0()).await, Ok("3.0.0".into()));
}
both!(floors_come_first);

async fn pinning_holds_a_group_at_a_version(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        pinned_version: Some("1.5.0".into()),
        ..Default::default()
    };
    // The pin names a package, so it exists before the group.
    application(&env).await;
    external_package(&env, "1.5.0").await;
    external_package(&env, "2.0.0").await;
    channel_and_group(&env, "2.0.0", policy).await;
    assert_eq!(check(&env, "a", "1.0.0", t0()).await, Ok("1.5.0".into()));
    assert_eq!(
        check(&env, "b", "1.5.0", t0()).await,
        Err("up_to_date".into())
    );
    // No downgrades: a node above the pin stays.
    assert_eq!(
        check(&env, "c", "2.0.0", t0()).await,
        Err("up_to_date".into())
    );
    // Unpin: the channel's version again.
    set_policy(&env, RolloutPolicy::default()).await.unwrap();
    assert_eq!(check(&env, "b", "1.5.0", t0()).await, Ok("2.0.0".into()));
}
both!(pinning_holds_a_group_at_a_version);

async fn unknown_application_writes_nothing(b: Backend) {
    let env = env(b).await;
    fleet(&env, "2.0.0", RolloutPolicy::default()).await;
    let mut r = report("a", "1.0.0", t0());
    r.application_id = "{00000000-0000-0000-0000-000000000000}".into();
    let out = handle_report(&env.db, &r).await.unwrap();
    assert_eq!(out, db::rollout::ReportOutcome::UnknownApplication);
    assert_eq!(count(&env.db, "instances").await, 0);
    assert_eq!(count(&env.db, "events").await, 0);
}
both!(unknown_application_writes_nothing);

async fn invalid_policy_changes_nothing(b: Backend) {
    let env = env(b).await;
    fleet(&env, "2.0.0", RolloutPolicy::default()).await;
    let before = stable(&env).await;
    let activity_before = count(&env.db, "activity").await;
    let bad = [
        RolloutPolicy {
            rollout_percent: 150,
            ..Default::default()
        },
        RolloutPolicy {
            timezone: "Nowhere/Land".into(),
            ..Default::default()
        },
        RolloutPolicy {
            maintenance_windows: vec![MaintenanceWindow {
                days: vec!["mon".into()],
                start: "9:7".into(),
                end: "10:00".into(),
            }],
            ..Default::default()
        },
    ];
    for p in bad {
        let err = set_policy(&env, p).await.unwrap_err();
        assert!(matches!(err, DbError::Policy(_)), "{err}");
    }
    assert_eq!(stable(&env).await, before);
    assert_eq!(count(&env.db, "activity").await, activity_before);
}
both!(invalid_policy_changes_nothing);

async fn concurrent_checks_respect_the_limit(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        max_updates_per_period: 3,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let db = env.db.clone();
        tasks.push(tokio::spawn(async move {
            let r = report(&format!("n{i}"), "1.0.0", t0());
            handle_report(&db, &r).await.unwrap()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        if let db::rollout::ReportOutcome::Recorded {
            check: Some(db::rollout::CheckAnswer::Update { .. }),
            ..
        } = t.await.unwrap()
        {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
    assert_eq!(count(&env.db, "grants").await, 3);
}
both!(concurrent_checks_respect_the_limit);

#[test]
fn documented_policy_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rollout-policy.md");
    let text = std::fs::read_to_string(path).unwrap();
    let block = text
        .split("```json\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let p: RolloutPolicy = serde_json::from_str(block).unwrap();
    p.validate().unwrap();
    assert_eq!(p.rollout_percent, 25);
    // Monday 23:30 Berlin (22:30 UTC in winter) is inside the Mon-Thu 22:00-04:00 window,
    // Friday 03:00 Berlin too (the Thursday window runs past midnight), Friday 12:00 is not.
    let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
    assert!(p.in_maintenance_window(at(23, 22, 30)));
    assert!(p.in_maintenance_window(at(27, 2, 0)));
    assert!(!p.in_maintenance_window(at(27, 11, 0)));
    assert!(p.in_maintenance_window(at(28, 8, 0)));
}
