//! KVM or TCG for a hypervisor's guests, with the test guest's answer kept per boot of this machine:
//! where the capabilities offer kvm, only a test guest shows whether it works (up to 8 s on a
//! broken KVM), and that answer cannot change until the machine reboots or its QEMU changes. So a
//! clone or template run asks once per boot, not every time (as `tests/lab/lab` keeps its own).

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use virtup_core::{DataDir, VirtType};
use virtup_libvirt::{Hypervisor, VirtTypeChoice};

use crate::context::SHORT_LOCK_TIMEOUT;

/// `<data dir>/virt-type.json`: the answers of this boot.
const KEPT_FILE: &str = "virt-type.json";
/// Taken while a test guest runs, so that parallel clones boot one, not one each. The space keeps
/// it apart from every instance or template lock (their names have none).
const PROBE_LOCK: &str = "virt-type probe";
/// Where Linux says which boot this is.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// What an answer holds for: a hypervisor of this machine, in this boot, with this QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Occasion {
    uri: String,
    boot_id: String,
    /// libvirt's version number of the hypervisor (QEMU's, for the qemu driver).
    hypervisor_version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptAnswer {
    #[serde(flatten)]
    occasion: Occasion,
    virt_type: VirtType,
    reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    #[serde(default)]
    answers: Vec<KeptAnswer>,
}

/// The accelerator for `hv`'s guests: the override or the capabilities when they settle it, else
/// the answer a test guest gave in this boot, else a new test guest's (then kept). A remote
/// hypervisor's boot cannot be read through libvirt, so its test guest runs every time.
pub(crate) fn choose(hv: &Hypervisor, data: &DataDir) -> Result<VirtTypeChoice> {
    if let Some(choice) = virtup_libvirt::choose_virt_type_without_probe(hv)? {
        return Ok(choice);
    }
    let probe = || Ok(virtup_libvirt::choose_virt_type(hv)?);
    match occasion(hv) {
        Some(occasion) => kept_or_probed(data, &occasion, probe),
        None => probe(),
    }
}

fn occasion(hv: &Hypervisor) -> Option<Occasion> {
    if !hv.is_local() {
        return None;
    }
    let boot_id = std::fs::read_to_string(BOOT_ID_FILE).ok()?;
    Some(Occasion {
        uri: hv.uri().to_owned(),
        boot_id: boot_id.trim().to_owned(),
        hypervisor_version: hv.hypervisor_version().ok()?,
    })
}

/// The answer kept for `occasion`, else `probe`'s, kept for the rest of this boot. A kept file
/// that cannot be read is probed over: it is a saving, never a record anything depends on.
fn kept_or_probed(
    data: &DataDir,
    occasion: &Occasion,
    probe: impl FnOnce() -> Result<VirtTypeChoice>,
) -> Result<VirtTypeChoice> {
    let file = data.root().join(KEPT_FILE);
    let _lock = data.lock(PROBE_LOCK, SHORT_LOCK_TIMEOUT)?;
    let mut kept = read_kept(&file);
    if let Some(answer) = kept.answers.iter().find(|a| a.occasion == *occasion) {
        return Ok(VirtTypeChoice {
            virt_type: answer.virt_type,
            reason: format!(
                "{} (a test guest's answer kept for this boot in `{}`; remove it to ask again)",
                answer.reason,
                file.display()
            ),
        });
    }
    let choice = probe()?;
    // Answers of other boots can never be used again.
    kept.answers
        .retain(|a| a.occasion.boot_id == occasion.boot_id);
    kept.answers.push(KeptAnswer {
        occasion: occasion.clone(),
        virt_type: choice.virt_type,
        reason: choice.reason.clone(),
    });
    // Not kept costs a test guest next time, nothing else.
    let _ = virtup_core::datadir::write_json(&file, &kept, 0o600);
    Ok(choice)
}

fn read_kept(file: &Path) -> Kept {
    virtup_core::datadir::read_json_if_exists::<Kept>(file)
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn occasion(boot: &str) -> Occasion {
        Occasion {
            uri: "qemu:///system".into(),
            boot_id: boot.into(),
            hypervisor_version: 10_000_002,
        }
    }

    #[test]
    fn a_test_guest_runs_once_per_boot_and_qemu() {
        let dir = tempfile::TempDir::new().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        let probes = Cell::new(0);
        let probe = |virt_type| {
            probes.set(probes.get() + 1);
            Ok(VirtTypeChoice {
                virt_type,
                reason: "a kvm test guest printed nothing".into(),
            })
        };
        let first = kept_or_probed(&data, &occasion("b1"), || probe(VirtType::Qemu)).unwrap();
        assert_eq!((first.virt_type, probes.get()), (VirtType::Qemu, 1));
        let file = data.root().join(KEPT_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Same boot, same QEMU: kept, and the reason says where, and how to ask again.
        let again = kept_or_probed(&data, &occasion("b1"), || probe(VirtType::Kvm)).unwrap();
        assert_eq!((again.virt_type, probes.get()), (VirtType::Qemu, 1));
        assert!(
            again.reason.contains("printed nothing") && again.reason.contains(KEPT_FILE),
            "{}",
            again.reason
        );
        // A new QEMU asks again; so does a new boot, which forgets the old boot's answers.
        let mut upgraded = occasion("b1");
        upgraded.hypervisor_version += 1;
        let new_qemu = kept_or_probed(&data, &upgraded, || probe(VirtType::Kvm)).unwrap();
        assert_eq!((new_qemu.virt_type, probes.get()), (VirtType::Kvm, 2));
        let rebooted = kept_or_probed(&data, &occasion("b2"), || probe(VirtType::Kvm)).unwrap();
        assert_eq!((rebooted.virt_type, probes.get()), (VirtType::Kvm, 3));
        assert_eq!(read_kept(&file).answers.len(), 1);
        // A damaged file is asked over and rewritten, never an error.
        std::fs::write(&file, "{not json").unwrap();
        let repaired = kept_or_probed(&data, &occasion("b2"), || probe(VirtType::Kvm)).unwrap();
        assert_eq!((repaired.virt_type, probes.get()), (VirtType::Kvm, 4));
        assert_eq!(read_kept(&file).answers.len(), 1);
        // A failed test guest keeps nothing.
        let failed = kept_or_probed(&data, &occasion("b3"), || anyhow::bail!("libvirt is gone"));
        assert!(failed.is_err());
        assert_eq!(read_kept(&file).answers.len(), 1);
    }
}
