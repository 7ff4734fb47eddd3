//! Powering domains off (ACPI shutdown first, bounded, then a hard stop) and setting the clock of one resumed from its saved memory.

use std::time::{Duration, Instant};

use anyhow::Result;
use virtup_libvirt::{DomainState, Hypervisor};

/// Shuts `domain` down gracefully within `timeout`, then destroys it; a no-op when it is off. One
/// suspended by a managed save is resumed first: its memory may hold writes its disks lack, and
/// its image would otherwise bring back that memory over whatever changes the disks next.
pub fn stop(hv: &Hypervisor, domain: &str, timeout: Duration) -> Result<()> {
    let is_off = |hv: &Hypervisor| -> Result<bool> {
        Ok(hv
            .domain(domain)?
            .is_none_or(|d| d.state == DomainState::ShutOff))
    };
    if hv
        .domain(domain)?
        .is_some_and(|d| d.saved && d.state == DomainState::ShutOff)
    {
        hv.start(domain)?;
    }
    if is_off(hv)? {
        return Ok(());
    }
    // A guest still booting may ignore the ACPI event, so it is repeated while we wait.
    let start = Instant::now();
    let mut last_request = None::<Instant>;
    while start.elapsed() < timeout {
        if is_off(hv)? {
            return Ok(());
        }
        if last_request.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            let _ = hv.shutdown(domain);
            last_request = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !is_off(hv)? {
        hv.destroy(domain)?;
    }
    Ok(())
}

/// How far a resumed guest's clock may be from the host's and still count as set.
pub const CLOCK_TOLERANCE_SECS: f64 = 1.0;

/// Brings the clock of `domain`, just resumed from a managed-save image, to the host's through its
/// guest agent, waiting up to `timeout` for the agent to answer; the warning says what is left
/// when it cannot. (A resumed guest's system clock stands where it was saved: nothing in it knows
/// how long it slept, and these guests have no NTP server to ask.)
pub fn set_resumed_clock(hv: &Hypervisor, domain: &str, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        // qemu-ga sets the system clock before it copies it to the RTC with hwclock, which a
        // guest may lack: its answer is an error then, so the clock read back decides.
        let set = hv.set_guest_time_to_now(domain).err();
        let last = match hv.guest_clock_offset(domain) {
            Ok(Some(off)) if off.abs() <= CLOCK_TOLERANCE_SECS => return None,
            Ok(None) => {
                return Some(format!(
                    "`{domain}` resumed, but its clock cannot be set: it has no guest agent \
                     channel (or its hypervisor cannot reach one), so it stands where it was \
                     suspended until something in the guest sets it"
                ))
            }
            Ok(Some(off)) => match set {
                Some(e) => format!("its clock is {off:+.0} s from the host's ({e})"),
                None => format!("its clock is {off:+.0} s from the host's"),
            },
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Some(format!(
                "`{domain}` resumed, but its clock could not be set through its guest agent: \
                 {last}; it may stand where it was suspended until something in the guest sets it \
                 (`virsh domtime --now {domain}` once qemu-guest-agent runs in it)"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
