//! The libvirt calls that `virt` 0.5 does not wrap, done by hand over `virt::sys`.
//!
//! This is the crate's only unsafe code (the workspace denies it elsewhere). Each call follows
//! the ownership rules of its libvirt documentation, cited next to it.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::c_char;
use std::ptr;

use virt::domain::Domain;
use virt::error::Error;
use virt::network::Network;
use virt::sys;

/// One DHCP lease, copied out of libvirt's structure.
pub(crate) struct RawLease {
    pub iface: Option<String>,
    pub expiry_time: i64,
    pub mac: Option<String>,
    pub ipaddr: Option<String>,
    pub prefix: u32,
    pub hostname: Option<String>,
}

/// Copies a nullable C string owned by libvirt.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that stays alive during the call.
unsafe fn opt_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// `virDomainAgentSetResponseTimeout`: bounds every later guest-agent call on this domain.
pub(crate) fn agent_set_response_timeout(dom: &Domain, seconds: i32) -> Result<(), Error> {
    // SAFETY: `dom` holds a reference on the virDomainPtr for the duration of the call; the
    // function takes no ownership of anything.
    let ret = unsafe { sys::virDomainAgentSetResponseTimeout(dom.as_ptr(), seconds, 0) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainGetTime`: the guest's system clock as its agent reads it, in seconds and nanoseconds.
pub(crate) fn domain_get_time(dom: &Domain) -> Result<(i64, u32), Error> {
    let mut seconds: std::os::raw::c_longlong = 0;
    let mut nseconds: std::os::raw::c_uint = 0;
    // SAFETY: `dom` keeps the virDomainPtr alive; both out-pointers are valid locals for the call.
    let ret = unsafe { sys::virDomainGetTime(dom.as_ptr(), &mut seconds, &mut nseconds, 0) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok((seconds, nseconds))
}

/// `virDomainSaveFlags`: saves the running domain's memory to `path` and stops it.
pub(crate) fn domain_save(dom: &Domain, path: &CStr, flags: u32) -> Result<(), Error> {
    // SAFETY: `dom` keeps the virDomainPtr alive; `path` is NUL-terminated and outlives the call;
    // a NULL dxml means "the domain's own XML"; nothing changes ownership.
    let ret = unsafe { sys::virDomainSaveFlags(dom.as_ptr(), path.as_ptr(), ptr::null(), flags) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virNetworkGetDHCPLeases` for all MACs.
///
/// libvirt: "the caller is responsible for calling virNetworkDHCPLeaseFree() on each array
/// element, then calling free() on @leases"; on error @leases is left NULL.
pub(crate) fn network_dhcp_leases(net: &Network) -> Result<Vec<RawLease>, Error> {
    let mut leases: *mut sys::virNetworkDHCPLeasePtr = ptr::null_mut();
    // SAFETY: `net` keeps the virNetworkPtr alive; `leases` is a valid out-pointer; a NULL MAC
    // means "all leases".
    let n = unsafe { sys::virNetworkGetDHCPLeases(net.as_ptr(), ptr::null(), &mut leases, 0) };
    if n < 0 {
        return Err(Error::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned `n` valid element pointers in the array.
        let lease = unsafe { *leases.add(i) };
        if lease.is_null() {
            continue;
        }
        // SAFETY: `lease` points to a live virNetworkDHCPLease until freed below; its string
        // fields are null or NUL-terminated.
        unsafe {
            let l = &*lease;
            out.push(RawLease {
                iface: opt_string(l.iface),
                expiry_time: l.expirytime,
                mac: opt_string(l.mac),
                ipaddr: opt_string(l.ipaddr),
                prefix: l.prefix,
                hostname: opt_string(l.hostname),
            });
            sys::virNetworkDHCPLeaseFree(lease);
        }
    }
    if !leases.is_null() {
        // SAFETY: the array was allocated by libvirt with malloc and every element is freed.
        unsafe { libc::free(leases.cast()) };
    }
    Ok(out)
}
