//! Choosing kvm or qemu (TCG): environment override, then capabilities, then a real test guest.
//!
//! libvirt reports kvm wherever /dev/kvm exists, including hosts where KVM cannot run an ordinary
//! guest. On the nested PVM lab host a kvm guest even *looks* fine: it starts, stays "running"
//! and gets through SeaBIOS, but a Linux kernel never prints a line. So an offered kvm is only
//! believed after a tiny transient kvm guest has booted a real kernel far enough to panic.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::stream::Stream;
use virt::sys;

use crate::domain_xml::{CpuMode, VirtType};
use crate::error::{LibvirtError, Result};
use crate::hypervisor::{is_unsupported, Hypervisor};
use crate::xml::{self, check_text, XmlWriter};

/// Environment variable that forces the accelerator (`kvm` or `qemu`).
pub use virtup_core::VIRT_TYPE_ENV;

/// Upper bound for the test guest. Under TCG the kernel probe needs about 5 s on the lab host;
/// a working kvm needs a fraction of that, so only a broken kvm waits this long.
pub const PROBE_WATCH: Duration = Duration::from_secs(8);
const PROBE_POLL: Duration = Duration::from_millis(100);

/// The accelerator to use and why, worded for a one-time warning when it is qemu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtTypeChoice {
    pub virt_type: VirtType,
    pub reason: String,
    /// A test guest ran and showed this: the answer holds until the host changes. False for the
    /// override, the capabilities (cheap to read again) and a test guest that could not be run.
    pub shown_by_a_test_guest: bool,
}

/// What the capabilities XML says about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapabilities {
    pub arch: Option<String>,
    /// An `hvm` guest of the host architecture can use `<domain type='kvm'>`.
    pub kvm: bool,
}

/// Reads the host architecture and whether kvm is offered for it.
pub fn parse_capabilities(capabilities_xml: &str) -> Result<HostCapabilities> {
    let root =
        xml::parse(capabilities_xml).map_err(|m| LibvirtError::parse("capabilities XML", m))?;
    if root.name != "capabilities" {
        return Err(LibvirtError::parse(
            "capabilities XML",
            format!("root element is `{}`, not `capabilities`", root.name),
        ));
    }
    let arch = root
        .path(&["host", "cpu", "arch"])
        .map(|a| a.text.trim().to_owned());
    let kvm = root
        .children_named("guest")
        .filter(|g| g.child_text("os_type").map(str::trim) == Some("hvm"))
        .flat_map(|g| g.children_named("arch"))
        .filter(|a| arch.is_none() || a.attr("name") == arch.as_deref())
        .flat_map(|a| a.children_named("domain"))
        .any(|d| d.attr("type") == Some("kvm"));
    Ok(HostCapabilities { arch, kvm })
}

/// [`choose_virt_type_with`] reading [`VIRT_TYPE_ENV`] from the environment.
pub fn choose_virt_type(hv: &Hypervisor) -> Result<VirtTypeChoice> {
    let env = std::env::var(VIRT_TYPE_ENV).ok();
    choose_virt_type_with(hv, env.as_deref())
}

/// [`choose_virt_type_without_probe_with`] reading [`VIRT_TYPE_ENV`] from the environment.
pub fn choose_virt_type_without_probe(hv: &Hypervisor) -> Result<Option<VirtTypeChoice>> {
    let env = std::env::var(VIRT_TYPE_ENV).ok();
    choose_virt_type_without_probe_with(hv, env.as_deref())
}

/// What [`choose_virt_type_with`] answers without booting anything (for check mode): the override,
/// or qemu when the capabilities offer no kvm; `None` when only the test guest could tell.
pub fn choose_virt_type_without_probe_with(
    hv: &Hypervisor,
    env_override: Option<&str>,
) -> Result<Option<VirtTypeChoice>> {
    if let Some(value) = env_override.map(str::trim).filter(|v| !v.is_empty()) {
        let virt_type = VirtType::parse(&value.to_ascii_lowercase()).ok_or_else(|| {
            LibvirtError::invalid(VIRT_TYPE_ENV, value, "expected `kvm` or `qemu`")
        })?;
        return Ok(Some(VirtTypeChoice {
            virt_type,
            reason: format!("{VIRT_TYPE_ENV}={} is set", virt_type.as_str()),
            shown_by_a_test_guest: false,
        }));
    }
    let caps = parse_capabilities(&hv.capabilities_xml()?)?;
    let arch = caps.arch.as_deref().unwrap_or("the host architecture");
    if !caps.kvm {
        return Ok(Some(VirtTypeChoice {
            virt_type: VirtType::Qemu,
            reason: format!(
                "`{}` offers no kvm guests for {arch}; using qemu (TCG), which is much slower",
                hv.uri()
            ),
            shown_by_a_test_guest: false,
        }));
    }
    Ok(None)
}

/// Override first, then capabilities, then [`probe_kvm`].
pub fn choose_virt_type_with(
    hv: &Hypervisor,
    env_override: Option<&str>,
) -> Result<VirtTypeChoice> {
    if let Some(choice) = choose_virt_type_without_probe_with(hv, env_override)? {
        return Ok(choice);
    }
    Ok(match probe_kvm(hv, PROBE_WATCH)? {
        GuestProbe::Usable { detail } => VirtTypeChoice {
            virt_type: VirtType::Kvm,
            reason: detail,
            shown_by_a_test_guest: true,
        },
        GuestProbe::Unusable { detail } => VirtTypeChoice {
            virt_type: VirtType::Qemu,
            reason: format!(
                "`{}` offers kvm but it cannot run a guest ({detail}); using qemu (TCG), which is much slower",
                hv.uri()
            ),
            shown_by_a_test_guest: true,
        },
        GuestProbe::Failed { detail } => VirtTypeChoice {
            virt_type: VirtType::Qemu,
            reason: format!(
                "`{}` offers kvm, but no test guest could be run to show that it works ({detail}); \
                 using qemu (TCG) this time, which is much slower",
                hv.uri()
            ),
            shown_by_a_test_guest: false,
        },
    })
}

/// The accelerator for a libguestfs appliance (virt-builder, virt-customize, virt-sysprep) that
/// works for a *remote* hypervisor. The appliance always runs on this machine, and the remote's
/// accelerator says nothing about this machine's: `VIRTUP_VIRT_TYPE=qemu` (KVM is unusable here)
/// forces TCG, and otherwise libguestfs keeps its own choice (kvm when /dev/kvm opens, else TCG;
/// `LIBGUESTFS_BACKEND_SETTINGS=force_tcg` passes through), which `Kvm` leaves alone. For a local
/// hypervisor the appliance uses the accelerator chosen for its guests.
pub fn remote_appliance_virt_type() -> Result<VirtType> {
    let env = std::env::var(VIRT_TYPE_ENV).ok();
    remote_appliance_virt_type_with(env.as_deref())
}

/// [`remote_appliance_virt_type`] with the override given.
pub fn remote_appliance_virt_type_with(env_override: Option<&str>) -> Result<VirtType> {
    match env_override.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => VirtType::parse(&value.to_ascii_lowercase())
            .ok_or_else(|| LibvirtError::invalid(VIRT_TYPE_ENV, value, "expected `kvm` or `qemu`")),
        None => Ok(VirtType::Kvm),
    }
}

/// Outcome of a test guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestProbe {
    /// A test guest ran under the accelerator.
    Usable { detail: String },
    /// A test guest started and showed that it cannot run (nothing printed, stopped, stuck).
    Unusable { detail: String },
    /// No test guest could be run at all (staging, starting, its console): says nothing about the
    /// accelerator, and may pass (memory, a daemon restarting).
    Failed { detail: String },
}

/// What the kernel prints when it gives up for lack of a root filesystem: proof that 64-bit
/// Linux code ran under kvm. (Firmware alone is not proof: on nested PVM hosts SeaBIOS runs
/// fine while a Linux kernel never prints a line.)
const KERNEL_MARKER: &str = "Kernel panic";
/// Memory for the kernel probe; with less, the kernel can fail to decompress and reset early.
const KERNEL_PROBE_MEMORY_MIB: u64 = 128;
/// Memory for the firmware-only probe.
const FIRMWARE_PROBE_MEMORY_MIB: u64 = 32;

fn probe_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("virtup-kvm-probe-{}-{nanos:09}", std::process::id())
}

/// `true` for URIs that name this machine's hypervisor (`qemu:///system`, `qemu+unix:///…`).
pub fn uri_is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/'),
        None => uri.is_empty(),
    }
}

/// The host a URI names when it holds a password (`qemu+ssh://user:secret@host/system`), else `None`.
///
/// Written by hand, a password may hold `/`, `?`, `#` or `@`, so the authority is not cut at them:
/// each `@` is tried as the end of a userinfo whose user part (before its first `:`) has none of
/// `/?#`; what follows that `:` is a password unless it is a port (digits, then a `/`:
/// `host:22/system?keyfile=/a@b`). An authority that opens with `[` is an IPv6 host, no userinfo.
/// The host named is what follows the last such `@`, cut at the path: never a piece of the password.
pub fn uri_password_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    if rest.starts_with(['/', '[']) {
        return None;
    }
    let holds_password = |at: usize| {
        let Some((user, after_colon)) = rest[..at].split_once(':') else {
            return false;
        };
        if user.contains(['/', '?', '#']) {
            return false;
        }
        let digits = after_colon
            .find(|c: char| !c.is_ascii_digit())
            .map_or(after_colon, |end| &after_colon[..end]);
        let is_port = !digits.is_empty() && after_colon[digits.len()..].starts_with('/');
        !is_port
    };
    let at = rest
        .match_indices('@')
        .map(|(i, _)| i)
        .rfind(|&i| holds_password(i))?;
    let host = rest[at + 1..].split(['/', '?', '#']).next().unwrap_or("");
    Some(host.to_owned())
}

/// A Linux kernel on this machine: the running release first, then `/boot/vmlinuz`, then the newest.
fn find_local_kernel() -> Option<PathBuf> {
    let readable = |p: &Path| std::fs::File::open(p).is_ok() && p.is_file();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut candidates = vec![
        PathBuf::from(format!("/boot/vmlinuz-{}", release.trim())),
        PathBuf::from("/boot/vmlinuz"),
    ];
    let mut versioned: Vec<(SystemTime, PathBuf)> = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    versioned.sort();
    candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
    candidates.into_iter().find(|p| readable(p))
}

/// A private world-readable copy of the kernel, so libvirt relabels our copy, never /boot.
struct KernelCopy {
    dir: PathBuf,
    kernel: PathBuf,
}

impl KernelCopy {
    fn new(source: &Path, name: &str) -> std::io::Result<KernelCopy> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir(&dir)?;
        let copy = KernelCopy {
            kernel: dir.join("vmlinuz"),
            dir,
        };
        // The QEMU process runs as another user and must traverse and read these.
        std::fs::set_permissions(&copy.dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(source, &copy.kernel)?;
        std::fs::set_permissions(&copy.kernel, std::fs::Permissions::from_mode(0o644))?;
        Ok(copy)
    }
}

impl Drop for KernelCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The probe domain: kvm, the CPU model real domains get, no disks, no NIC, and every
/// lifecycle event ends it.
fn probe_xml(virt_type: VirtType, name: &str, kernel: Option<&Path>) -> Result<String> {
    let mut w = XmlWriter::new();
    w.open("domain", &[("type", virt_type.as_str())]);
    w.leaf("name", &[], name);
    let memory = match kernel {
        Some(_) => KERNEL_PROBE_MEMORY_MIB,
        None => FIRMWARE_PROBE_MEMORY_MIB,
    };
    w.leaf("memory", &[("unit", "MiB")], &memory.to_string());
    w.leaf("vcpu", &[], "1");
    w.open("os", &[]);
    w.leaf("type", &[], "hvm");
    match kernel {
        Some(k) => {
            let path = k.to_str().ok_or_else(|| {
                LibvirtError::invalid("kernel path", &k.display().to_string(), "not UTF-8")
            })?;
            check_text("kernel path", path)?;
            w.leaf("kernel", &[], path);
            w.leaf(
                "cmdline",
                &[],
                "console=ttyS0 quiet panic=-1 root=/dev/null",
            );
        }
        // No boot device and a zero reboot timeout: SeaBIOS resets as soon as it has run.
        None => w.empty("bios", &[("rebootTimeout", "0")]),
    }
    w.close("os");
    if let Some(mode) = CpuMode::default_for(virt_type).as_attr() {
        w.empty("cpu", &[("mode", mode), ("check", "none")]);
    }
    for event in ["on_poweroff", "on_reboot", "on_crash"] {
        w.leaf(event, &[], "destroy");
    }
    w.open("devices", &[]);
    if kernel.is_some() {
        w.open("serial", &[("type", "pty")]);
        w.empty("target", &[("port", "0")]);
        w.close("serial");
        w.open("console", &[("type", "pty")]);
        w.empty("target", &[("type", "serial"), ("port", "0")]);
        w.close("console");
    }
    w.close("devices");
    w.close("domain");
    Ok(w.finish())
}

/// Tests whether kvm can really run a guest: starts a transient kvm guest (the CPU settings of
/// a real virtup domain, no disks, no NIC, bound to this connection so it cannot outlive it),
/// watches it for at most `watch`, destroys it whatever happened.
///
/// On a local hypervisor with a kernel in /boot, the guest boots a copy of that kernel without
/// a root filesystem and must print its panic on the serial console. Otherwise (remote URI, no
/// kernel) only firmware is tested: the guest must reach SeaBIOS' reset, a weaker check that
/// the detail says is weaker. `Err` only when libvirt cannot be talked to at all.
pub fn probe_kvm(hv: &Hypervisor, watch: Duration) -> Result<GuestProbe> {
    probe_guest(hv, VirtType::Kvm, watch)
}

/// The same test for any accelerator (qemu/TCG too, which is how the check itself is checked).
pub fn probe_guest(hv: &Hypervisor, virt_type: VirtType, watch: Duration) -> Result<GuestProbe> {
    let kind = virt_type.as_str();
    let name = probe_name();
    let kernel = if uri_is_local(hv.uri()) {
        find_local_kernel()
    } else {
        None
    };
    let copy = match &kernel {
        Some(k) => match KernelCopy::new(k, &name) {
            Ok(c) => Some(c),
            Err(e) => {
                return Ok(GuestProbe::Failed {
                    detail: format!(
                        "could not stage `{}` for the {kind} test guest: {e}",
                        k.display()
                    ),
                })
            }
        },
        None => None,
    };
    let xml = probe_xml(virt_type, &name, copy.as_ref().map(|c| c.kernel.as_path()))?;

    let paused_autodestroy = sys::VIR_DOMAIN_START_PAUSED | sys::VIR_DOMAIN_START_AUTODESTROY;
    let created = match hv.conn.create_domain_xml(&xml, paused_autodestroy) {
        Err(e) if is_unsupported(&e) => hv
            .conn
            .create_domain_xml(&xml, sys::VIR_DOMAIN_START_PAUSED),
        other => other,
    };
    let dom = match created {
        Ok(d) => d,
        Err(e) => {
            let detail = format!("the {kind} test guest failed to start: {}", e.message());
            // QEMU refusing the accelerator itself is an answer about it (the same every time on
            // this host), not a failure to run a test guest.
            return Ok(if kind == "kvm" && kvm_refused_at_start(e.message()) {
                GuestProbe::Unusable { detail }
            } else {
                GuestProbe::Failed { detail }
            });
        }
    };
    let verdict = match &kernel {
        Some(k) => watch_kernel(hv, &dom, kind, &name, k, watch),
        None => watch_firmware(&dom, kind, &name, watch),
    };
    // Transient: destroying it is removing it. Errors mean it is already gone.
    let _ = dom.destroy();
    drop(copy);
    Ok(verdict)
}

/// Whether QEMU's start error says KVM itself cannot run this host's guests: a CPU state KVM
/// refuses (seen on a nested host: "failed to set MSR 0x10a"), or KVM that cannot be initialised.
fn kvm_refused_at_start(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "failed to set msr",
        "failed to initialize kvm",
        "could not access kvm kernel module",
    ]
    .iter()
    .any(|sign| m.contains(sign))
}

/// How the test guest is doing right now.
enum Liveness {
    Running,
    /// Stopped or removed: for a transient guest whose every lifecycle event is "destroy", this
    /// is what a guest reset looks like.
    Ended,
    /// Paused, crashed or unreadable, with a description.
    Trouble(String),
}

fn liveness(dom: &Domain) -> Liveness {
    match dom.is_active() {
        Ok(true) => {}
        Ok(false) => return Liveness::Ended,
        Err(e) if e.code().is(ErrorNumber::NoDomain) => return Liveness::Ended,
        Err(e) => return Liveness::Trouble(format!("could not be watched: {}", e.message())),
    }
    match dom.state() {
        Ok((state, _))
            if state.is(virt::domain::DomainState::Running)
                || state.is(virt::domain::DomainState::Blocked) =>
        {
            Liveness::Running
        }
        Ok((state, reason)) => Liveness::Trouble(format!("went to state {state:?} ({reason:?})")),
        Err(e) => Liveness::Trouble(format!("could not be watched: {}", e.message())),
    }
}

fn watch_kernel(
    hv: &Hypervisor,
    dom: &Domain,
    kind: &str,
    name: &str,
    kernel: &Path,
    watch: Duration,
) -> GuestProbe {
    let unusable = |detail: String| GuestProbe::Unusable { detail };
    let failed = |detail: String| GuestProbe::Failed { detail };
    let stream = match Stream::new(&hv.conn, 0) {
        Ok(s) => s,
        Err(e) => {
            return failed(format!(
                "could not open a stream for the {kind} test guest: {}",
                e.message()
            ))
        }
    };
    if let Err(e) = dom.open_console(None, &stream, sys::VIR_DOMAIN_CONSOLE_FORCE) {
        return failed(format!(
            "could not read the console of the {kind} test guest `{name}`: {}",
            e.message()
        ));
    }
    // recv blocks; a thread turns it into a channel that can be waited on with a deadline.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.recv(&mut buf) {
            if tx.send(buf[..n as usize].to_vec()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let verdict = if let Err(e) = dom.resume() {
        failed(format!(
            "could not resume the {kind} test guest `{name}`: {}",
            e.message()
        ))
    } else {
        let mut console = Vec::new();
        loop {
            let elapsed = started.elapsed();
            if String::from_utf8_lossy(&console).contains(KERNEL_MARKER) {
                break GuestProbe::Usable {
                    detail: format!(
                        "a {kind} test guest ran the kernel `{}` in {:.1} s",
                        kernel.display(),
                        elapsed.as_secs_f64()
                    ),
                };
            }
            if elapsed >= watch {
                break unusable(format!(
                    "a {kind} test guest booting `{}` printed nothing in {:.1} s",
                    kernel.display(),
                    elapsed.as_secs_f64()
                ));
            }
            match rx.recv_timeout(PROBE_POLL) {
                Ok(bytes) => console.extend_from_slice(&bytes),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let what = match liveness(dom) {
                        Liveness::Running => continue,
                        Liveness::Ended => "stopped".to_owned(),
                        Liveness::Trouble(what) => what,
                    };
                    // Output may still be in flight; one last look before judging.
                    console.extend(rx.try_iter().flatten());
                    if !String::from_utf8_lossy(&console).contains(KERNEL_MARKER) {
                        break unusable(format!(
                            "the {kind} test guest `{name}` {what} after {:.1} s without kernel output",
                            elapsed.as_secs_f64()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    console.extend(rx.try_iter().flatten());
                    if !String::from_utf8_lossy(&console).contains(KERNEL_MARKER) {
                        break unusable(format!(
                            "the console of the {kind} test guest `{name}` closed after {:.1} s without kernel output",
                            elapsed.as_secs_f64()
                        ));
                    }
                }
            }
        }
    };
    let _ = dom.destroy();
    // The console stream ends with the guest; a reader that still hangs is left behind rather
    // than blocking the caller.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if reader.is_finished() {
        let _ = reader.join();
    }
    verdict
}

fn watch_firmware(dom: &Domain, kind: &str, name: &str, watch: Duration) -> GuestProbe {
    let started = Instant::now();
    if let Err(e) = dom.resume() {
        return GuestProbe::Failed {
            detail: format!(
                "could not resume the {kind} test guest `{name}`: {}",
                e.message()
            ),
        };
    }
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        match liveness(dom) {
            Liveness::Running => {}
            Liveness::Ended => {
                return GuestProbe::Usable {
                    detail: format!(
                        "a {kind} test guest ran its firmware in {elapsed:.1} s (no local kernel to test a full boot, a weaker check)"
                    ),
                }
            }
            Liveness::Trouble(what) => {
                return GuestProbe::Unusable {
                    detail: format!("the {kind} test guest `{name}` {what} after {elapsed:.1} s"),
                }
            }
        }
        if started.elapsed() >= watch {
            return GuestProbe::Unusable {
                detail: format!("the {kind} test guest `{name}` did not get through its firmware in {elapsed:.1} s"),
            };
        }
        std::thread::sleep(PROBE_POLL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kvm_refusing_a_guest_at_its_start_is_an_answer_not_a_failure() {
        assert!(kvm_refused_at_start(
            "internal error: QEMU unexpectedly closed the monitor: qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069"
        ));
        assert!(kvm_refused_at_start(
            "failed to initialize kvm: Permission denied"
        ));
        assert!(!kvm_refused_at_start("cannot allocate memory"));
        assert!(!kvm_refused_at_start("Domain not found"));
    }

    use super::*;

    #[test]
    fn the_appliance_runs_here_so_a_remote_hypervisor_s_accelerator_is_not_its_own() {
        // Unset: libguestfs' own choice (what `Kvm` leaves alone), whatever the remote runs.
        assert_eq!(
            remote_appliance_virt_type_with(None).unwrap(),
            VirtType::Kvm
        );
        assert_eq!(
            remote_appliance_virt_type_with(Some(" ")).unwrap(),
            VirtType::Kvm
        );
        // KVM unusable here: TCG for the appliance too.
        assert_eq!(
            remote_appliance_virt_type_with(Some(" QEMU ")).unwrap(),
            VirtType::Qemu
        );
        let err = remote_appliance_virt_type_with(Some("xen")).unwrap_err();
        assert!(err.to_string().contains(VIRT_TYPE_ENV), "{err}");
    }

    const KVM_HOST: &str = r#"<capabilities>
  <host><cpu><arch>x86_64</arch></cpu></host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'><wordsize>64</wordsize><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
</capabilities>"#;

    #[test]
    fn capabilities_with_kvm_for_the_host_arch() {
        let caps = parse_capabilities(KVM_HOST).unwrap();
        assert_eq!(caps.arch.as_deref(), Some("x86_64"));
        assert!(caps.kvm);
    }

    #[test]
    fn kvm_for_another_arch_or_os_type_does_not_count() {
        let kvm_only_for_i686 = r#"<capabilities>
  <host><cpu><arch>x86_64</arch></cpu></host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'><domain type='qemu'/></arch>
  </guest>
</capabilities>"#;
        assert!(!parse_capabilities(kvm_only_for_i686).unwrap().kvm);
        let xen = KVM_HOST.replace("<os_type>hvm</os_type>", "<os_type>xen</os_type>");
        assert!(!parse_capabilities(&xen).unwrap().kvm);
        assert!(parse_capabilities("<domain/>").is_err());
    }

    #[test]
    fn local_uris() {
        for (uri, local) in [
            ("qemu:///system", true),
            ("qemu+unix:///system?socket=/x", true),
            ("test:///default", true),
            ("", true),
            ("qemu+ssh://root@host/system", false),
            ("qemu://localhost/system", false),
            ("nonsense", false),
        ] {
            assert_eq!(uri_is_local(uri), local, "{uri}");
        }
    }

    #[test]
    fn probe_xml_matches_the_checks() {
        let with_kernel = probe_xml(VirtType::Kvm, "p", Some(Path::new("/tmp/p/vmlinuz"))).unwrap();
        let root = xml::parse(&with_kernel).unwrap();
        assert_eq!(root.attr("type"), Some("kvm"));
        assert_eq!(root.path(&["os", "kernel"]).unwrap().text, "/tmp/p/vmlinuz");
        assert!(root
            .path(&["os", "cmdline"])
            .unwrap()
            .text
            .contains("panic=-1"));
        assert_eq!(
            root.child("cpu").unwrap().attr("mode"),
            Some("host-passthrough")
        );
        assert!(root.path(&["devices", "serial"]).is_some());
        assert_eq!(root.child_text("memory"), Some("128"));
        for event in ["on_poweroff", "on_reboot", "on_crash"] {
            assert_eq!(root.child_text(event), Some("destroy"));
        }
        let devices = root.child("devices").unwrap();
        assert!(devices.child("disk").is_none() && devices.child("interface").is_none());

        let firmware = xml::parse(&probe_xml(VirtType::Qemu, "p", None).unwrap()).unwrap();
        assert_eq!(firmware.attr("type"), Some("qemu"));
        assert_eq!(
            firmware
                .path(&["os", "bios"])
                .and_then(|b| b.attr("rebootTimeout")),
            Some("0")
        );
        assert!(firmware.path(&["os", "kernel"]).is_none());
        assert_eq!(firmware.child("cpu").unwrap().attr("mode"), Some("maximum"));
        assert!(probe_xml(VirtType::Kvm, "p", Some(Path::new("/tmp/a\u{1}b"))).is_err());
    }

    #[test]
    fn probe_names_carry_the_process_id() {
        let a = probe_name();
        assert!(a.starts_with(&format!("virtup-kvm-probe-{}-", std::process::id())));
    }
}
