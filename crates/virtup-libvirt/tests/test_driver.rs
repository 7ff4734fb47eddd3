//! Layer 2: the crate against libvirt's own `test:///default` driver (a real driver, in memory).
//!
//! Connections to test:///default opened while another is open share one in-memory hypervisor
//! (checked below), and tests run in parallel, so every test uses names of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use virtup_libvirt::*;

const URI: &str = "test:///default";
const POOL: &str = "default-pool";

fn uniq(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn hv() -> Hypervisor {
    Hypervisor::connect(URI).expect("test:///default is always available")
}

fn instance_spec(name: &str) -> DomainSpec {
    let mut spec = DomainSpec::new(name, 256, 1, VirtType::Qemu);
    spec.disks = vec![
        DiskSpec::disk(format!("/default-pool/{name}.qcow2"), ImageFormat::Qcow2),
        DiskSpec::cdrom(format!("/default-pool/{name}-config.iso")),
    ];
    spec.nics = vec![NicSpec::network(
        "default",
        Some("52:54:00:00:00:42".into()),
    )];
    let mut tag = VirtupTag::new(TagKind::Instance, name);
    tag.template = Some("debian-12".into());
    tag.generation = 1;
    tag.digest = Some("sha256:feed".into());
    tag.owned_volumes = vec![format!("{name}.qcow2"), format!("{name}-config.iso")];
    spec.metadata = Some(tag);
    spec
}

/// The built-in `test` domain must come through every test untouched.
fn assert_foreign_domain_untouched(hv: &Hypervisor) {
    let test = hv
        .domain("test")
        .unwrap()
        .expect("test driver ships domain `test`");
    assert_eq!(test.state, DomainState::Running);
    assert!(test.persistent);
    assert_eq!(test.tag, None);
}

#[test]
fn connections_share_state_only_while_one_is_open() {
    let name = uniq("shared");
    let a = hv();
    a.define(&DomainSpec::new(&name, 64, 1, VirtType::Qemu))
        .unwrap();
    let b = hv();
    assert!(
        b.domain(&name).unwrap().is_some(),
        "a second connection sees the first one's domain"
    );
    a.undefine(&name).unwrap();
    assert!(b.domain(&name).unwrap().is_none());
}

#[test]
fn domain_lifecycle_with_tag() {
    let hv = hv();
    let name = uniq("life");
    let spec = instance_spec(&name);
    assert_eq!(hv.domain(&name).unwrap(), None);

    hv.define(&spec).unwrap();
    let info = hv.domain(&name).unwrap().unwrap();
    assert_eq!(info.state, DomainState::ShutOff);
    assert!(info.persistent && !info.autostart);
    assert_eq!(info.tag, spec.metadata);

    hv.start(&name).unwrap();
    assert_eq!(
        hv.domain(&name).unwrap().unwrap().state,
        DomainState::Running
    );
    let listed = hv.list_domains().unwrap();
    let mine = listed.iter().find(|d| d.name == name).expect("listed");
    assert_eq!(
        (mine.state.clone(), &mine.tag),
        (DomainState::Running, &spec.metadata)
    );
    assert_eq!(mine.uuid, info.uuid);
    let test = listed
        .iter()
        .find(|d| d.name == "test")
        .expect("foreign domain listed");
    assert_eq!(test.tag, None);

    hv.shutdown(&name).unwrap();
    assert_eq!(
        hv.domain(&name).unwrap().unwrap().state,
        DomainState::ShutOff
    );
    hv.start(&name).unwrap();
    hv.destroy(&name).unwrap();
    assert_eq!(
        hv.domain(&name).unwrap().unwrap().state,
        DomainState::ShutOff
    );
    hv.destroy(&name)
        .expect("destroying a stopped domain is a no-op");

    hv.set_autostart(&name, true).unwrap();
    let listed = hv.list_domains().unwrap();
    assert!(listed.iter().find(|d| d.name == name).unwrap().autostart);

    // Redefining with a bumped generation replaces the tag.
    let mut v2 = spec.clone();
    v2.metadata.as_mut().unwrap().generation = 2;
    hv.define(&v2).unwrap();
    assert_eq!(hv.tag(&name).unwrap().unwrap().generation, 2);

    hv.undefine(&name).unwrap();
    assert_eq!(hv.domain(&name).unwrap(), None);
    assert!(!hv.list_domains().unwrap().iter().any(|d| d.name == name));
    assert_foreign_domain_untouched(&hv);
}

#[test]
fn xml_read_back_matches_the_spec() {
    let hv = hv();
    let name = uniq("xml");
    let spec = instance_spec(&name);
    hv.define(&spec).unwrap();
    let parsed = parse_domain_xml(&hv.xml(&name).unwrap()).unwrap();
    assert_eq!(parsed.name, name);
    assert_eq!((parsed.memory_mib, parsed.vcpus), (256, 1));
    assert_eq!(parsed.virt_type, "qemu");
    assert_eq!(parsed.macs(), vec!["52:54:00:00:00:42"]);
    assert_eq!(
        parsed.disk_paths(),
        vec![
            format!("/default-pool/{name}.qcow2"),
            format!("/default-pool/{name}-config.iso")
        ]
    );
    assert_eq!(parsed.tag, spec.metadata);
    assert_eq!(
        VirtupTag::from_domain_xml(&hv.inactive_xml(&name).unwrap()),
        spec.metadata
    );

    hv.update_memory_vcpus(&name, 1024, 3).unwrap();
    let parsed = parse_domain_xml(&hv.inactive_xml(&name).unwrap()).unwrap();
    assert_eq!((parsed.memory_mib, parsed.vcpus), (1024, 3));
    hv.update_memory_vcpus(&name, 128, 1).unwrap();
    let parsed = parse_domain_xml(&hv.inactive_xml(&name).unwrap()).unwrap();
    assert_eq!((parsed.memory_mib, parsed.vcpus), (128, 1));
    hv.undefine(&name).unwrap();
}

#[test]
fn set_tag_updates_in_place_and_foreign_metadata_survives() {
    let hv = hv();
    let name = uniq("retag");
    let mut spec = DomainSpec::new(&name, 64, 1, VirtType::Qemu);
    spec.metadata = Some(VirtupTag::new(TagKind::Template, "tpl"));
    let xml = spec.to_xml().unwrap().replace(
        "<metadata>",
        "<metadata><other:note xmlns:other=\"https://example.com/other\">keep me</other:note>",
    );
    hv.define_xml(&xml).unwrap();
    hv.start(&name).unwrap();

    let mut tag = hv.tag(&name).unwrap().unwrap();
    assert_eq!((tag.kind, tag.name.as_str()), (TagKind::Template, "tpl"));
    tag.generation = 9;
    tag.owned_volumes = vec!["tpl.qcow2".into()];
    hv.set_tag(&name, &tag).unwrap();
    assert_eq!(hv.tag(&name).unwrap(), Some(tag.clone()), "live view");
    let config = hv.inactive_xml(&name).unwrap();
    assert_eq!(
        VirtupTag::from_domain_xml(&config),
        Some(tag),
        "persistent view"
    );
    assert!(config.contains("keep me"), "{config}");

    hv.destroy(&name).unwrap();
    hv.undefine(&name).unwrap();
}

#[test]
fn hostile_names_round_trip_through_libvirt() {
    let hv = hv();
    // libvirt refuses '/' in names; everything XML-special must survive as text.
    let name = format!("{}&\"<'>x", uniq("esc"));
    let mut spec = DomainSpec::new(&name, 64, 1, VirtType::Qemu);
    let mut tag = VirtupTag::new(TagKind::Instance, "a\"><evil/>&amp;");
    tag.owned_volumes = vec!["</virtup:volume><evil/>".into()];
    spec.metadata = Some(tag.clone());
    hv.define(&spec).unwrap();
    let listed = hv.list_domains().unwrap();
    let mine = listed
        .iter()
        .find(|d| d.name == name)
        .expect("listed by its exact name");
    assert_eq!(mine.tag.as_ref(), Some(&tag));
    let xml = hv.xml(&name).unwrap();
    assert!(!xml.contains("<evil/>"), "{xml}");
    assert_eq!(parse_domain_xml(&xml).unwrap().name, name);
    hv.undefine(&name).unwrap();
}

#[test]
fn errors_name_the_object() {
    let hv = hv();
    let ghost = uniq("ghost");
    let cases: Vec<(Result<()>, String)> = vec![
        (hv.start(&ghost), format!("domain `{ghost}` not found")),
        (hv.undefine(&ghost), format!("domain `{ghost}` not found")),
        (
            hv.xml(&ghost).map(drop),
            format!("domain `{ghost}` not found"),
        ),
        (
            hv.define_xml("<domain type='qemu'><name>bad-one</name></domain>"),
            "failed to define domain `bad-one`: ".into(),
        ),
        (hv.start("test"), "failed to start domain `test`: ".into()),
        (
            hv.create_volume("no-such-pool", &VolumeSpec::new("v", 1, ImageFormat::Raw))
                .map(drop),
            "storage pool `no-such-pool` not found".into(),
        ),
        (
            hv.network_dhcp_leases("no-such-net").map(drop),
            "network `no-such-net` not found".into(),
        ),
        (
            Hypervisor::connect("bogus:///nowhere").map(drop),
            "failed to connect to `bogus:///nowhere`: ".into(),
        ),
    ];
    for (result, want) in cases {
        let msg = result.expect_err(&want).to_string();
        assert!(msg.starts_with(&want), "{msg:?} should start with {want:?}");
        assert!(!msg.ends_with('.'), "{msg}");
    }
    assert!(hv.start(&ghost).unwrap_err().is_not_found());
    assert_foreign_domain_untouched(&hv);
}

#[test]
fn read_only_connections_read_but_do_not_write() {
    let ro = Hypervisor::connect_read_only(URI).unwrap();
    assert!(ro.list_domains().unwrap().iter().any(|d| d.name == "test"));
    let err = ro
        .define(&DomainSpec::new(uniq("ro"), 64, 1, VirtType::Qemu))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("failed to define domain `ro-"), "{err}");
}

#[test]
fn volumes_create_clone_resize_delete() {
    let hv = hv();
    let pool = hv
        .pool(POOL)
        .unwrap()
        .expect("test driver ships default-pool");
    assert_eq!(
        (pool.path.as_deref(), pool.active, pool.kind.as_str()),
        (Some("/default-pool"), true, "dir")
    );
    assert_eq!(hv.pool("no-such-pool").unwrap(), None);
    assert!(hv.list_pools().unwrap().iter().any(|p| p.name == POOL));

    let foreign = uniq("foreign") + ".img";
    hv.create_volume(POOL, &VolumeSpec::new(&foreign, 1 << 20, ImageFormat::Raw))
        .unwrap();

    let base = uniq("base") + ".qcow2";
    let info = hv
        .create_volume(POOL, &VolumeSpec::new(&base, 8 << 30, ImageFormat::Qcow2))
        .unwrap();
    assert_eq!(info.path, format!("/default-pool/{base}"));
    assert_eq!(
        (info.capacity_bytes, info.format.as_deref()),
        (8 << 30, Some("qcow2"))
    );

    let overlay = uniq("overlay") + ".qcow2";
    let mut spec = VolumeSpec::new(&overlay, 10 << 30, ImageFormat::Qcow2);
    spec.backing = Some((info.path.clone(), ImageFormat::Qcow2));
    let ov = hv.create_volume(POOL, &spec).unwrap();
    assert_eq!(ov.capacity_bytes, 10 << 30);

    // Asked smaller than the source: the copy keeps the source's size.
    let copy = uniq("copy") + ".qcow2";
    let cl = hv
        .clone_volume(POOL, &base, &VolumeSpec::new(&copy, 1, ImageFormat::Qcow2))
        .unwrap();
    assert_eq!((cl.capacity_bytes, cl.backing.as_deref()), (8 << 30, None));
    let missing = hv
        .clone_volume(
            POOL,
            "no-such-volume",
            &VolumeSpec::new(uniq("x"), 1, ImageFormat::Raw),
        )
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");

    let names: Vec<String> = hv
        .list_volumes(POOL)
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    for n in [&foreign, &base, &overlay, &copy] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    assert_eq!(
        hv.volume_path(POOL, &copy).unwrap(),
        Some(format!("/default-pool/{copy}"))
    );
    assert_eq!(hv.volume_path(POOL, "no-such-volume").unwrap(), None);
    assert_eq!(hv.volume_info(POOL, "no-such-volume").unwrap(), None);

    // The test driver has no virStorageVolResize: growing reaches libvirt and fails cleanly,
    // the same size is a no-op, shrinking is refused before libvirt is asked.
    let grow = hv
        .resize_volume(POOL, &copy, 12 << 30)
        .unwrap_err()
        .to_string();
    assert!(
        grow.starts_with(&format!("failed to resize volume `{POOL}/{copy}`: ")),
        "{grow}"
    );
    hv.resize_volume(POOL, &copy, 8 << 30).unwrap();
    let shrink = hv
        .resize_volume(POOL, &copy, 1 << 30)
        .unwrap_err()
        .to_string();
    assert!(shrink.contains("never shrunk"), "{shrink}");

    for n in [&overlay, &copy, &base] {
        assert!(hv.delete_volume(POOL, n).unwrap(), "{n} deleted");
        assert!(!hv.delete_volume(POOL, n).unwrap(), "{n} already gone");
    }
    let left = hv
        .volume_info(POOL, &foreign)
        .unwrap()
        .expect("foreign volume untouched");
    assert_eq!(left.capacity_bytes, 1 << 20);
    hv.delete_volume(POOL, &foreign).unwrap();
    hv.refresh_pool(POOL).unwrap();
}

#[test]
fn upload_never_replaces_an_existing_volume() {
    // A volume named like a config disk that someone else made stays as it is.
    let hv = hv();
    let name = uniq("taken") + "-config.iso";
    hv.create_volume(POOL, &VolumeSpec::new(&name, 1 << 20, ImageFormat::Raw))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.iso");
    std::fs::write(&file, vec![7u8; 70_000]).unwrap();
    let err = hv
        .upload_volume(POOL, &name, &file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&name) && err.contains("exists already"),
        "{err}"
    );
    let left = hv.volume_info(POOL, &name).unwrap().expect("volume kept");
    assert_eq!(left.capacity_bytes, 1 << 20);
    hv.delete_volume(POOL, &name).unwrap();
}

#[test]
fn upload_failure_leaves_no_volume_behind() {
    // The test driver has no virStorageVolUpload; the error must be clean and leave nothing.
    let hv = hv();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.iso");
    std::fs::write(&file, vec![7u8; 70_000]).unwrap();
    let name = uniq("cfg") + ".iso";
    let err = hv
        .upload_volume(POOL, &name, &file)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("failed to upload into volume `{POOL}/{name}`: ")),
        "{err}"
    );
    assert_eq!(hv.volume_info(POOL, &name).unwrap(), None);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(hv
        .upload_volume(POOL, &name, &empty)
        .unwrap_err()
        .to_string()
        .contains("is empty"));
    let absent = hv
        .upload_volume(POOL, &name, &dir.path().join("nope"))
        .unwrap_err();
    assert!(
        absent.to_string().starts_with("failed to read `"),
        "{absent}"
    );
}

#[test]
fn addresses_and_leases() {
    let hv = hv();
    // The test driver invents 192.168.122.3 for the `test` domain's NIC for every libvirt source.
    const LIBVIRT_SOURCES: [AddressSource; 3] = [
        AddressSource::Lease,
        AddressSource::Agent,
        AddressSource::Arp,
    ];
    // `dns` is virtup's own source: libvirt is never asked, and says so.
    assert_eq!(
        hv.interface_addresses("test", AddressSource::Dns).unwrap(),
        vec![]
    );
    for source in LIBVIRT_SOURCES {
        let ifaces = hv.interface_addresses("test", source).unwrap();
        assert_eq!(
            ifaces[0].mac.as_deref(),
            Some("aa:bb:cc:dd:ee:ff"),
            "{source}"
        );
        assert_eq!(ifaces[0].addrs[0].ip.to_string(), "192.168.122.3");
    }
    let found = hv
        .find_address(
            "test",
            Some("AA:BB:CC:DD:EE:FF"),
            &[AddressSource::Agent, AddressSource::Lease],
        )
        .unwrap();
    let f = found.found.expect("address found");
    assert_eq!(
        (f.ip.to_string(), f.prefix, f.source),
        ("192.168.122.3".into(), 24, AddressSource::Agent)
    );

    let none = hv
        .find_address("test", Some("52:54:00:99:99:99"), &AddressSource::ALL)
        .unwrap();
    assert_eq!(none.found, None);
    assert_eq!(
        none.summary(),
        "lease: no lease for 52:54:00:99:99:99; agent: no address for 52:54:00:99:99:99; arp: no address for 52:54:00:99:99:99; dns: not a libvirt source"
    );

    // A defined but stopped domain: every source fails, each failure is kept as text.
    let name = uniq("addr");
    hv.define(&instance_spec(&name)).unwrap();
    let stopped = hv.find_address(&name, None, &LIBVIRT_SOURCES).unwrap();
    assert_eq!(stopped.found, None);
    assert_eq!(stopped.notes.len(), 3, "{:?}", stopped.notes);
    assert!(
        stopped.notes[1].starts_with("agent: "),
        "{:?}",
        stopped.notes
    );
    let err = hv
        .interface_addresses(&name, AddressSource::Agent)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "failed to read agent addresses of domain `{name}`: "
        )),
        "{err}"
    );
    hv.undefine(&name).unwrap();

    // The test driver does not implement DHCP leases: a clean, named error.
    let err = hv.network_dhcp_leases("default").unwrap_err().to_string();
    assert!(
        err.starts_with("failed to read DHCP leases of network `default`: "),
        "{err}"
    );
}

#[test]
fn virt_type_override_and_capabilities() {
    let hv = hv();
    let cases = [
        (Some("kvm"), Ok(VirtType::Kvm)),
        (Some(" QEMU "), Ok(VirtType::Qemu)),
        (
            Some("xen"),
            Err("invalid VIRTUP_VIRT_TYPE `xen`: expected `kvm` or `qemu`"),
        ),
        // Unset or empty: the test driver's capabilities offer only `test` guests, so no kvm.
        (Some(""), Ok(VirtType::Qemu)),
        (None, Ok(VirtType::Qemu)),
    ];
    for (env, want) in cases {
        match (choose_virt_type_with(&hv, env), want) {
            (Ok(choice), Ok(t)) => {
                assert_eq!(choice.virt_type, t, "{env:?}");
                assert!(!choice.reason.is_empty());
                if env.is_some_and(|e| !e.is_empty()) {
                    assert!(
                        choice.reason.contains("VIRTUP_VIRT_TYPE="),
                        "{}",
                        choice.reason
                    );
                } else {
                    assert!(choice.reason.contains("offers no kvm"), "{}", choice.reason);
                }
            }
            (Err(e), Err(msg)) => assert_eq!(e.to_string(), msg),
            (got, want) => panic!("{env:?}: got {got:?}, want {want:?}"),
        }
    }
    let caps = parse_capabilities(&hv.capabilities_xml().unwrap()).unwrap();
    assert_eq!((caps.arch.as_deref(), caps.kvm), (Some("i686"), false));
}

#[test]
fn kvm_probe_fails_cleanly_and_cleans_up() {
    // The test driver "runs" guests without executing anything: no console (kernel probe, when
    // this machine has a kernel in /boot) and no firmware reset (otherwise). Either way the
    // verdict must be "unusable", with a reason, and nothing may be left behind.
    let hv = hv();
    match probe_kvm(&hv, Duration::from_millis(300)).unwrap() {
        GuestProbe::Unusable { detail } | GuestProbe::Failed { detail } => {
            assert!(detail.contains("kvm test guest"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    let prefix = format!("virtup-kvm-probe-{}-", std::process::id());
    let leftovers: Vec<_> = hv
        .list_domains()
        .unwrap()
        .into_iter()
        .filter(|d| d.name.starts_with(&prefix))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let staged: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(
        staged.is_empty(),
        "kernel copies left in the temp dir: {staged:?}"
    );
}

/// The host's interfaces as libvirt's interface driver lists them (the test driver's host has eth1):
/// what `nics` checks a bridge or a macvtap device against before anything is made.
#[test]
fn host_interfaces_are_found_by_name_with_their_type_and_a_missing_one_is_told() {
    let hv = hv();
    assert_eq!(
        hv.host_interface_type("eth1").unwrap().as_deref(),
        Some("ethernet")
    );
    assert_eq!(hv.host_interface_type("br-none").unwrap(), None);
}
