//! Fuzz target: bytes as `instance/<name>.json` and as `macaddrs.json`, read by the data dir's strict JSON readers.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use virtup_core::instance_meta::parse_file;
use virtup_core::macaddrs::normalize_mac;
use virtup_core::MacAddrs;

const NAME: &str = "web1";

fuzz_target!(|data: &[u8]| {
    let meta_path = Path::new("/var/lib/virt-up/instance/web1.json");
    match parse_file(meta_path, NAME, data) {
        Ok(meta) => {
            assert_eq!(meta.name, NAME);
            let _ = meta.is_virt_up_legacy();
            // What virtup writes it must read back unchanged.
            let written = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
            let again = parse_file(meta_path, NAME, &written).expect("written metadata reads back");
            assert_eq!(again, meta);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    let macs_path = Path::new("/var/lib/virt-up/macaddrs.json");
    match MacAddrs::parse(macs_path, data) {
        Ok(macs) => {
            for (name, mac) in macs.entries() {
                assert_eq!(normalize_mac(mac).as_deref(), Some(mac.as_str()), "{name}");
                assert_eq!(macs.get(name), Some(mac.as_str()));
            }
            let written = serde_json::to_vec(macs.entries()).expect("macs serialize");
            let again = MacAddrs::parse(macs_path, &written).expect("written macs read back");
            assert_eq!(again, macs);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
