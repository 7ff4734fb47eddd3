//! Hypervisor set-up that virtup needs before its first template: a directory pool and a NAT network, defined, active and autostarted.

use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;

use crate::error::{LibvirtError, Result};
use crate::hypervisor::Hypervisor;
use crate::xml::{check_text, XmlWriter};

/// What libvirt says about a virtual network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub active: bool,
    pub autostart: bool,
    pub bridge: Option<String>,
}

/// A NAT network with DHCP, like the `default` network libvirt ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatNetworkSpec {
    pub name: String,
    pub bridge: String,
    /// The host's address on the bridge, e.g. `192.168.122.1`.
    pub address: String,
    pub netmask: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
}

impl NatNetworkSpec {
    pub fn to_xml(&self) -> Result<String> {
        for (what, v) in [
            ("network name", &self.name),
            ("network bridge", &self.bridge),
            ("network address", &self.address),
            ("network netmask", &self.netmask),
            ("DHCP range start", &self.dhcp_start),
            ("DHCP range end", &self.dhcp_end),
        ] {
            check_text(what, v)?;
        }
        let mut w = XmlWriter::new();
        w.open("network", &[]);
        w.leaf("name", &[], &self.name);
        w.empty("forward", &[("mode", "nat")]);
        w.empty(
            "bridge",
            &[("name", &self.bridge), ("stp", "on"), ("delay", "0")],
        );
        w.open(
            "ip",
            &[("address", &self.address), ("netmask", &self.netmask)],
        );
        w.open("dhcp", &[]);
        w.empty(
            "range",
            &[("start", &self.dhcp_start), ("end", &self.dhcp_end)],
        );
        w.close("dhcp");
        w.close("ip");
        w.close("network");
        Ok(w.finish())
    }
}

/// A directory pool's definition.
pub fn dir_pool_xml(name: &str, path: &str) -> Result<String> {
    check_text("pool name", name)?;
    check_text("pool path", path)?;
    let mut w = XmlWriter::new();
    w.open("pool", &[("type", "dir")]);
    w.leaf("name", &[], name);
    w.open("target", &[]);
    w.leaf("path", &[], path);
    w.close("target");
    w.close("pool");
    Ok(w.finish())
}

impl Hypervisor {
    /// A network by name, the one lookup of the crate: `None` when it does not exist.
    pub(crate) fn find_network(&self, name: &str) -> Result<Option<Network>> {
        match self.conn.lookup_network_by_name(name) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.code().is(ErrorNumber::NoNetwork) => Ok(None),
            Err(e) => Err(LibvirtError::call("look up network", name, &e)),
        }
    }

    /// A network that must exist: [`LibvirtError::NetworkNotFound`] otherwise.
    pub(crate) fn network_named(&self, name: &str) -> Result<Network> {
        self.find_network(name)?
            .ok_or_else(|| LibvirtError::NetworkNotFound(name.to_owned()))
    }

    /// The type of host network interface `name` as libvirt's interface driver lists it (`bridge`,
    /// `ethernet`, `bond`, …), `None` when the driver does not list it. Only a hint: a driver built
    /// on netcf lists only interfaces in the distribution's config files, and a host may run none
    /// (split daemons without virtinterfaced), which is an error here.
    pub fn host_interface_type(&self, name: &str) -> Result<Option<String>> {
        let fail = |e: &VirtError| LibvirtError::call("look up host interface", name, e);
        let iface = match self.conn.lookup_interface_by_name(name) {
            Ok(i) => i,
            Err(e) if e.code().is(ErrorNumber::NoInterface) => return Ok(None),
            Err(e) => return Err(fail(&e)),
        };
        let xml = iface.xml_desc(0).map_err(|e| fail(&e))?;
        let root =
            crate::xml::parse(&xml).map_err(|e| LibvirtError::parse("host interface XML", e))?;
        Ok(Some(root.attr("type").unwrap_or_default().to_owned()))
    }

    /// A network by name, `None` if it does not exist.
    pub fn network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        let Some(net) = self.find_network(name)? else {
            return Ok(None);
        };
        let fail = |e: VirtError| LibvirtError::call("read network", name, &e);
        Ok(Some(NetworkInfo {
            name: name.to_owned(),
            active: net.is_active().map_err(fail)?,
            autostart: net.autostart().map_err(fail)?,
            bridge: net.bridge_name().ok().filter(|b| !b.is_empty()),
        }))
    }

    pub fn define_network(&self, spec: &NatNetworkSpec) -> Result<()> {
        let xml = spec.to_xml()?;
        self.conn
            .define_network_xml(&xml)
            .map_err(|e| LibvirtError::call("define network", &spec.name, &e))?;
        Ok(())
    }

    pub fn start_network(&self, name: &str) -> Result<()> {
        let net = self.network_named(name)?;
        net.create()
            .map_err(|e| LibvirtError::call("start network", name, &e))
    }

    pub fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<()> {
        let net = self.network_named(name)?;
        net.set_autostart(autostart)
            .map_err(|e| LibvirtError::call("set autostart of network", name, &e))
    }

    /// Defines a directory pool and creates its directory (`virStoragePoolBuild`).
    pub fn define_dir_pool(&self, name: &str, path: &str) -> Result<()> {
        let xml = dir_pool_xml(name, path)?;
        let pool = self
            .conn
            .define_storage_pool_xml(&xml, 0)
            .map_err(|e| LibvirtError::call("define storage pool", name, &e))?;
        pool.build(0)
            .map_err(|e| LibvirtError::call("build storage pool", name, &e))
    }

    pub fn start_pool(&self, name: &str) -> Result<()> {
        self.lookup_pool(name)?
            .create(0)
            .map_err(|e| LibvirtError::call("start storage pool", name, &e))
    }

    pub fn pool_autostart(&self, name: &str) -> Result<bool> {
        self.lookup_pool(name)?
            .autostart()
            .map_err(|e| LibvirtError::call("read autostart of storage pool", name, &e))
    }

    pub fn set_pool_autostart(&self, name: &str, autostart: bool) -> Result<()> {
        self.lookup_pool(name)?
            .set_autostart(autostart)
            .map_err(|e| LibvirtError::call("set autostart of storage pool", name, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NatNetworkSpec {
        NatNetworkSpec {
            name: "virtup".into(),
            bridge: "virbr9".into(),
            address: "192.168.150.1".into(),
            netmask: "255.255.255.0".into(),
            dhcp_start: "192.168.150.2".into(),
            dhcp_end: "192.168.150.254".into(),
        }
    }

    #[test]
    fn network_and_pool_round_trip_through_the_test_driver() {
        let hv = Hypervisor::connect("test:///default").unwrap();
        assert_eq!(hv.network("virtup").unwrap(), None);
        hv.define_network(&spec()).unwrap();
        let info = hv.network("virtup").unwrap().unwrap();
        assert!(!info.active && !info.autostart);
        hv.start_network("virtup").unwrap();
        hv.set_network_autostart("virtup", true).unwrap();
        let info = hv.network("virtup").unwrap().unwrap();
        assert!(info.active && info.autostart, "{info:?}");
        assert_eq!(info.bridge.as_deref(), Some("virbr9"));

        assert_eq!(hv.pool("vpool").unwrap(), None);
        hv.define_dir_pool("vpool", "/vpool").unwrap();
        assert!(!hv.pool("vpool").unwrap().unwrap().active);
        hv.start_pool("vpool").unwrap();
        hv.set_pool_autostart("vpool", true).unwrap();
        let pool = hv.pool("vpool").unwrap().unwrap();
        assert!(pool.active && hv.pool_autostart("vpool").unwrap());
        assert_eq!(pool.path.as_deref(), Some("/vpool"));
    }

    #[test]
    fn hostile_values_are_refused_before_libvirt() {
        let mut s = spec();
        s.name = "a\u{0}b".into();
        assert!(s.to_xml().is_err());
        assert!(dir_pool_xml("p", "/x\u{0}").is_err());
        // Markup is escaped, never interpreted.
        let xml = dir_pool_xml("p", "/a<b>&").unwrap();
        assert!(xml.contains("/a&lt;b&gt;&amp;"), "{xml}");
    }
}
