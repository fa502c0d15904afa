//! keelson-server: Omaha update server with rollout control, REST API, dashboard and FleetLock.
