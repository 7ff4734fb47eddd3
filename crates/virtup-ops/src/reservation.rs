//! An instance's fixed address: the DHCP host reservation it owns on its libvirt network, proved from its record, checked before it is added, removed exactly.
//!
//! The record (`reservation` in the instance's metadata) is written before libvirt is asked to add
//! the entry and confirmed after; an entry is the instance's only when network, MAC, name and
//! address all match the record. Any other entry (a look-alike named like the instance, another
//! tool's, a stale one) is never modified or removed: an address it holds is refused instead.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use virtup_core::{DataDir, InstanceMeta, Reservation};
use virtup_libvirt::{DhcpSubnet, Hypervisor, LibvirtError};

use crate::context::SHORT_LOCK_TIMEOUT;

/// What observe learns about an instance's reservation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The reservation proved the instance's.
    pub reserved: Option<Ipv4Addr>,
    /// Why the wanted address cannot be reserved, when it is not reserved yet.
    pub refusal: Option<String>,
}

/// Proves the recorded reservation and, when `want` is not it, checks that `want` can be reserved on
/// `network` for this MAC (`None` before the instance has one) and name.
pub fn observe(
    hv: &Hypervisor,
    network: &str,
    name: &str,
    mac: Option<&str>,
    record: Option<&Reservation>,
    want: Option<Ipv4Addr>,
) -> Result<Seen> {
    let mut seen = Seen::default();
    if let Some(r) = record {
        let subnets = match hv.network_dhcp(&r.network) {
            Ok(s) => s,
            // The network went, and the entry with it.
            Err(LibvirtError::NetworkNotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let present = subnets
            .iter()
            .flat_map(|s| &s.hosts)
            .any(|h| h.is(&r.mac, r.ip, &r.name));
        seen.reserved = present.then_some(r.ip);
    }
    let Some(want) = want.filter(|&w| seen.reserved != Some(w)) else {
        return Ok(seen);
    };
    let subnets = match hv.network_dhcp(network) {
        Ok(s) => s,
        Err(LibvirtError::NetworkNotFound(_)) => {
            seen.refusal = Some(format!(
                "{want} cannot be reserved: network `{network}` does not exist on `{}`",
                hv.uri()
            ));
            return Ok(seen);
        }
        Err(e) => return Err(e.into()),
    };
    let ours = |h: &virtup_libvirt::DhcpHost| {
        record.is_some_and(|r| r.network == network && h.is(&r.mac, r.ip, &r.name))
    };
    seen.refusal = refusal(&subnets, network, name, mac, want, &ours).or_else(|| {
        leased_elsewhere(hv, network, mac, want)
            .unwrap_or_else(|e| Some(format!("cannot read the leases of `{network}`: {e:#}")))
    });
    Ok(seen)
}

/// Why `want` cannot be reserved on a network with these subnets, from its definition alone.
fn refusal(
    subnets: &[DhcpSubnet],
    network: &str,
    name: &str,
    mac: Option<&str>,
    want: Ipv4Addr,
    ours: &dyn Fn(&virtup_libvirt::DhcpHost) -> bool,
) -> Option<String> {
    if subnets.is_empty() {
        return Some(format!(
            "{want} cannot be reserved: network `{network}` hands out no IPv4 address by DHCP"
        ));
    }
    let Some(subnet) = subnets.iter().find(|s| s.contains(want)) else {
        let cidrs: Vec<String> = subnets.iter().map(DhcpSubnet::cidr).collect();
        return Some(format!(
            "{want} is not in network `{network}` ({})",
            cidrs.join(", ")
        ));
    };
    if want == subnet.address {
        return Some(format!(
            "{want} is the host's own address on network `{network}`"
        ));
    }
    if subnet.is_network_or_broadcast(want) {
        return Some(format!(
            "{want} is the network or broadcast address of {}",
            subnet.cidr()
        ));
    }
    // libvirt refuses a second entry with the same MAC, name or address: say which one is in the
    // way, and that it stays.
    for h in subnets.iter().flat_map(|s| &s.hosts).filter(|h| !ours(h)) {
        let why = if h.ip == Some(want) {
            format!("{want} is already reserved on network `{network}`")
        } else if mac.is_some_and(|m| h.has_mac(m)) {
            format!("network `{network}` already has a reservation for this instance's MAC")
        } else if h.name.as_deref() == Some(name) {
            format!("network `{network}` already has a reservation named `{name}`")
        } else {
            continue;
        };
        return Some(format!(
            "{why} ({}) that virtup did not add; virtup never changes it: remove it yourself, or \
             choose another address",
            h.describe()
        ));
    }
    None
}

/// Another guest's live lease on `want`: dnsmasq would not hand the address over while it lasts.
fn leased_elsewhere(
    hv: &Hypervisor,
    network: &str,
    mac: Option<&str>,
    want: Ipv4Addr,
) -> Result<Option<String>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // A driver that keeps no leases (libvirt's test driver) has none to be in the way.
    Ok(hv
        .network_dhcp_leases_if_kept(network)?
        .unwrap_or_default()
        .into_iter()
        .find(|l| {
            l.ip == std::net::IpAddr::V4(want)
                && l.expiry > now
                && !mac.is_some_and(|m| l.mac.eq_ignore_ascii_case(m))
        })
        .map(|l| {
            format!(
                "{want} is leased on network `{network}` to MAC {} for {} more seconds (a lease \
                 outlives its guest), and libvirt's dnsmasq does not hand a leased address to \
                 another MAC; choose another address, or wait for the lease to end (or, if that \
                 guest is gone, release it: `dhcp_release {} {want} {}` from dnsmasq-utils)",
                l.mac,
                l.expiry - now,
                l.iface.as_deref().unwrap_or("<bridge>"),
                l.mac
            )
        }))
}

/// Adds the reservation for the instance's MAC (from its metadata) and name: recorded first,
/// confirmed after libvirt took it, the record dropped again if libvirt refused.
pub fn reserve(
    data: &DataDir,
    hv: &Hypervisor,
    name: &str,
    network: &str,
    ip: Ipv4Addr,
) -> Result<()> {
    let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
    let mut meta =
        InstanceMeta::read(data, name)?.ok_or_else(|| anyhow!("metadata of `{name}` vanished"))?;
    let mac = meta
        .mac
        .clone()
        .ok_or_else(|| anyhow!("the metadata of `{name}` names no MAC to reserve {ip} for"))?;
    meta.reservation = Some(Reservation {
        network: network.to_owned(),
        mac: mac.clone(),
        name: name.to_owned(),
        ip,
        confirmed: false,
    });
    meta.write(data)?;
    if let Err(e) = hv.add_dhcp_host(network, &mac, name, ip) {
        meta.reservation = None;
        meta.write(data)?;
        return Err(e.into());
    }
    if let Some(r) = meta.reservation.as_mut() {
        r.confirmed = true;
    }
    meta.write(data)?;
    Ok(())
}

/// Removes the entry the instance's record names (observe proved it there), then the record.
pub fn unreserve(data: &DataDir, hv: &Hypervisor, name: &str) -> Result<()> {
    let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
    let Some(mut meta) = InstanceMeta::read(data, name)? else {
        return Ok(());
    };
    let Some(r) = meta.reservation.clone() else {
        return Ok(());
    };
    hv.remove_dhcp_host(&r.network, &r.mac, &r.name, r.ip)?;
    meta.reservation = None;
    meta.write(data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtup_libvirt::DhcpHost;

    fn subnet(hosts: Vec<DhcpHost>) -> Vec<DhcpSubnet> {
        vec![DhcpSubnet {
            address: Ipv4Addr::new(192, 168, 122, 1),
            prefix: 24,
            hosts,
        }]
    }

    fn host(mac: &str, name: &str, ip: &str) -> DhcpHost {
        DhcpHost {
            mac: Some(mac.into()),
            name: Some(name.into()),
            ip: Some(ip.parse().unwrap()),
        }
    }

    #[test]
    fn every_refusal_names_its_culprit_and_own_entries_are_not_in_the_way() {
        let mac = "52:54:00:12:34:56";
        let check = |subnets: &[DhcpSubnet], want: &str| {
            refusal(
                subnets,
                "default",
                "web1",
                Some(mac),
                want.parse().unwrap(),
                &|h| h.is(mac, "192.168.122.50".parse().unwrap(), "web1"),
            )
        };
        let free = subnet(vec![]);
        assert_eq!(check(&free, "192.168.122.50"), None);
        for (want, says) in [
            ("10.0.0.5", "not in network `default` (192.168.122.0/24)"),
            ("192.168.122.1", "host's own address"),
            ("192.168.122.255", "broadcast"),
        ] {
            let why = check(&free, want).unwrap();
            assert!(why.contains(says), "{want}: {why}");
        }
        let crowded = subnet(vec![
            host("52:54:00:aa:aa:aa", "db", "192.168.122.60"),
            host("52:54:00:12:34:56", "stale", "192.168.122.61"),
            host("52:54:00:bb:bb:bb", "web1", "192.168.122.62"),
        ]);
        let why = check(&crowded, "192.168.122.60").unwrap();
        assert!(
            why.contains("already reserved") && why.contains("52:54:00:aa:aa:aa"),
            "{why}"
        );
        let why = check(&crowded, "192.168.122.70").unwrap();
        assert!(
            why.contains("this instance's MAC") && why.contains("never changes"),
            "{why}"
        );
        let look_alike = subnet(vec![host("52:54:00:bb:bb:bb", "web1", "192.168.122.62")]);
        let why = check(&look_alike, "192.168.122.70").unwrap();
        assert!(why.contains("named `web1`"), "{why}");
        // The instance's own entry (being replaced) is not in the way of its new address.
        let own = subnet(vec![host(mac, "web1", "192.168.122.50")]);
        assert_eq!(check(&own, "192.168.122.51"), None);
        assert!(check(&[], "192.168.122.5")
            .unwrap()
            .contains("no IPv4 address by DHCP"));
    }
}
