//! DHCP host reservations on libvirt networks: reading a network's IPv4 subnets and host entries, and adding or removing one entry.
//!
//! A reservation is a `<host mac=… name=… ip=…/>` inside the network's `<ip><dhcp>`: libvirt's
//! dnsmasq then always offers that address to that MAC, without the ping it makes before handing
//! out a dynamic one. virtup changes the live network and its persistent definition together, and
//! only with the exact entry it added, so no other entry is ever modified or removed.

use std::net::Ipv4Addr;

use virt::network::Network;
use virt::sys;

use crate::error::{LibvirtError, Result};
use crate::hypervisor::Hypervisor;
use crate::xml::{self, check_text, XmlWriter};

/// One `<host>` entry of a network's DHCP section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: Option<String>,
    pub name: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

impl DhcpHost {
    /// Same MAC (case does not matter), same address and same name: the entry virtup added.
    pub fn is(&self, mac: &str, ip: Ipv4Addr, name: &str) -> bool {
        self.mac
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            && self.ip == Some(ip)
            && self.name.as_deref() == Some(name)
    }

    pub fn has_mac(&self, mac: &str) -> bool {
        self.mac
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    }

    /// "MAC 52:54:00:…, name `web1`": how a message names someone else's entry.
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

/// The IPv4 subnets of a network definition that hand out addresses by DHCP.
pub fn parse_network_dhcp(network_xml: &str) -> Result<Vec<DhcpSubnet>> {
    let root = xml::parse(network_xml).map_err(|e| LibvirtError::parse("network XML", e))?;
    let mut subnets = Vec::new();
    for ip in root.children_named("ip") {
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
            // libvirt's default for IPv4 without either: the address's class, 24 for 192.168/16.
            (None, None) => Some(24),
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

impl Hypervisor {
    fn network_handle(&self, network: &str) -> Result<Network> {
        match self.conn.lookup_network_by_name(network) {
            Ok(n) => Ok(n),
            Err(e) if e.code().is(virt::error::ErrorNumber::NoNetwork) => {
                Err(LibvirtError::NetworkNotFound(network.to_owned()))
            }
            Err(e) => Err(LibvirtError::call("look up network", network, &e)),
        }
    }

    /// The network's IPv4 DHCP subnets, as it runs (its definition when it is not running).
    pub fn network_dhcp(&self, network: &str) -> Result<Vec<DhcpSubnet>> {
        let net = self.network_handle(network)?;
        let xml = net
            .xml_desc(0)
            .map_err(|e| LibvirtError::call("read network", network, &e))?;
        parse_network_dhcp(&xml)
    }

    /// Adds a reservation to the running network and to its definition. libvirt refuses an entry
    /// whose MAC or address another entry has, so two runs cannot both reserve one address.
    pub fn add_dhcp_host(&self, network: &str, mac: &str, name: &str, ip: Ipv4Addr) -> Result<()> {
        self.update_dhcp_host(
            network,
            sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            &dhcp_host_xml(mac, name, ip)?,
            "add a DHCP host reservation to network",
        )
    }

    /// Removes the entry with exactly this MAC, name and address (libvirt matches the whole entry).
    pub fn remove_dhcp_host(
        &self,
        network: &str,
        mac: &str,
        name: &str,
        ip: Ipv4Addr,
    ) -> Result<()> {
        self.update_dhcp_host(
            network,
            sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
            &dhcp_host_xml(mac, name, ip)?,
            "remove a DHCP host reservation from network",
        )
    }

    fn update_dhcp_host(
        &self,
        network: &str,
        command: sys::virNetworkUpdateCommand,
        host_xml: &str,
        action: &str,
    ) -> Result<()> {
        let net = self.network_handle(network)?;
        let active = net
            .is_active()
            .map_err(|e| LibvirtError::call("read network", network, &e))?;
        // Both, so that dnsmasq knows it now and the network keeps it across restarts; an
        // inactive network has only its definition.
        let flags = if active {
            sys::VIR_NETWORK_UPDATE_AFFECT_LIVE | sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
        } else {
            sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
        };
        net.update(
            command,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
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
        let hosts = &hv.network_dhcp("resv").unwrap()[0].hosts;
        assert!(
            hosts.iter().any(|h| h.is("52:54:00:00:00:01", ip, "web1")),
            "{hosts:?}"
        );
        // A second entry with the same address is libvirt's to refuse.
        assert!(hv
            .add_dhcp_host("resv", "52:54:00:00:00:02", "web2", ip)
            .is_err());
        hv.remove_dhcp_host("resv", "52:54:00:00:00:01", "web1", ip)
            .unwrap();
        assert!(hv.network_dhcp("resv").unwrap()[0].hosts.is_empty());
        assert!(matches!(
            hv.network_dhcp("nope"),
            Err(LibvirtError::NetworkNotFound(_))
        ));
    }
}
