//! Tests of the host operation: the planner table-driven, the KVM report, and converge against libvirt's test driver.

use super::*;
use crate::Quiet;
use std::cell::Cell;

fn request() -> HostRequest {
    HostRequest {
        uri: "test:///default".into(),
        pool: "vpool".into(),
        pool_path: "/vpool".into(),
        network: NatNetworkSpec {
            name: "vnet".into(),
            bridge: "vbr0".into(),
            address: "10.9.0.1".into(),
            netmask: "255.255.255.0".into(),
            dhcp_start: "10.9.0.2".into(),
            dhcp_end: "10.9.0.254".into(),
        },
        probe_kvm: false,
    }
}

fn pool(active: bool, autostart: bool) -> Option<PoolState> {
    Some(PoolState {
        name: "vpool".into(),
        path: Some("/elsewhere".into()),
        active,
        autostart,
    })
}

fn network(active: bool, autostart: bool) -> Option<NetworkState> {
    Some(NetworkState {
        name: "vnet".into(),
        bridge: Some("virbr7".into()),
        active,
        autostart,
    })
}

/// Each row: what exists, and the actions the plan lists, in order.
#[test]
fn the_plan_lists_exactly_what_is_missing() {
    let all = [
        "define directory pool `vpool` at `/vpool`",
        "start pool `vpool`",
        "autostart pool `vpool`",
        "define NAT network `vnet` on bridge `vbr0` (10.9.0.1/255.255.255.0)",
        "start network `vnet`",
        "autostart network `vnet`",
    ];
    let table: [(Option<PoolState>, Option<NetworkState>, &[&str]); 6] = [
        (None, None, &all),
        (pool(true, true), network(true, true), &[]),
        (pool(false, true), network(true, true), &[all[1]]),
        (pool(true, false), network(true, true), &[all[2]]),
        (pool(true, true), network(false, false), &all[4..]),
        (
            pool(false, false),
            None,
            &[all[1], all[2], all[3], all[4], all[5]],
        ),
    ];
    for (pool, network, expected) in table {
        let observed = HostState { pool, network };
        let actions: Vec<String> = plan(&request(), &observed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(actions, expected, "observed {observed:?}");
    }
}

#[test]
fn the_desired_state_keeps_what_exists_and_requests_the_rest() {
    let req = request();
    let fresh = HostState::desired(
        &req,
        &HostState {
            pool: None,
            network: None,
        },
    );
    assert_eq!(fresh.pool.as_ref().unwrap().path.as_deref(), Some("/vpool"));
    assert_eq!(
        fresh.network.as_ref().unwrap().bridge.as_deref(),
        Some("vbr0")
    );
    let kept = HostState::desired(
        &req,
        &HostState {
            pool: pool(false, false),
            network: network(false, false),
        },
    );
    let (p, n) = (kept.pool.unwrap(), kept.network.unwrap());
    assert_eq!(p.path.as_deref(), Some("/elsewhere"));
    assert_eq!(n.bridge.as_deref(), Some("virbr7"));
    assert!(p.active && p.autostart && n.active && n.autostart);
    // A pool libvirt reports without a target path (not a directory pool) keeps none: no
    // invented change in the diff of a run that changes nothing.
    let mut pathless = pool(true, true).unwrap();
    pathless.path = None;
    let observed = HostState {
        pool: Some(pathless),
        network: network(true, true),
    };
    assert_eq!(HostState::desired(&req, &observed), observed);
}

fn choice(virt_type: VirtType) -> VirtTypeChoice {
    VirtTypeChoice {
        virt_type,
        reason: "because".into(),
        shown_by_a_test_guest: true,
    }
}

#[test]
fn a_check_run_never_boots_a_probe() {
    let no_probe = || -> Result<VirtTypeChoice> { panic!("check mode booted the probe guest") };
    // Capabilities alone cannot tell: not probed, with a warning that says so.
    let (virt, warning) = virt_report("qemu:///system", Mode::Check, None, no_probe).unwrap();
    assert_eq!(virt.virt_type, None);
    assert!(
        virt.reason.starts_with("not probed in check mode"),
        "{}",
        virt.reason
    );
    assert!(
        warning
            .as_deref()
            .is_some_and(|w| w.contains("not probed in check mode")),
        "{warning:?}"
    );
    // What the override or the capabilities decide is reported in check mode too.
    let (virt, warning) = virt_report(
        "test:///default",
        Mode::Check,
        Some(choice(VirtType::Qemu)),
        no_probe,
    )
    .unwrap();
    assert_eq!(virt.virt_type, Some(VirtType::Qemu));
    assert!(warning.unwrap().contains("TCG"));
    let (virt, warning) = virt_report(
        "qemu:///system",
        Mode::Check,
        Some(choice(VirtType::Kvm)),
        no_probe,
    )
    .unwrap();
    assert_eq!(virt.virt_type, Some(VirtType::Kvm));
    assert_eq!(warning, None);
}

#[test]
fn a_real_run_probes_when_the_capabilities_cannot_tell() {
    let mut probed = false;
    let (virt, warning) = virt_report("qemu:///system", Mode::Apply, None, || {
        probed = true;
        Ok(choice(VirtType::Kvm))
    })
    .unwrap();
    assert!(probed);
    assert_eq!(virt.virt_type, Some(VirtType::Kvm));
    assert_eq!(warning, None);
    let (virt, _) = virt_report(
        "qemu:///system",
        Mode::Apply,
        Some(choice(VirtType::Qemu)),
        || panic!("decided without a probe"),
    )
    .unwrap();
    assert_eq!(virt.virt_type, Some(VirtType::Qemu));
}

/// Counts the side effects announced to it.
#[derive(Default)]
struct Counting(Cell<usize>);

impl Reporter for Counting {
    fn changed(&self) {
        self.0.set(self.0.get() + 1);
    }
}

/// libvirt's test driver keeps its state per connection: check, apply, check again on one.
#[test]
fn check_then_apply_then_nothing_to_do() {
    let hv = Hypervisor::connect("test:///default").unwrap();
    let req = request();
    let counting = Counting::default();

    let check = converge(&hv, &req, Mode::Check, &counting).unwrap();
    assert_eq!(check.actions.len(), 6, "{:?}", check.actions);
    assert_eq!(counting.0.get(), 0, "check mode announced a side effect");
    assert_eq!(check.pool_writable, None);
    assert_eq!(HostState::observe(&hv, &req).unwrap(), check.before);
    assert_eq!(check.before.pool, None, "check mode defined the pool");
    assert_eq!(check.after, check.before);

    let applied = converge(&hv, &req, Mode::Apply, &counting).unwrap();
    assert_eq!(applied.actions, check.actions);
    assert_eq!(counting.0.get(), 6);
    assert_eq!(applied.pool_writable, Some(true));
    assert_eq!(
        applied.after, applied.desired,
        "apply did not reach the planned state"
    );
    assert_eq!(applied.desired, check.desired);

    let again = converge(&hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(!again.changed(), "{:?}", again.actions);
    assert_eq!(again.before, applied.after);
    assert_eq!(again.virt.reason, "not probed (probe_kvm=false)");
}

/// The test driver offers no kvm: the capabilities decide without a guest, in check mode too.
#[test]
fn the_test_driver_is_decided_as_qemu_without_a_probe() {
    let hv = Hypervisor::connect("test:///default").unwrap();
    let mut req = request();
    req.probe_kvm = true;
    let report = converge(&hv, &req, Mode::Check, &Quiet).unwrap();
    assert_eq!(report.virt.virt_type, Some(VirtType::Qemu));
    assert!(report.warnings.iter().any(|w| w.contains("TCG")));
}
