//! DHCP host reservations on libvirt networks: reading a network's IPv4 subnets and host entries (as it runs and as it is saved), and adding or removing one entry.
//!
//! A reservation is a `<host mac=… name=… ip=…/>` inside the network's `<ip><dhcp>`: libvirt's
//! dnsmasq then always offers that address to that MAC, without the ping it makes before handing
//! out a dynamic one. The running network and its saved definition can differ (`virsh net-edit`
//! changes only the latter until a restart), so both are read, checked and changed. libvirt's
//! delete removes the *first* entry whose MAC (or lack of one), name and address match, which can
//! be someone else's: a removal goes ahead only where that first match is exactly virtup's entry.

use std::net::Ipv4Addr;

use virt::sys;

use crate::error::{LibvirtError, Result};
use crate::hypervisor::{is_unsupported, Hypervisor};
use crate::xml::{self, check_text, XmlWriter};

/// One `<host>` entry of a network's DHCP section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: Option<String>,
    pub name: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

/// A MAC's six bytes, read as libvirt reads one (hex digits in any case, one or two per octet).
pub fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Two MACs that libvirt takes for the same one.
pub fn same_mac(a: &str, b: &str) -> bool {
    matches!((mac_bytes(a), mac_bytes(b)), (Some(x), Some(y)) if x == y)
}

impl DhcpHost {
    /// Same MAC, same address and same name: the entry virtup added.
    pub fn is(&self, mac: &str, ip: Ipv4Addr, name: &str) -> bool {
        self.has_mac(mac) && self.ip == Some(ip) && self.name.as_deref() == Some(name)
    }

    pub fn has_mac(&self, mac: &str) -> bool {
        self.mac.as_deref().is_some_and(|m| same_mac(m, mac))
    }

    /// Whether libvirt's delete of `<host mac name ip/>` takes this entry: its MAC (when it has
    /// one), name and address match.
    fn taken_by_delete_of(&self, mac: &str, ip: Ipv4Addr, name: &str) -> bool {
        self.mac.as_deref().is_none_or(|m| same_mac(m, mac))
            && self.name.as_deref() == Some(name)
            && self.ip == Some(ip)
    }

    /// "MAC 52:54:00:…, name `web1`, address …": how a message names someone else's entry.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.mac {
            parts.push(format!("MAC {m}"));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name `{n}`"));
        }
        if let Some(ip) = &self.ip {
            parts.push(format!("address {ip}"));
        }
        parts.join(", ")
    }
}

/// One IPv4 `<ip>` of a network that has a `<dhcp>` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSubnet {
    /// Its position among all the network's `<ip>` elements (libvirt's `parentIndex`).
    pub index: usize,
    /// The host's own address on the network (the guests' gateway).
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub hosts: Vec<DhcpHost>,
}

impl DhcpSubnet {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = prefix_mask(self.prefix);
        u32::from(ip) & mask == u32::from(self.address) & mask
    }

    /// The subnet's own address and its broadcast address, which no guest can have.
    pub fn is_network_or_broadcast(&self, ip: Ipv4Addr) -> bool {
        let mask = prefix_mask(self.prefix);
        let host = u32::from(ip) & !mask;
        self.prefix < 31 && (host == 0 || host == !mask)
    }

    /// "192.168.122.0/24".
    pub fn cidr(&self) -> String {
        let net = Ipv4Addr::from(u32::from(self.address) & prefix_mask(self.prefix));
        format!("{net}/{}", self.prefix)
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// A network's DHCP subnets as it runs and as it is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDhcp {
    pub active: bool,
    /// A transient network has no saved definition to change.
    pub persistent: bool,
    /// As it runs; its saved definition when it does not run.
    pub live: Vec<DhcpSubnet>,
    /// Its saved definition while it runs (`None` when it does not run, is transient, or the
    /// driver cannot tell them apart, as libvirt's test driver).
    pub saved: Option<Vec<DhcpSubnet>>,
    /// What its DHCP server tells a guest besides the address, as it runs.
    pub options: DhcpOptions,
}

/// What libvirt's dnsmasq hands a guest with its lease besides the address: a guest configured by
/// hand (`address_mode: static`) is given the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpOptions {
    /// The host's address is the guest's router: the network forwards (`<forward>`); an isolated
    /// network gives no router.
    pub router: bool,
    /// The host's address is the guest's DNS server (unless `<dns enable='no'/>`).
    pub dns: bool,
    /// `<mtu size=…/>`.
    pub mtu: Option<u32>,
    /// `<domain name=…/>`: the guest's search domain.
    pub domain: Option<String>,
}

/// Reads [`DhcpOptions`] from a network's XML.
pub fn parse_dhcp_options(network_xml: &str) -> Result<DhcpOptions> {
    let root = xml::parse(network_xml).map_err(|e| LibvirtError::parse("network XML", e))?;
    Ok(DhcpOptions {
        router: root.child("forward").is_some(),
        dns: root
            .child("dns")
            .and_then(|d| d.attr("enable"))
            .is_none_or(|e| e != "no"),
        mtu: root
            .child("mtu")
            .and_then(|m| m.attr("size"))
            .and_then(|m| m.parse().ok()),
        domain: root
            .child("domain")
            .and_then(|d| d.attr("name"))
            .map(str::to_owned),
    })
}

impl NetworkDhcp {
    /// Every host entry, running and saved (an entry in both is listed twice).
    pub fn hosts(&self) -> impl Iterator<Item = &DhcpHost> {
        self.live
            .iter()
            .chain(self.saved.iter().flatten())
            .flat_map(|s| &s.hosts)
    }

    /// virtup's exact entry is in the running network or its saved definition.
    pub fn has(&self, mac: &str, ip: Ipv4Addr, name: &str) -> bool {
        self.hosts().any(|h| h.is(mac, ip, name))
    }

    /// virtup's exact entry is everywhere an add puts it: as the network runs and, while it runs
    /// with a saved definition of its own, there too (else a restart would drop it).
    pub fn has_everywhere(&self, mac: &str, ip: Ipv4Addr, name: &str) -> bool {
        let in_view =
            |v: &[DhcpSubnet]| v.iter().flat_map(|s| &s.hosts).any(|h| h.is(mac, ip, name));
        in_view(&self.live) && self.saved.as_deref().is_none_or(in_view)
    }
}

/// The IPv4 subnets of a network definition that hand out addresses by DHCP.
pub fn parse_network_dhcp(network_xml: &str) -> Result<Vec<DhcpSubnet>> {
    let root = xml::parse(network_xml).map_err(|e| LibvirtError::parse("network XML", e))?;
    let mut subnets = Vec::new();
    for (index, ip) in root.children_named("ip").enumerate() {
        if ip.attr("family").is_some_and(|f| f != "ipv4") {
            continue;
        }
        let Some(dhcp) = ip.child("dhcp") else {
            continue;
        };
        let Some(address) = ip.attr("address").and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let prefix = match (ip.attr("prefix"), ip.attr("netmask")) {
            (Some(p), _) => p.parse::<u8>().ok().filter(|p| *p <= 32),
            (None, Some(mask)) => mask
                .parse::<Ipv4Addr>()
                .ok()
                .map(u32::from)
                .filter(|m| m.leading_ones() + m.trailing_zeros() == 32)
                .map(|m| m.leading_ones() as u8),
            // libvirt's default without either: the address's class.
            (None, None) => Some(match address.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            }),
        };
        let Some(prefix) = prefix else {
            return Err(LibvirtError::parse(
                "network XML",
                format!("`<ip address='{address}'>` has an unreadable prefix or netmask"),
            ));
        };
        let hosts = dhcp
            .children_named("host")
            .map(|h| DhcpHost {
                mac: h.attr("mac").map(str::to_owned),
                name: h.attr("name").map(str::to_owned),
                ip: h.attr("ip").and_then(|a| a.parse().ok()),
            })
            .collect();
        subnets.push(DhcpSubnet {
            index,
            address,
            prefix,
            hosts,
        });
    }
    Ok(subnets)
}

/// The `<host/>` element libvirt's network update takes.
pub fn dhcp_host_xml(mac: &str, name: &str, ip: Ipv4Addr) -> Result<String> {
    check_text("MAC address", mac)?;
    check_text("host name", name)?;
    let ip = ip.to_string();
    let mut w = XmlWriter::new();
    w.empty("host", &[("mac", mac), ("name", name), ("ip", &ip)]);
    Ok(w.finish())
}

/// Where libvirt's delete of virtup's entry would act in one view: the index of its subnet, or the
/// entry that comes first and would be taken instead (someone else's).
fn delete_target(
    subnets: &[DhcpSubnet],
    mac: &str,
    ip: Ipv4Addr,
    name: &str,
) -> Option<std::result::Result<usize, DhcpHost>> {
    let subnet = subnets
        .iter()
        .find(|s| s.hosts.iter().any(|h| h.is(mac, ip, name)))?;
    let first = subnet
        .hosts
        .iter()
        .find(|h| h.taken_by_delete_of(mac, ip, name))?;
    Some(if first.is(mac, ip, name) {
        Ok(subnet.index)
    } else {
        Err(first.clone())
    })
}

impl Hypervisor {
    /// The network's IPv4 DHCP subnets, as it runs and as it is saved.
    pub fn network_dhcp(&self, network: &str) -> Result<NetworkDhcp> {
        let net = self.network_named(network)?;
        let fail = |e: virt::error::Error| LibvirtError::call("read network", network, &e);
        let active = net.is_active().map_err(fail)?;
        let persistent = net.is_persistent().map_err(fail)?;
        let live_xml = net.xml_desc(0).map_err(fail)?;
        let live = parse_network_dhcp(&live_xml)?;
        let options = parse_dhcp_options(&live_xml)?;
        let saved = if active && persistent {
            match net.xml_desc(sys::VIR_NETWORK_XML_INACTIVE) {
                Ok(xml) => Some(parse_network_dhcp(&xml)?),
                Err(e) if is_unsupported(&e) => None,
                Err(e) => return Err(fail(e)),
            }
        } else {
            None
        };
        Ok(NetworkDhcp {
            active,
            persistent,
            live,
            saved,
            options,
        })
    }

    /// Adds a reservation to the running network and to its saved definition, each in the IPv4
    /// subnet that holds `ip`. libvirt refuses an entry whose MAC, name or address another entry
    /// of that subnet has, so two runs cannot both reserve one address.
    pub fn add_dhcp_host(&self, network: &str, mac: &str, name: &str, ip: Ipv4Addr) -> Result<()> {
        let xml = dhcp_host_xml(mac, name, ip)?;
        let dhcp = self.network_dhcp(network)?;
        let index_in = |subnets: &[DhcpSubnet]| {
            subnets
                .iter()
                .find(|s| s.contains(ip))
                .map(|s| s.index)
                .ok_or_else(|| {
                    LibvirtError::invalid(
                        "address",
                        &ip.to_string(),
                        format!("no IPv4 DHCP subnet of network `{network}` holds it"),
                    )
                })
        };
        let live_flag = if dhcp.active {
            sys::VIR_NETWORK_UPDATE_AFFECT_LIVE
        } else {
            sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
        };
        let mut updates = vec![(index_in(&dhcp.live)?, live_flag)];
        match &dhcp.saved {
            Some(saved) => updates.push((index_in(saved)?, sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG)),
            // One definition for both (the test driver), when there is a saved one.
            None if dhcp.active && dhcp.persistent => {
                updates[0].1 |= sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
            }
            None => {}
        }
        for (index, flags) in updates {
            self.update_dhcp_host(
                network,
                sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                index,
                &xml,
                flags,
                "add a DHCP host reservation to network",
            )?;
        }
        Ok(())
    }

    /// Removes virtup's entry (exactly this MAC, name and address) wherever it is, running or
    /// saved. Where libvirt's delete would take another entry first (one without a MAC, same name
    /// and address), nothing is removed and that entry is named.
    pub fn remove_dhcp_host(
        &self,
        network: &str,
        mac: &str,
        name: &str,
        ip: Ipv4Addr,
    ) -> Result<()> {
        let xml = dhcp_host_xml(mac, name, ip)?;
        let dhcp = self.network_dhcp(network)?;
        let live_flag = match (&dhcp.saved, dhcp.active, dhcp.persistent) {
            (None, true, true) => {
                sys::VIR_NETWORK_UPDATE_AFFECT_LIVE | sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
            }
            (_, true, _) => sys::VIR_NETWORK_UPDATE_AFFECT_LIVE,
            (_, false, _) => sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        };
        let mut updates = Vec::new();
        for (subnets, flags) in [(Some(&dhcp.live), live_flag)]
            .into_iter()
            .chain([(dhcp.saved.as_ref(), sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG)])
        {
            let Some(subnets) = subnets else { continue };
            match delete_target(subnets, mac, ip, name) {
                None => {}
                Some(Ok(index)) => updates.push((index, flags)),
                Some(Err(first)) => {
                    return Err(LibvirtError::invalid(
                        "DHCP host reservation",
                        &format!("{mac} {name} {ip}"),
                        format!(
                            "libvirt would remove the entry ({}) before it in network \
                             `{network}`, which virtup did not add; nothing was removed: remove or \
                             change that entry yourself",
                            first.describe()
                        ),
                    ))
                }
            }
        }
        for (index, flags) in updates {
            self.update_dhcp_host(
                network,
                sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
                index,
                &xml,
                flags,
                "remove a DHCP host reservation from network",
            )?;
        }
        Ok(())
    }

    fn update_dhcp_host(
        &self,
        network: &str,
        command: sys::virNetworkUpdateCommand,
        index: usize,
        host_xml: &str,
        flags: sys::virNetworkUpdateFlags,
        action: &str,
    ) -> Result<()> {
        let net = self.network_named(network)?;
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        net.update(
            command,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            index,
            host_xml,
            flags,
        )
        .map_err(|e| LibvirtError::call(action, network, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_setup::NatNetworkSpec;

    #[test]
    fn dhcp_options_follow_forward_dns_mtu_and_domain() {
        let nat = parse_dhcp_options(
            "<network><forward mode='nat'/><mtu size='1400'/><domain name='lab.test'/></network>",
        )
        .unwrap();
        assert_eq!(
            nat,
            DhcpOptions {
                router: true,
                dns: true,
                mtu: Some(1400),
                domain: Some("lab.test".into()),
            }
        );
        let isolated = parse_dhcp_options("<network><dns enable='no'/></network>").unwrap();
        assert_eq!(isolated, DhcpOptions::default());
        let routed =
            parse_dhcp_options("<network><forward mode='route'/><dns enable='yes'/></network>")
                .unwrap();
        assert!(routed.router && routed.dns && routed.mtu.is_none() && routed.domain.is_none());
    }

    const NET: &str = r#"<network>
  <name>default</name>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
      <host mac='52:54:00:aa:bb:cc' name='other' ip='192.168.122.9'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00::1' prefix='64'><dhcp/></ip>
  <ip address='10.9.0.1' prefix='16'/>
</network>"#;

    #[test]
    fn ipv4_subnets_with_dhcp_and_their_hosts_are_read() {
        let subnets = parse_network_dhcp(NET).unwrap();
        assert_eq!(subnets.len(), 1, "{subnets:?}");
        let s = &subnets[0];
        assert_eq!((s.address, s.prefix), (Ipv4Addr::new(192, 168, 122, 1), 24));
        assert_eq!(s.cidr(), "192.168.122.0/24");
        assert!(s.hosts[0].is(
            "52:54:00:AA:BB:CC",
            "192.168.122.9".parse().unwrap(),
            "other"
        ));
        assert!(s.contains("192.168.122.200".parse().unwrap()));
        assert!(!s.contains("192.168.123.2".parse().unwrap()));
        assert!(s.is_network_or_broadcast("192.168.122.255".parse().unwrap()));
        assert!(s.is_network_or_broadcast("192.168.122.0".parse().unwrap()));
        assert!(!s.is_network_or_broadcast("192.168.122.7".parse().unwrap()));
    }

    #[test]
    fn a_non_contiguous_netmask_is_an_error_not_a_guess() {
        let xml = "<network><ip address='10.0.0.1' netmask='255.0.255.0'><dhcp/></ip></network>";
        assert!(parse_network_dhcp(xml).is_err());
    }

    #[test]
    fn macs_compare_as_libvirt_compares_them() {
        assert!(same_mac("52:54:0:A:0:5", "52:54:00:0a:00:05"));
        assert!(!same_mac("52:54:00:0a:00:05", "52:54:00:0a:00:06"));
        for bad in [
            "52:54:00:0a:00",
            "52:54:00:0a:00:05:07",
            "52:54:00:0a:00:0g",
            "52:54::0a:00:05",
        ] {
            assert_eq!(mac_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_index_counts_every_ip_and_the_default_prefix_is_the_class() {
        let xml = "<network><ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::10' end='fd00::ff'/></dhcp></ip>\
                   <ip address='10.0.0.1'><dhcp/></ip></network>";
        let subnets = parse_network_dhcp(xml).unwrap();
        assert_eq!((subnets[0].index, subnets[0].prefix), (1, 8));
        assert!(subnets[0].contains("10.3.0.9".parse().unwrap()));
    }

    #[test]
    fn a_delete_that_would_take_another_entry_first_is_named_not_made() {
        let ip: Ipv4Addr = "192.168.122.50".parse().unwrap();
        let ours = DhcpHost {
            mac: Some("52:54:00:00:00:01".into()),
            name: Some("web1".into()),
            ip: Some(ip),
        };
        let mac_less = DhcpHost {
            mac: None,
            ..ours.clone()
        };
        let subnet = |hosts: Vec<DhcpHost>| {
            vec![DhcpSubnet {
                index: 2,
                address: "192.168.122.1".parse().unwrap(),
                prefix: 24,
                hosts,
            }]
        };
        let mac = "52:54:0:0:0:1";
        assert_eq!(
            delete_target(&subnet(vec![ours.clone()]), mac, ip, "web1"),
            Some(Ok(2))
        );
        assert_eq!(
            delete_target(
                &subnet(vec![mac_less.clone(), ours.clone()]),
                mac,
                ip,
                "web1"
            ),
            Some(Err(mac_less.clone()))
        );
        // After it, the MAC-less entry is not in the way.
        assert_eq!(
            delete_target(&subnet(vec![ours, mac_less.clone()]), mac, ip, "web1"),
            Some(Ok(2))
        );
        assert_eq!(
            delete_target(&subnet(vec![mac_less]), mac, ip, "web1"),
            None
        );
    }

    #[test]
    fn host_xml_is_escaped_and_control_characters_are_refused() {
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let xml = dhcp_host_xml("52:54:00:00:00:01", "a'b<c", ip).unwrap();
        assert!(xml.contains("a&apos;b&lt;c"), "{xml}");
        assert!(dhcp_host_xml("52:54:00:00:00:01", "a\nb", ip).is_err());
    }

    #[test]
    fn reservations_are_added_and_removed_exactly_on_the_test_driver() {
        let hv = Hypervisor::connect("test:///default").unwrap();
        hv.define_network(&NatNetworkSpec {
            name: "resv".into(),
            bridge: "virbr7".into(),
            address: "192.168.77.1".into(),
            netmask: "255.255.255.0".into(),
            dhcp_start: "192.168.77.2".into(),
            dhcp_end: "192.168.77.254".into(),
        })
        .unwrap();
        hv.start_network("resv").unwrap();
        let ip: Ipv4Addr = "192.168.77.50".parse().unwrap();
        hv.add_dhcp_host("resv", "52:54:00:00:00:01", "web1", ip)
            .unwrap();
        let dhcp = hv.network_dhcp("resv").unwrap();
        assert!(dhcp.has("52:54:00:00:00:01", ip, "web1"), "{dhcp:?}");
        // A second entry with the same address is libvirt's to refuse.
        assert!(hv
            .add_dhcp_host("resv", "52:54:00:00:00:02", "web2", ip)
            .is_err());
        hv.remove_dhcp_host("resv", "52:54:00:00:00:01", "web1", ip)
            .unwrap();
        // On a network whose first `<ip>` is IPv6 with DHCP, the entry goes to the IPv4 one.
        hv.conn
            .define_network_xml(
                "<network><name>dual</name><bridge name='virbr8'/>\
                 <ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::10' end='fd00::ff'/></dhcp></ip>\
                 <ip address='192.168.78.1' prefix='24'><dhcp><range start='192.168.78.2' end='192.168.78.254'/></dhcp></ip>\
                 </network>",
            )
            .unwrap();
        hv.start_network("dual").unwrap();
        let ip2: Ipv4Addr = "192.168.78.9".parse().unwrap();
        hv.add_dhcp_host("dual", "52:54:00:00:00:03", "web3", ip2)
            .unwrap();
        assert!(hv
            .network_dhcp("dual")
            .unwrap()
            .has("52:54:00:00:00:03", ip2, "web3"));
        hv.remove_dhcp_host("dual", "52:54:00:00:00:03", "web3", ip2)
            .unwrap();
        assert_eq!(hv.network_dhcp("dual").unwrap().hosts().count(), 0);
        // A MAC-less entry with the same name and address before virtup's: libvirt's delete would
        // take it, so nothing is removed and it is named.
        hv.conn
            .define_network_xml(
                "<network><name>firstm</name><bridge name='virbr6'/>\
                 <ip address='192.168.79.1' prefix='24'><dhcp><range start='192.168.79.2' end='192.168.79.254'/>\
                 <host name='web4' ip='192.168.79.9'/>\
                 <host mac='52:54:00:00:00:04' name='web4' ip='192.168.79.9'/></dhcp></ip></network>",
            )
            .unwrap();
        hv.start_network("firstm").unwrap();
        let ip3: Ipv4Addr = "192.168.79.9".parse().unwrap();
        let e = hv
            .remove_dhcp_host("firstm", "52:54:00:00:00:04", "web4", ip3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("name `web4`, address 192.168.79.9") && e.contains("nothing was removed"),
            "{e}"
        );
        assert_eq!(hv.network_dhcp("firstm").unwrap().hosts().count(), 2);
        assert_eq!(hv.network_dhcp("resv").unwrap().hosts().count(), 0);
        assert!(matches!(
            hv.network_dhcp("nope"),
            Err(LibvirtError::NetworkNotFound(_))
        ));
    }
}
