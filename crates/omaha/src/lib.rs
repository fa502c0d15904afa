//! Omaha v3 protocol types as spoken by Flatcar's update_engine and Nebraska.
