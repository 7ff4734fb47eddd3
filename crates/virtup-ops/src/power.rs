//! Powering domains off: ACPI shutdown first, bounded, then a hard stop.

use std::time::{Duration, Instant};

use anyhow::Result;
use virtup_libvirt::{DomainState, Hypervisor};

/// Shuts `domain` down gracefully within `timeout`, then destroys it; a no-op when it is off.
pub fn stop(hv: &Hypervisor, domain: &str, timeout: Duration) -> Result<()> {
    let is_off = |hv: &Hypervisor| -> Result<bool> {
        Ok(hv
            .domain(domain)?
            .is_none_or(|d| d.state == DomainState::ShutOff))
    };
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
