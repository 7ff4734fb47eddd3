//! Storage pool and volume XML as pure functions: volume definitions out, pool and volume facts in.

use crate::domain_xml::ImageFormat;
use crate::error::{LibvirtError, Result};
use crate::xml::{self, check_text, scaled_bytes, XmlWriter};

/// A volume to create: empty, as a copy-on-write overlay on `backing`, or (for clones) a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    /// Virtual size; `0` with a backing file means "as large as the backing file".
    pub capacity_bytes: u64,
    pub format: ImageFormat,
    /// `(path, format)` of the backing file for a qcow2 overlay.
    pub backing: Option<(String, ImageFormat)>,
}

impl VolumeSpec {
    pub fn new(name: impl Into<String>, capacity_bytes: u64, format: ImageFormat) -> Self {
        VolumeSpec {
            name: name.into(),
            capacity_bytes,
            format,
            backing: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_text("volume name", &self.name)?;
        if self.name.is_empty() || self.name.contains('/') || self.name == "." || self.name == ".."
        {
            return Err(LibvirtError::invalid(
                "volume name",
                &self.name,
                "must be a plain file name",
            ));
        }
        if let Some((path, _)) = &self.backing {
            check_text("backing path", path)?;
            if !path.starts_with('/') {
                return Err(LibvirtError::invalid(
                    "backing path",
                    path,
                    "must be absolute",
                ));
            }
            if self.format != ImageFormat::Qcow2 {
                return Err(LibvirtError::invalid(
                    "volume format",
                    self.format.as_str(),
                    format!("only qcow2 can have a backing file (`{}`)", self.name),
                ));
            }
        } else if self.capacity_bytes == 0 {
            return Err(LibvirtError::invalid(
                "volume capacity",
                "0",
                format!("volume `{}` needs a size", self.name),
            ));
        }
        Ok(())
    }

    /// Renders `<volume>`; allocation 0 keeps new and copied volumes sparse.
    pub fn to_xml(&self) -> Result<String> {
        self.validate()?;
        let mut w = XmlWriter::new();
        w.open("volume", &[]);
        w.leaf("name", &[], &self.name);
        if self.capacity_bytes > 0 || self.backing.is_none() {
            w.leaf(
                "capacity",
                &[("unit", "bytes")],
                &self.capacity_bytes.to_string(),
            );
        }
        w.leaf("allocation", &[("unit", "bytes")], "0");
        w.open("target", &[]);
        w.empty("format", &[("type", self.format.as_str())]);
        w.close("target");
        if let Some((path, format)) = &self.backing {
            w.open("backingStore", &[]);
            w.leaf("path", &[], path);
            w.empty("format", &[("type", format.as_str())]);
            w.close("backingStore");
        }
        w.close("volume");
        Ok(w.finish())
    }
}

/// A volume as libvirt describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub path: String,
    /// libvirt's key for the volume (its path on directory pools): the identity virtup's
    /// ownership ledger records.
    pub key: String,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    /// `qcow2`, `raw`, `iso`… as libvirt probed it.
    pub format: Option<String>,
    /// Path of the backing file, if any.
    pub backing: Option<String>,
}

pub fn parse_volume_xml(volume_xml: &str) -> Result<VolumeInfo> {
    let fail = |m: String| LibvirtError::parse("volume XML", m);
    let root = xml::parse(volume_xml).map_err(fail)?;
    if root.name != "volume" {
        return Err(fail(format!(
            "root element is `{}`, not `volume`",
            root.name
        )));
    }
    let name = root
        .child_text("name")
        .ok_or_else(|| fail("no <name>".into()))?
        .to_owned();
    let size = |el: &str| -> Result<u64> {
        match root.child(el) {
            None => Ok(0),
            Some(e) => scaled_bytes(&e.text, e.attr("unit"))
                .ok_or_else(|| fail(format!("volume `{name}` has an unreadable <{el}>"))),
        }
    };
    let target = root.child("target");
    let path = target
        .and_then(|t| t.child_text("path"))
        .map(|p| p.trim().to_owned())
        .ok_or_else(|| fail(format!("volume `{name}` has no <target><path>")))?;
    Ok(VolumeInfo {
        key: root
            .child_text("key")
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| path.clone()),
        path,
        capacity_bytes: size("capacity")?,
        allocation_bytes: size("allocation")?,
        format: target
            .and_then(|t| t.child("format"))
            .and_then(|f| f.attr("type"))
            .map(str::to_owned),
        backing: root
            .path(&["backingStore", "path"])
            .map(|p| p.text.trim().to_owned())
            .filter(|p| !p.is_empty()),
        name,
    })
}

/// A storage pool: where its volumes live and whether it is usable now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    /// `dir`, `fs`, `logical`…
    pub kind: String,
    /// The target path (a directory for `dir` pools).
    pub path: Option<String>,
    pub active: bool,
}

pub(crate) fn parse_pool_xml(pool_xml: &str, active: bool) -> Result<PoolInfo> {
    let fail = |m: String| LibvirtError::parse("storage pool XML", m);
    let root = xml::parse(pool_xml).map_err(fail)?;
    if root.name != "pool" {
        return Err(fail(format!("root element is `{}`, not `pool`", root.name)));
    }
    Ok(PoolInfo {
        name: root
            .child_text("name")
            .ok_or_else(|| fail("no <name>".into()))?
            .to_owned(),
        kind: root.attr("type").unwrap_or_default().to_owned(),
        path: root
            .path(&["target", "path"])
            .map(|p| p.text.trim().to_owned()),
        active,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_xml_carries_the_backing_store() {
        let mut spec = VolumeSpec::new("web1.qcow2", 0, ImageFormat::Qcow2);
        spec.backing = Some(("/pool/debian & co.qcow2".into(), ImageFormat::Qcow2));
        let xml = spec.to_xml().unwrap();
        assert!(
            !xml.contains("<capacity"),
            "size comes from the backing file:\n{xml}"
        );
        let root = xml::parse(&xml).unwrap();
        assert_eq!(root.child_text("name"), Some("web1.qcow2"));
        assert_eq!(
            root.path(&["backingStore", "path"])
                .map(|p| p.text.as_str()),
            Some("/pool/debian & co.qcow2")
        );
        assert_eq!(
            root.path(&["backingStore", "format"])
                .and_then(|f| f.attr("type")),
            Some("qcow2")
        );
        assert_eq!(
            root.path(&["target", "format"])
                .and_then(|f| f.attr("type")),
            Some("qcow2")
        );
        assert_eq!(root.child_text("allocation"), Some("0"));

        spec.capacity_bytes = 20 << 30;
        let root = xml::parse(&spec.to_xml().unwrap()).unwrap();
        assert_eq!(root.child_text("capacity"), Some("21474836480"));
    }

    #[test]
    fn bad_volume_specs_are_refused() {
        let base = VolumeSpec::new("v.raw", 1 << 20, ImageFormat::Raw);
        let cases: Vec<(VolumeSpec, &str)> = vec![
            (
                VolumeSpec {
                    name: "../etc".into(),
                    ..base.clone()
                },
                "invalid volume name `../etc`",
            ),
            (
                VolumeSpec {
                    name: "".into(),
                    ..base.clone()
                },
                "invalid volume name ``",
            ),
            (
                VolumeSpec {
                    capacity_bytes: 0,
                    ..base.clone()
                },
                "invalid volume capacity `0`",
            ),
            (
                VolumeSpec {
                    backing: Some(("/b.qcow2".into(), ImageFormat::Qcow2)),
                    ..base.clone()
                },
                "invalid volume format `raw`",
            ),
            (
                VolumeSpec {
                    format: ImageFormat::Qcow2,
                    backing: Some(("b.qcow2".into(), ImageFormat::Qcow2)),
                    ..base.clone()
                },
                "invalid backing path `b.qcow2`",
            ),
        ];
        for (spec, want) in cases {
            let err = spec.to_xml().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn reads_libvirt_volume_and_pool_xml() {
        let vol = r#"<volume type='file'>
  <name>web1.qcow2</name>
  <key>/var/lib/libvirt/images/web1.qcow2</key>
  <capacity unit='bytes'>21474836480</capacity>
  <allocation unit='bytes'>196608</allocation>
  <physical unit='bytes'>196616</physical>
  <target>
    <path>/var/lib/libvirt/images/web1.qcow2</path>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>/var/lib/libvirt/images/debian-12.qcow2</path>
    <format type='qcow2'/>
  </backingStore>
</volume>"#;
        let info = parse_volume_xml(vol).unwrap();
        assert_eq!(info.name, "web1.qcow2");
        assert_eq!(info.path, "/var/lib/libvirt/images/web1.qcow2");
        assert_eq!(
            (info.capacity_bytes, info.allocation_bytes),
            (20 << 30, 196608)
        );
        assert_eq!(info.format.as_deref(), Some("qcow2"));
        assert_eq!(
            info.backing.as_deref(),
            Some("/var/lib/libvirt/images/debian-12.qcow2")
        );

        let pool = "<pool type='dir'><name>default</name><target><path>/var/lib/libvirt/images</path></target></pool>";
        let info = parse_pool_xml(pool, true).unwrap();
        assert_eq!(info.path.as_deref(), Some("/var/lib/libvirt/images"));
        assert_eq!((info.kind.as_str(), info.active), ("dir", true));
        assert!(parse_volume_xml("<pool/>").is_err());
        assert!(parse_pool_xml("<volume/>", false).is_err());
    }
}
