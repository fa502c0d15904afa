-- OS-bound system extensions: files attached to one OS package (contract section A of issue 12).
-- Kept column-for-column identical to ../postgres/0004_package_extensions.sql.
-- `name` is the extension (systemd image) name; the Omaha answer lists the file as an extra
-- `<package name="{name}.raw">` and /packages/{package_id}/{name}.raw serves it.
CREATE TABLE package_extensions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    package_id  BIGINT NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    stored_path TEXT NOT NULL,               -- file name under the data dir
    size        BIGINT NOT NULL,
    sha1_hex    TEXT NOT NULL,
    sha256_hex  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (package_id, name)
);
