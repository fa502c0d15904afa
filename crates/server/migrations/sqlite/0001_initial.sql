-- Keelson server schema (SQLite). Kept column-for-column identical to ../postgres/0001_initial.sql:
-- the queries are shared (sqlx::Any), so only DDL spellings differ (id columns, types).
-- Timestamps are unix seconds (BIGINT) so both backends compare them the same way.
-- Flags are BIGINT 0/1 because the Any driver decodes SQLite booleans as integers.

CREATE TABLE applications (
    id          TEXT PRIMARY KEY,            -- lowercase app id without braces
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE TABLE packages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    version        TEXT NOT NULL,
    filename       TEXT NOT NULL,
    url            TEXT,                     -- external codebase URL (ends with '/'); NULL when stored here
    stored_path    TEXT,                     -- file name under the data dir; NULL for external packages
    size           BIGINT NOT NULL,
    sha1_hex       TEXT NOT NULL,
    sha256_hex     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (application_id, version)
);

CREATE TABLE channels (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    package_id     BIGINT REFERENCES packages(id) ON DELETE SET NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (application_id, name)
);

CREATE TABLE channel_floors (
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    package_id BIGINT NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    PRIMARY KEY (channel_id, package_id)
);

CREATE TABLE groups (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id            TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    name                      TEXT NOT NULL,
    track                     TEXT NOT NULL,
    channel_id                BIGINT REFERENCES channels(id) ON DELETE SET NULL,
    updates_enabled           BIGINT NOT NULL DEFAULT 1,
    safe_mode                 BIGINT NOT NULL DEFAULT 0,
    max_updates_per_period    BIGINT NOT NULL DEFAULT 1000000,
    period_secs               BIGINT NOT NULL DEFAULT 3600,
    update_timeout_secs       BIGINT NOT NULL DEFAULT 3600,
    timezone                  TEXT NOT NULL DEFAULT 'UTC',
    maintenance_windows       TEXT NOT NULL DEFAULT '[]',   -- JSON list of weekly windows
    rollout_percent           BIGINT NOT NULL DEFAULT 100,
    failure_threshold_percent BIGINT NOT NULL DEFAULT 100,
    pinned_version            TEXT,
    fleetlock_slots           BIGINT NOT NULL DEFAULT 1,
    halted_version            TEXT,                         -- rollout to this version is halted
    halted_reason             TEXT,
    lock_seq                  BIGINT NOT NULL DEFAULT 0,    -- bumped to serialize grant decisions
    created_at                BIGINT NOT NULL,
    UNIQUE (application_id, name),
    UNIQUE (application_id, track)
);

CREATE TABLE instances (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id         TEXT NOT NULL,
    application_id     TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    group_id           BIGINT REFERENCES groups(id) ON DELETE SET NULL,
    version            TEXT NOT NULL,
    status             BIGINT NOT NULL DEFAULT 1,
    ip                 TEXT NOT NULL DEFAULT '',
    alias              TEXT NOT NULL DEFAULT '',
    oem                TEXT NOT NULL DEFAULT '',
    aleph_version      TEXT NOT NULL DEFAULT '',
    last_check         BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    UNIQUE (machine_id, application_id)
);
CREATE INDEX instances_group ON instances (group_id, version);

CREATE TABLE instance_status_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id BIGINT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    status      BIGINT NOT NULL,
    version     TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE INDEX status_history_instance ON instance_status_history (instance_id, id);

-- One row per update granted: the rollout accounting (period limits, timeouts, failures).
CREATE TABLE grants (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id        BIGINT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    instance_id     BIGINT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    from_version    TEXT NOT NULL,
    to_version      TEXT NOT NULL,
    rollout_version TEXT NOT NULL,           -- the group's target when granted (floors step towards it)
    outcome         BIGINT NOT NULL DEFAULT 0, -- 0 pending, 1 succeeded, 2 failed
    granted_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX grants_group ON grants (group_id, rollout_version, outcome);
CREATE INDEX grants_group_time ON grants (group_id, granted_at);
CREATE INDEX grants_instance ON grants (instance_id, id);

CREATE TABLE events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id      BIGINT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    event_type       BIGINT NOT NULL,
    event_result     BIGINT NOT NULL,
    error_code       BIGINT,
    version          TEXT NOT NULL,
    previous_version TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL
);
CREATE INDEX events_instance ON events (instance_id, id);

CREATE TABLE activity (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at     BIGINT NOT NULL,
    severity       TEXT NOT NULL,            -- info | warning | error
    kind           TEXT NOT NULL,            -- e.g. group.updated, rollout.halted
    actor          TEXT NOT NULL DEFAULT '', -- token id, 'omaha', 'fleetlock'
    application_id TEXT,
    group_id       BIGINT,
    version        TEXT,
    message        TEXT NOT NULL
);
CREATE INDEX activity_time ON activity (id);

CREATE TABLE fleetlock_holders (
    lock_group  TEXT NOT NULL,
    holder_id   TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    PRIMARY KEY (lock_group, holder_id)
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL,               -- admin | viewer
    hash        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    last_used   BIGINT
);
