//! GPT disk images for Keelson: DPS partition types, A/B usr slots, ChromeOS/Flatcar priority bits.
