//! An instance's fixed address: the DHCP host reservation it owns on its libvirt network, proved from its record, checked before it is added, removed exactly.
//!
//! The record (`reservation` in the instance's metadata) is written before libvirt is asked to add
//! the entry and confirmed after; an entry is the instance's only when network, MAC, name and
//! address all match the record. Any other entry (a look-alike named like the instance, another
//! tool's, a stale one) is never modified or removed: an address it holds is refused instead. The
//! reservation is made before the clone's first volume, so a refused or lost one leaves nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use virtup_core::{DataDir, InstanceMeta, Reservation};
use virtup_libvirt::{same_mac, DhcpHost, DhcpSubnet, Hypervisor, LibvirtError, NetworkDhcp};

use crate::context::SHORT_LOCK_TIMEOUT;

/// What observe learns about an instance's reservation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The address of the entry its record proves (running or saved).
    pub reserved: Option<Ipv4Addr>,
    /// That entry is not where the instance's NIC is (another network, another MAC), or not
    /// everywhere an add puts it (running and saved): it is made again when `address` asks for it.
    pub misplaced: bool,
    /// Whether the record was proved or disproved (`None`: no record, or its network is gone, which
    /// says nothing about an entry it may have again when it is restored).
    pub proven: Option<bool>,
    /// Why the wanted address cannot be reserved, when it is not reserved yet.
    pub refusal: Option<String>,
}

/// A network's DHCP view, `None` when the network does not exist.
fn dhcp_of(hv: &Hypervisor, network: &str) -> Result<Option<NetworkDhcp>> {
    match hv.network_dhcp(network) {
        Ok(d) => Ok(Some(d)),
        Err(LibvirtError::NetworkNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
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
        // A pending record proves an entry too: it was written after the name, MAC and address
        // were seen free, under the instance's lock, and libvirt refuses a second such entry.
        if let Some(d) = dhcp_of(hv, &r.network)? {
            let present = d.has(&r.mac, r.ip, &r.name);
            seen.proven = Some(present);
            if present {
                seen.reserved = Some(r.ip);
                seen.misplaced = r.network != network
                    || mac.is_some_and(|m| !same_mac(m, &r.mac))
                    || !d.has_everywhere(&r.mac, r.ip, &r.name);
            }
        }
    }
    let current = seen.reserved.filter(|_| !seen.misplaced);
    let Some(want) = want.filter(|&w| current != Some(w)) else {
        return Ok(seen);
    };
    let Some(dhcp) = dhcp_of(hv, network)? else {
        seen.refusal = Some(format!(
            "{want} cannot be reserved: network `{network}` does not exist on `{}`",
            hv.uri()
        ));
        return Ok(seen);
    };
    // The instance's own entry (about to be replaced) is not in the way.
    let ours =
        |h: &DhcpHost| record.is_some_and(|r| r.network == network && h.is(&r.mac, r.ip, &r.name));
    seen.refusal = refusal(&dhcp, network, name, mac, want, &ours).or_else(|| {
        leased_elsewhere(hv, network, mac, want)
            .unwrap_or_else(|e| Some(format!("cannot read the leases of `{network}`: {e:#}")))
    });
    Ok(seen)
}

/// Why `want` cannot be reserved on this network, from its definitions (running and saved).
fn refusal(
    dhcp: &NetworkDhcp,
    network: &str,
    name: &str,
    mac: Option<&str>,
    want: Ipv4Addr,
    ours: &dyn Fn(&DhcpHost) -> bool,
) -> Option<String> {
    let subnets = &dhcp.live;
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
    if let Some(saved) = &dhcp.saved {
        if !saved.iter().any(|s| s.contains(want)) {
            return Some(format!(
                "{want} is in network `{network}` as it runs, but not in its saved definition \
                 (edited since it started?): restart the network, or choose another address"
            ));
        }
    }
    // libvirt refuses a second entry with the same MAC, name or address: say which one is in the
    // way (running or only saved), and that it stays.
    for h in dhcp.hosts().filter(|h| !ours(h)) {
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
            "{why} ({}), not this instance's; virtup never changes it: choose another address, or \
             remove that entry (or what it belongs to)",
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
                // Expiry 0 is a lease that never ends.
                && (l.expiry == 0 || l.expiry > now)
                && !mac.is_some_and(|m| same_mac(&l.mac, m))
        })
        .map(|l| {
            let until = if l.expiry == 0 {
                "for good".to_owned()
            } else {
                format!("for {} more seconds", l.expiry - now)
            };
            format!(
                "{want} is leased on network `{network}` to MAC {} {until} (a lease outlives its \
                 guest), and libvirt's dnsmasq does not hand a leased address to another MAC; \
                 choose another address, or wait for the lease to end (or, if that guest is gone, \
                 release it: `dhcp_release {} {want} {}` from dnsmasq-utils)",
                l.mac,
                l.iface.as_deref().unwrap_or("<bridge>"),
                l.mac
            )
        }))
}

/// Adds the reservation for the instance's MAC and name. Before a clone's first volume: its
/// metadata (and stable MAC) are made here when there are none yet, and removed again when the
/// reservation fails. Recorded first, confirmed after libvirt took it; a failed add drops the
/// record only when the entry is nowhere (libvirt may have taken it before failing to save it).
/// Where a reservation goes: the instance, its network, and (once it has a NIC) that NIC's MAC.
pub struct Target<'a> {
    pub name: &'a str,
    pub template: &'a str,
    pub uri: &'a str,
    pub pool: &'a str,
    pub network: &'a str,
    /// The NIC's MAC when the domain exists; before it, the metadata's or a new stable one.
    pub nic_mac: Option<&'a str>,
}

pub fn reserve(data: &DataDir, hv: &Hypervisor, t: &Target, ip: Ipv4Addr) -> Result<()> {
    let (name, network) = (t.name, t.network);
    let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
    let existing = InstanceMeta::read(data, name)?;
    let fresh = existing.is_none();
    let mut meta = existing.unwrap_or_else(|| {
        // Where it lives, from the start: a run that stops before the clone is made leaves a
        // record that the next run (or `absent`) finds on the right hypervisor.
        let mut m = InstanceMeta::new(name, t.template);
        m.state = Some("creating".into());
        m.uri = Some(t.uri.to_owned());
        m.pool = Some(t.pool.to_owned());
        m
    });
    let mac = match (t.nic_mac, &meta.mac) {
        (Some(m), _) => m.to_owned(),
        (None, Some(m)) => m.clone(),
        (None, None) => {
            // A new MAC must not be one the network already reserves for someone else.
            let taken: BTreeSet<String> = match dhcp_of(hv, network)? {
                Some(d) => d.hosts().filter_map(|h| h.mac.clone()).collect(),
                None => BTreeSet::new(),
            };
            virtup_core::ensure_mac(data, name, &taken, SHORT_LOCK_TIMEOUT)?
        }
    };
    meta.mac = Some(mac.clone());
    meta.reservation = Some(Reservation {
        network: network.to_owned(),
        mac: mac.clone(),
        name: name.to_owned(),
        ip,
        confirmed: false,
    });
    meta.write(data)?;
    if let Err(e) = hv.add_dhcp_host(network, &mac, name, ip) {
        // libvirt may have taken the entry before failing (to save it, or the connection went):
        // while that cannot be ruled out, the pending record stays, for the next run to prove.
        let taken = match dhcp_of(hv, network) {
            Ok(Some(d)) => d.has(&mac, ip, name),
            Ok(None) => false,
            Err(_) => true,
        };
        if !taken {
            if fresh {
                InstanceMeta::remove(data, name)?;
            } else {
                meta.reservation = None;
                meta.write(data)?;
            }
        }
        return Err(e.into());
    }
    if let Some(r) = meta.reservation.as_mut() {
        r.confirmed = true;
    }
    meta.write(data)?;
    Ok(())
}

/// Removes the entry the instance's record names (observe proved it there), then the record. A
/// network that is gone took the entry with it.
pub fn unreserve(data: &DataDir, hv: &Hypervisor, name: &str) -> Result<()> {
    let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
    let Some(mut meta) = InstanceMeta::read(data, name)? else {
        return Ok(());
    };
    let Some(r) = meta.reservation.clone() else {
        return Ok(());
    };
    match hv.remove_dhcp_host(&r.network, &r.mac, &r.name, r.ip) {
        Ok(()) | Err(LibvirtError::NetworkNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    meta.reservation = None;
    meta.write(data)?;
    Ok(())
}

/// Brings the record in line with what observe proved, in a real run under the instance's lock:
/// an entry that is there is confirmed (a run killed before it could confirm), a record whose entry
/// is nowhere is dropped (nothing is left to own).
pub fn settle(data: &DataDir, name: &str, proven: bool) -> Result<()> {
    let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
    let Some(mut meta) = InstanceMeta::read(data, name)? else {
        return Ok(());
    };
    match (&mut meta.reservation, proven) {
        (Some(r), true) if !r.confirmed => r.confirmed = true,
        (Some(_), false) => meta.reservation = None,
        _ => return Ok(()),
    }
    meta.write(data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtup_libvirt::DhcpHost;

    fn subnet(hosts: Vec<DhcpHost>) -> NetworkDhcp {
        NetworkDhcp {
            active: true,
            persistent: true,
            live: vec![DhcpSubnet {
                index: 0,
                address: Ipv4Addr::new(192, 168, 122, 1),
                prefix: 24,
                hosts,
            }],
            saved: None,
            options: Default::default(),
        }
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
        let check = |subnets: &NetworkDhcp, want: &str| {
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
        let mut none = subnet(vec![]);
        none.live.clear();
        assert!(check(&none, "192.168.122.5")
            .unwrap()
            .contains("no IPv4 address by DHCP"));
        // An entry only in the saved definition (`virsh net-edit` without a restart) is in the way too.
        let mut edited = subnet(vec![]);
        edited.saved = Some(subnet(vec![host("52:54:00:cc:cc:cc", "db", "192.168.122.66")]).live);
        let why = check(&edited, "192.168.122.66").unwrap();
        assert!(
            why.contains("already reserved") && why.contains("52:54:00:cc:cc:cc"),
            "{why}"
        );
        // A MAC libvirt takes for the instance's, written otherwise.
        let odd = subnet(vec![host("52:54:0:12:34:56", "x", "192.168.122.90")]);
        let why = check(&odd, "192.168.122.70").unwrap();
        assert!(why.contains("this instance's MAC"), "{why}");
    }
}
