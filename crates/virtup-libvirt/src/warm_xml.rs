//! The domain XML a warm clone resumes under: its template seed's saved XML with the clone's own name, UUID, VM generation ID, disk and tag.
//!
//! Only what makes the machine another one changes; every device, address and alias stays as the
//! seed's memory image expects it (libvirt hands them to QEMU, which must find the same hardware
//! the image was saved from). The SMBIOS family that made the guest wait as a seed goes, so that a
//! reset of the clone does not wait again.

use crate::error::{LibvirtError, Result};
use crate::tag::VirtupTag;
use crate::xml::{check_text, parse, Element, XmlWriter};

/// What makes a clone of a seed another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmClone<'a> {
    pub name: &'a str,
    pub uuid: &'a str,
    /// A fresh VM generation ID: the resumed guest sees it change and reseeds its RNG.
    pub genid: &'a str,
    /// The clone's own disk, in place of the seed's first disk (`vda`).
    pub disk_path: &'a str,
    pub tag: &'a VirtupTag,
}

/// The SMBIOS system family that marks a seed (the guest's first boot waits for a config disk).
pub const SEED_FAMILY: &str = "virtup-seed";
/// The virtio port a seed holds open while it is ready to be saved.
pub const SEED_PORT: &str = "dev.virtup.seed";

/// Rewrites a seed's saved domain XML for one clone; refuses XML it does not understand (a
/// namespaced element outside `<metadata>`, no `vda`, no `<genid>`) rather than guess.
pub fn warm_clone_xml(saved: &str, clone: &WarmClone<'_>) -> Result<String> {
    let bad = |why: String| LibvirtError::invalid("seed XML", "(saved domain XML)", why);
    check_text("domain name", clone.name)?;
    check_text("uuid", clone.uuid)?;
    check_text("genid", clone.genid)?;
    check_text("disk path", clone.disk_path)?;
    let mut root = parse(saved).map_err(bad)?;
    if root.name != "domain" || root.ns.is_some() {
        return Err(bad(format!("the root is <{}>, not <domain>", root.name)));
    }
    set_text(&mut root, "name", clone.name).ok_or_else(|| bad("it has no <name>".into()))?;
    set_text(&mut root, "uuid", clone.uuid).ok_or_else(|| bad("it has no <uuid>".into()))?;
    set_text(&mut root, "genid", clone.genid)
        .ok_or_else(|| bad("it has no <genid>: a clone could not tell it is a copy".into()))?;
    let disk = root
        .children
        .iter_mut()
        .filter(|c| c.ns.is_none() && c.name == "devices")
        .flat_map(|d| d.children.iter_mut())
        .find(|d| {
            d.name == "disk"
                && d.child("target")
                    .and_then(|t| t.attr("dev"))
                    .is_some_and(|dev| dev == "vda")
        })
        .ok_or_else(|| bad("it has no disk `vda`".into()))?;
    let source = disk
        .children
        .iter_mut()
        .find(|c| c.ns.is_none() && c.name == "source")
        .ok_or_else(|| bad("disk `vda` has no <source>".into()))?;
    set_attr(source, "file", clone.disk_path);
    // The saved chain ends at the seed's disk; left out, libvirt reads the clone's chain from
    // its image (clone, seed disk, generation) instead of trusting a stale one.
    disk.children.retain(|c| c.name != "backingStore");
    if let Some(system) = root
        .children
        .iter_mut()
        .filter(|c| c.ns.is_none() && c.name == "sysinfo")
        .flat_map(|s| s.children.iter_mut())
        .find(|c| c.ns.is_none() && c.name == "system")
    {
        system
            .children
            .retain(|e| !(e.name == "entry" && e.attr("name") == Some("family")));
    }
    root.children.retain(|c| c.name != "metadata");
    clone.tag.validate()?;
    let mut w = XmlWriter::new();
    write(&mut w, &root, Some(clone.tag)).map_err(bad)?;
    Ok(w.finish())
}

/// The persistent definition of a resumed clone: its live XML (the seed's device layout, with the
/// NIC and config disk where they were hot-plugged), so that later cold boots find every device in
/// the slot the clone first ran with (a NIC moved to another PCI slot gets another name). What only
/// a running domain has (aliases, backing chains, tap names) is left out; `tag` is its metadata.
pub fn persistent_xml_from_live(live: &str, tag: &VirtupTag) -> Result<String> {
    let bad = |why: String| LibvirtError::invalid("live domain XML", "(domain XML)", why);
    let mut root = parse(live).map_err(bad)?;
    if root.name != "domain" || root.ns.is_some() {
        return Err(bad(format!("the root is <{}>, not <domain>", root.name)));
    }
    root.attrs.retain(|(k, _)| k == "type");
    root.children
        .retain(|c| !matches!(c.name.as_str(), "metadata" | "resource" | "seclabel"));
    strip_live(&mut root);
    tag.validate()?;
    let mut w = XmlWriter::new();
    write(&mut w, &root, Some(tag)).map_err(bad)?;
    Ok(w.finish())
}

fn strip_live(el: &mut Element) {
    let is_interface = el.name == "interface";
    el.children.retain(|c| {
        !(c.name == "alias"
            || c.name == "backingStore"
            || (is_interface && c.name == "target")
            || (c.name == "source" && el.name == "channel"))
    });
    for child in &mut el.children {
        if child.name == "source" && el.name == "disk" {
            child.attrs.retain(|(k, _)| k != "index");
        }
        if child.name == "target" && el.name == "channel" {
            child.attrs.retain(|(k, _)| k != "state");
        }
        strip_live(child);
    }
}

fn set_text(root: &mut Element, child: &str, text: &str) -> Option<()> {
    let el = root
        .children
        .iter_mut()
        .find(|c| c.ns.is_none() && c.name == child)?;
    el.text = text.to_owned();
    Some(())
}

fn set_attr(el: &mut Element, name: &str, value: &str) {
    match el.attrs.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => el.attrs.push((name.to_owned(), value.to_owned())),
    }
}

/// Writes `el` back; `tag` becomes the `<metadata>` right after `<name>`, `<uuid>` and `<genid>`.
fn write(
    w: &mut XmlWriter,
    el: &Element,
    tag: Option<&VirtupTag>,
) -> std::result::Result<(), String> {
    if el.ns.is_some() {
        return Err(format!("it has a namespaced element <{}>", el.name));
    }
    let attrs: Vec<(&str, &str)> = el
        .attrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if el.children.is_empty() && tag.is_none() {
        if el.text.is_empty() {
            w.empty(&el.name, &attrs);
        } else {
            w.leaf(&el.name, &attrs, &el.text);
        }
        return Ok(());
    }
    w.open(&el.name, &attrs);
    // libvirt's order: name, uuid, genid, then metadata.
    let after = el
        .children
        .iter()
        .rposition(|c| matches!(c.name.as_str(), "name" | "uuid" | "genid"));
    let mut tag = tag;
    for (i, child) in el.children.iter().enumerate() {
        write(w, child, None)?;
        if Some(i) == after {
            if let Some(t) = tag.take() {
                w.open("metadata", &[]);
                t.write(w, true);
                w.close("metadata");
            }
        }
    }
    w.close(&el.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::TagKind;
    use crate::{DiskSpec, DomainSpec, ImageFormat, VirtType};

    fn seed_xml() -> String {
        let mut spec = DomainSpec::new("VIRTUP-t-seed", 512, 1, VirtType::Qemu);
        spec.uuid = Some("11111111-2222-3333-4444-555555555555".into());
        spec.genid = true;
        spec.smbios_family = Some(SEED_FAMILY.into());
        spec.ports = vec![SEED_PORT.into()];
        spec.disks = vec![DiskSpec::disk(
            "/pool/VIRTUP-t-g1-warm.qcow2",
            ImageFormat::Qcow2,
        )];
        spec.metadata = Some(VirtupTag::new(TagKind::Seed, "t"));
        // What libvirt adds to a live XML: a generated genid, a backing chain, aliases.
        spec.to_xml()
            .unwrap()
            .replace("<genid/>", "<genid>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</genid>")
            .replace(
                "<target dev=\"vda\" bus=\"virtio\"/>",
                "<backingStore type=\"file\"><format type=\"qcow2\"/><source file=\"/pool/VIRTUP-t-g1.qcow2\"/></backingStore><target dev=\"vda\" bus=\"virtio\"/><alias name=\"virtio-disk0\"/>",
            )
    }

    fn clone_tag() -> VirtupTag {
        let mut tag = VirtupTag::new(TagKind::Instance, "web1");
        tag.template = Some("t".into());
        tag.generation = 1;
        tag
    }

    #[test]
    fn a_clone_gets_its_own_name_uuid_genid_disk_and_tag_and_keeps_the_devices() {
        let tag = clone_tag();
        let xml = warm_clone_xml(
            &seed_xml(),
            &WarmClone {
                name: "web1",
                uuid: "99999999-2222-3333-4444-555555555555",
                genid: "12345678-1234-1234-1234-123456789abc",
                disk_path: "/pool/web1.qcow2",
                tag: &tag,
            },
        )
        .unwrap();
        let parsed = crate::parse_domain_xml(&xml).unwrap();
        assert_eq!(parsed.name, "web1");
        assert_eq!(
            parsed.uuid.as_deref(),
            Some("99999999-2222-3333-4444-555555555555")
        );
        assert_eq!(parsed.disk_paths(), vec!["/pool/web1.qcow2"]);
        assert!(xml.contains("<genid>12345678-1234-1234-1234-123456789abc</genid>"));
        assert!(!xml.contains("backingStore"), "{xml}");
        assert!(
            !xml.contains(SEED_FAMILY),
            "a reset clone must not wait as a seed: {xml}"
        );
        assert!(xml.contains(SEED_PORT), "the devices stay as saved: {xml}");
        assert!(xml.contains("<alias name=\"virtio-disk0\"/>"), "{xml}");
        // The tag is inside <metadata>, and it is the clone's.
        let root = parse(&xml).unwrap();
        assert_eq!(root.path(&["metadata"]).map(|m| m.children.len()), Some(1));
        assert!(xml.contains("<virtup:name>web1</virtup:name>"), "{xml}");
        assert!(!xml.contains("kind=\"seed\""), "{xml}");
    }

    #[test]
    fn a_resumed_clone_is_defined_as_it_runs_without_what_only_a_running_domain_has() {
        let live = seed_xml()
            .replace(
                "<domain type=\"qemu\">",
                "<domain type=\"qemu\" id=\"7\">",
            )
            .replace(
                "</devices>",
                "<interface type=\"network\"><mac address=\"52:54:00:00:00:01\"/><source network=\"default\"/><target dev=\"vnet3\"/><address type=\"pci\" slot=\"0x06\"/></interface></devices>",
            )
            .replace("<target type=\"virtio\" name=\"dev.virtup.seed\"/>", "<source mode=\"bind\" path=\"/run/x\"/><target type=\"virtio\" name=\"dev.virtup.seed\" state=\"connected\"/>");
        let tag = clone_tag();
        let xml = persistent_xml_from_live(&live, &tag).unwrap();
        for gone in [
            "id=\"7\"",
            "backingStore",
            "alias",
            "vnet3",
            "/run/x",
            "state=",
            "kind=\"seed\"",
        ] {
            assert!(!xml.contains(gone), "{gone} stays in {xml}");
        }
        for kept in [
            "slot=\"0x06\"",
            "52:54:00:00:00:01",
            "<virtup:name>web1</virtup:name>",
            "aaaaaaaa-bbbb",
        ] {
            assert!(xml.contains(kept), "{kept} is lost from {xml}");
        }
        let parsed = crate::parse_domain_xml(&xml).unwrap();
        assert_eq!(parsed.tag, Some(tag));
    }

    #[test]
    fn xml_it_does_not_understand_is_refused() {
        let tag = clone_tag();
        let clone = WarmClone {
            name: "web1",
            uuid: "99999999-2222-3333-4444-555555555555",
            genid: "12345678-1234-1234-1234-123456789abc",
            disk_path: "/pool/web1.qcow2",
            tag: &tag,
        };
        let no_genid =
            seed_xml().replace("<genid>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</genid>", "");
        let e = warm_clone_xml(&no_genid, &clone).unwrap_err().to_string();
        assert!(e.contains("genid"), "{e}");
        let no_vda = seed_xml().replace("dev=\"vda\"", "dev=\"sda\"");
        let e = warm_clone_xml(&no_vda, &clone).unwrap_err().to_string();
        assert!(e.contains("vda"), "{e}");
        let foreign = seed_xml().replace(
            "<devices>",
            "<qemu:commandline xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\"/><devices>",
        );
        let e = warm_clone_xml(&foreign, &clone).unwrap_err().to_string();
        assert!(e.contains("namespaced"), "{e}");
        let bad_name = WarmClone {
            name: "a\u{7}",
            ..clone.clone()
        };
        assert!(warm_clone_xml(&seed_xml(), &bad_name).is_err());
    }
}
