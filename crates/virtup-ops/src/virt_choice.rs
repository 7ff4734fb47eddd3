//! KVM or TCG for a hypervisor's guests, with a test guest's answer kept: where the capabilities
//! offer kvm, only a test guest shows whether it works (up to 8 s on a broken KVM), and its answer
//! holds while this machine, its KVM device, QEMU, libvirt and the probe stay as they were. So a
//! clone or template run asks once, not every time (as `tests/lab/lab` keeps its own answer).

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
/// Where Linux says which machine this is (a data dir on a shared home serves several).
const MACHINE_ID_FILE: &str = "/etc/machine-id";
/// The KVM device: reloading its module (another kvm module, other parameters) makes it anew.
const KVM_DEVICE: &str = "/dev/kvm";
/// Bumped when the test guest changes, so that answers of an older one are asked again.
const PROBE_REVISION: u32 = 1;

/// What an answer holds for: a hypervisor of this machine, in this boot, with this KVM device,
/// QEMU, libvirt and test guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Occasion {
    uri: String,
    machine_id: String,
    boot_id: String,
    /// `/dev/kvm`'s inode and change time: a reloaded module makes a new device node.
    kvm_device: String,
    /// libvirt's version number of the hypervisor (QEMU's, for the qemu driver).
    hypervisor_version: u64,
    libvirt_version: u64,
    probe_revision: u32,
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
    use std::os::unix::fs::MetadataExt as _;
    if !hv.is_local() {
        return None;
    }
    let read = |file| {
        std::fs::read_to_string(file)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let kvm = std::fs::metadata(KVM_DEVICE).ok()?;
    Some(Occasion {
        uri: hv.uri().to_owned(),
        machine_id: read(MACHINE_ID_FILE)?,
        boot_id: read(BOOT_ID_FILE)?,
        kvm_device: format!(
            "{}:{} {}.{:09}",
            kvm.dev(),
            kvm.ino(),
            kvm.ctime(),
            kvm.ctime_nsec()
        ),
        hypervisor_version: hv.hypervisor_version().ok()?,
        libvirt_version: hv.libvirt_version().ok()?,
        probe_revision: PROBE_REVISION,
    })
}

/// The answer kept for `occasion`, else `probe`'s, kept when a test guest showed it (a test guest
/// that could not be run says nothing that lasts). The kept file is a saving, never a record
/// anything depends on: one that cannot be read is probed over, and a lock that cannot be had in
/// time is probed without.
fn kept_or_probed(
    data: &DataDir,
    occasion: &Occasion,
    probe: impl FnOnce() -> Result<VirtTypeChoice>,
) -> Result<VirtTypeChoice> {
    let file = data.root().join(KEPT_FILE);
    let Ok(_lock) = data.lock(PROBE_LOCK, SHORT_LOCK_TIMEOUT) else {
        return probe();
    };
    let how_to_ask_again = |kept: &str| {
        format!(
            "{kept} `{}` until this machine, its KVM, QEMU or libvirt change; remove the file to ask again",
            file.display()
        )
    };
    let mut kept = read_kept(&file);
    if let Some(answer) = kept.answers.iter().find(|a| a.occasion == *occasion) {
        return Ok(VirtTypeChoice {
            virt_type: answer.virt_type,
            reason: format!(
                "{} ({})",
                answer.reason,
                how_to_ask_again("a test guest's answer kept in")
            ),
            shown_by_a_test_guest: true,
        });
    }
    let mut choice = probe()?;
    if !choice.shown_by_a_test_guest {
        return Ok(choice);
    }
    // Answers of this machine's other boots can never be used again; other machines' stay.
    kept.answers.retain(|a| {
        a.occasion.machine_id != occasion.machine_id || a.occasion.boot_id == occasion.boot_id
    });
    kept.answers.push(KeptAnswer {
        occasion: occasion.clone(),
        virt_type: choice.virt_type,
        reason: choice.reason.clone(),
    });
    // Not kept costs a test guest next time, nothing else.
    if virtup_core::datadir::write_json(&file, &kept, 0o600).is_ok() {
        choice.reason = format!(
            "{} ({})",
            choice.reason,
            how_to_ask_again("kept from now on in")
        );
    }
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
            machine_id: "m1".into(),
            boot_id: boot.into(),
            kvm_device: "5:123 1700000000.000000000".into(),
            hypervisor_version: 10_000_002,
            libvirt_version: 11_003_000,
            probe_revision: PROBE_REVISION,
        }
    }

    fn answer(virt_type: VirtType, shown: bool) -> Result<VirtTypeChoice> {
        Ok(VirtTypeChoice {
            virt_type,
            reason: "a kvm test guest printed nothing".into(),
            shown_by_a_test_guest: shown,
        })
    }

    #[test]
    fn a_test_guest_s_answer_is_kept_while_the_host_stays_as_it_was() {
        let dir = tempfile::TempDir::new().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        let probes = Cell::new(0);
        let probe = |virt_type, shown| {
            probes.set(probes.get() + 1);
            answer(virt_type, shown)
        };
        let first = kept_or_probed(&data, &occasion("b1"), || probe(VirtType::Qemu, true)).unwrap();
        assert_eq!((first.virt_type, probes.get()), (VirtType::Qemu, 1));
        // The run that asked says so too, and how to ask again.
        assert!(first.reason.contains(KEPT_FILE), "{}", first.reason);
        let file = data.root().join(KEPT_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = kept_or_probed(&data, &occasion("b1"), || probe(VirtType::Kvm, true)).unwrap();
        assert_eq!((again.virt_type, probes.get()), (VirtType::Qemu, 1));
        assert!(
            again.reason.contains("printed nothing") && again.reason.contains("remove the file"),
            "{}",
            again.reason
        );
        // Anything the answer depends on changed: asked again.
        let changes: [fn(&mut Occasion); 5] = [
            |o| o.hypervisor_version += 1,
            |o| o.libvirt_version += 1,
            |o| o.kvm_device = "5:124 1700000001.000000000".into(),
            |o| o.probe_revision += 1,
            |o| o.uri = "qemu:///session".into(),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut changed = occasion("b1");
            change(&mut changed);
            kept_or_probed(&data, &changed, || probe(VirtType::Kvm, true)).unwrap();
            assert_eq!(probes.get(), 2 + i, "change {i}");
        }
        // A new boot forgets this machine's old answers, not another machine's (a shared home).
        let mut elsewhere = occasion("x1");
        elsewhere.machine_id = "m2".into();
        kept_or_probed(&data, &elsewhere, || probe(VirtType::Kvm, true)).unwrap();
        kept_or_probed(&data, &occasion("b2"), || probe(VirtType::Kvm, true)).unwrap();
        assert_eq!(read_kept(&file).answers.len(), 2);
        let before = probes.get();
        kept_or_probed(&data, &elsewhere, || probe(VirtType::Kvm, true)).unwrap();
        assert_eq!(probes.get(), before);
        // A damaged file is asked over and rewritten, never an error.
        std::fs::write(&file, "{not json").unwrap();
        kept_or_probed(&data, &occasion("b2"), || probe(VirtType::Kvm, true)).unwrap();
        assert_eq!(
            (probes.get(), read_kept(&file).answers.len()),
            (before + 1, 1)
        );
    }

    #[test]
    fn a_test_guest_that_could_not_run_says_nothing_that_lasts() {
        let dir = tempfile::TempDir::new().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        // Out of memory, a daemon restarting: TCG this once, asked again next time.
        let once =
            kept_or_probed(&data, &occasion("b1"), || answer(VirtType::Qemu, false)).unwrap();
        assert_eq!(once.virt_type, VirtType::Qemu);
        let next = kept_or_probed(&data, &occasion("b1"), || answer(VirtType::Kvm, true)).unwrap();
        assert_eq!(next.virt_type, VirtType::Kvm);
        // An error keeps nothing either.
        let dir = tempfile::TempDir::new().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        assert!(
            kept_or_probed(&data, &occasion("b1"), || anyhow::bail!("libvirt is gone")).is_err()
        );
        assert!(!data.root().join(KEPT_FILE).exists());
    }

    #[test]
    fn parallel_runs_share_one_test_guest() {
        let dir = tempfile::TempDir::new().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        let probes = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    kept_or_probed(&data, &occasion("b1"), || {
                        probes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        answer(VirtType::Qemu, true)
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(probes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
