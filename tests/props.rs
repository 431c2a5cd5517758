//! Bad input never panics: property tests of the config loader and every
//! parser of user or server text. A normal run tries 256 cases each (or
//! `PROPTEST_CASES`); the README records a run of a million.

use std::path::Path;

use proptest::prelude::*;
use replwarden::config;
use replwarden::conninfo;
use replwarden::policy::{AddrPattern, Glob};
use replwarden::syncrep;
use replwarden::units::{parse_duration, parse_size, ByteSize};

/// Text that looks like a config: real keys and sections, plausible and
/// broken values, in any order.
fn config_like() -> impl Strategy<Value = String> {
    // Every key the loader accepts (the conditions from their table), in
    // any section, and one it does not.
    let mut keys: Vec<String> = config::accepted_keys()
        .iter()
        .filter_map(|k| k.split_once('.').map(|(_, key)| key.to_string()))
        .filter(|k| k != "*")
        .collect();
    keys.sort();
    keys.dedup();
    keys.push("bogus".to_string());
    let line = prop_oneof![
        Just("[postgres]".to_string()),
        Just("[daemon]".to_string()),
        Just("[[rule]]".to_string()),
        Just("[protect]".to_string()),
        Just("[[protect]]".to_string()),
        Just("[limits]".to_string()),
        Just("[sync_guard]".to_string()),
        Just("[metrics]".to_string()),
        (
            prop::sample::select(keys),
            prop_oneof![
                "\"[a-z0-9 .:/*!_-]{0,12}\"".prop_map(|s| s),
                Just("\"5m\"".to_string()),
                Just("\"1GB\"".to_string()),
                Just("\"0s\"".to_string()),
                Just("[\"rogue_*\", \"!x\"]".to_string()),
                Just("[\"10.0.0.0/8\", \"local\"]".to_string()),
                Just("[]".to_string()),
                Just("true".to_string()),
                (-5i64..1_000_000).prop_map(|n| n.to_string()),
                Just("{ a = 1 }".to_string()),
                Just("\"terminate\"".to_string()),
            ],
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        ".{0,20}",
    ];
    prop::collection::vec(line, 0..25).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn the_config_loader_never_panics_on_any_text(text in ".{0,300}") {
        let _ = config::parse(Path::new("p.toml"), &text);
    }

    #[test]
    fn the_config_loader_never_panics_on_config_like_text(text in config_like()) {
        match config::parse(Path::new("p.toml"), &text) {
            Ok(c) => prop_assert!(c.daemon.interval > std::time::Duration::ZERO),
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert!(e.to_string().starts_with("p.toml"));
                }
            }
        }
    }

    #[test]
    fn parsers_never_panic(text in ".{0,64}") {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        let _ = Glob::parse(&text);
        let _ = AddrPattern::parse(&text);
        let _ = syncrep::parse(&text);
        let _ = conninfo::resolve(&text, &|_| None, &|_| None);
    }

    #[test]
    fn sizes_parse_back(n in 0u64..(1 << 40)) {
        prop_assert_eq!(parse_size(&format!("{n}")), Ok(ByteSize(n)));
        prop_assert_eq!(parse_size(&format!("{n}kB")), Ok(ByteSize(n * 1024)));
    }

    #[test]
    fn durations_parse_back(ms in 1u64..(1 << 40)) {
        prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(std::time::Duration::from_millis(ms)));
    }

    #[test]
    fn synchronous_standby_names_from_parts(
        method in prop::sample::select(vec!["FIRST", "ANY", "first", ""]),
        n in 1u32..5,
        names in prop::collection::vec("[a-z_][a-z0-9_]{0,8}|\"[A-Za-z ]{1,8}\"|\\*", 1..5),
    ) {
        let text = format!("{method} {n} ({})", names.join(", "));
        let spec = syncrep::parse(&text).unwrap().unwrap();
        prop_assert_eq!(spec.num_sync, n);
    }
}
