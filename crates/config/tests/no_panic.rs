//! Hostile input never panics: arbitrary bytes, and valid configs with one value corrupted.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

const BASE: &str = r#"{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"https://c/a"}]}},
"storage":{"files":[{"path":"/etc/f","mode":420,"contents":{"source":"data:,x","verification":{"hash":"sha512-00"}}}],
"disks":[{"device":"/dev/vdb","partitions":[{"number":1,"sizeMiB":5,"startMiB":1}]}],
"links":[{"path":"/l","target":"/x","hard":true}]},
"systemd":{"units":[{"name":"a@b.service","enabled":true,"contents":"[Unit]\n"}]},
"passwd":{"users":[{"name":"u","uid":1}]}}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = keelson_config::parse(&bytes);
        let _ = keelson_config::yaml::translate(&String::from_utf8_lossy(&bytes), &Default::default());
    }

    #[test]
    fn corrupted_configs_do_not_panic(at in 0usize..BASE.len(), replacement in "[\\[\\]{}\",:0-9a-z/.@-]{0,4}") {
        let mut s = BASE.to_string();
        if s.is_char_boundary(at) {
            let end = (at + 2).min(s.len());
            if s.is_char_boundary(end) {
                s.replace_range(at..end, &replacement);
            }
        }
        if let Ok((cfg, _)) = keelson_config::parse(s.as_bytes()) {
            // Whatever parses must survive a round trip through its own JSON unchanged.
            let json = serde_json::to_vec(&cfg).unwrap();
            let (again, _) = keelson_config::parse(&json).unwrap();
            prop_assert_eq!(again, cfg);
        }
    }

    #[test]
    fn yaml_scalars_do_not_panic(key in "[a-z_]{1,12}", value in "[ -~]{0,24}") {
        let yaml = format!("variant: keelson\nversion: 1.0.0\nstorage:\n  files:\n    - path: /x\n      {key}: {value}\n");
        let _ = keelson_config::yaml::translate(&yaml, &Default::default());
    }
}
