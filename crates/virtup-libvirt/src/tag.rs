//! The virtup tag: the mark in a domain's `<metadata>` that says "virtup made this, from that".
//!
//! Only domains carrying a well-formed tag are ever treated as virtup's; a malformed or foreign
//! element reads as "no tag", so virtup never claims (or deletes) what it cannot recognise.

use crate::error::Result;
use crate::xml::{self, check_text, Element, XmlWriter};

/// The namespace URI of the tag element inside `<metadata>`.
pub const VIRTUP_NS: &str = "https://virtup.dev/xmlns/domain/1";
/// The prefix used when writing the tag (readers go by the URI, not the prefix).
pub const VIRTUP_PREFIX: &str = "virtup";
/// Local name of the tag element.
pub(crate) const TAG_ELEMENT: &str = "tag";

/// What a tagged domain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    Template,
    Instance,
    /// A template generation's seed, booted once and saved for warm clones (transient).
    Seed,
}

impl TagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TagKind::Template => "template",
            TagKind::Instance => "instance",
            TagKind::Seed => "seed",
        }
    }

    fn parse(s: &str) -> Option<TagKind> {
        match s {
            "template" => Some(TagKind::Template),
            "instance" => Some(TagKind::Instance),
            "seed" => Some(TagKind::Seed),
            _ => None,
        }
    }
}

/// virtup's record on a domain: what it is, which template it came from, and what it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtupTag {
    pub kind: TagKind,
    /// The template or instance name as virtup knows it.
    pub name: String,
    /// For instances: the template they were cloned from.
    pub template: Option<String>,
    /// Bumped each time virtup rebuilds the object.
    pub generation: u32,
    /// Digest of the desired state the domain was built from.
    pub digest: Option<String>,
    /// Volume names (in the instance's pool) that are deleted with the domain.
    pub owned_volumes: Vec<String>,
    /// The login user the domain was prepared for (the inventory needs it for templates, which
    /// have no metadata file). Absent in tags written before it was recorded.
    pub user: Option<String>,
    /// The owner id of the data dir that made the domain (`<data-dir>/owner-id`), so that a
    /// tag proves the domain to that data dir only. Absent in tags written before it existed.
    pub owner: Option<String>,
    /// For templates: the revision of the first-boot script installed in the generation (what its
    /// clones' first boots can do). Absent in tags written before it was recorded.
    pub firstboot: Option<u32>,
}

impl VirtupTag {
    pub fn new(kind: TagKind, name: impl Into<String>) -> Self {
        VirtupTag {
            kind,
            name: name.into(),
            template: None,
            generation: 0,
            digest: None,
            owned_volumes: Vec::new(),
            user: None,
            owner: None,
            firstboot: None,
        }
    }

    /// Whether the tag says this is the `kind` virtup calls `name`: the one test of what a domain is.
    /// Whose it is, is a second question ([`VirtupTag::names_owner`]).
    pub fn is(&self, kind: TagKind, name: &str) -> bool {
        self.kind == kind && self.name == name
    }

    /// Whether the tag names `id` (a data dir's owner id, `None` when it has none yet) as its owner:
    /// `None` for a tag written before owner ids, which the caller decides from its own records.
    pub fn names_owner(&self, id: Option<&str>) -> Option<bool> {
        self.owner
            .as_deref()
            .map(|owner| id.is_some_and(|id| id.eq_ignore_ascii_case(owner)))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_text("tag name", &self.name)?;
        if let Some(t) = &self.template {
            check_text("tag template", t)?;
        }
        if let Some(d) = &self.digest {
            check_text("tag digest", d)?;
        }
        for v in &self.owned_volumes {
            check_text("owned volume", v)?;
        }
        if let Some(u) = &self.user {
            check_text("tag user", u)?;
        }
        if let Some(o) = &self.owner {
            check_text("tag owner", o)?;
        }
        Ok(())
    }

    /// Writes the tag element. With `qualified`, it carries the virtup prefix and namespace (as
    /// inside a domain's `<metadata>`); without, it is bare, as `virDomainSetMetadata` wants it.
    pub(crate) fn write(&self, w: &mut XmlWriter, qualified: bool) {
        let q = |local: &str| {
            if qualified {
                format!("{VIRTUP_PREFIX}:{local}")
            } else {
                local.to_owned()
            }
        };
        let generation = self.generation.to_string();
        let xmlns = format!("xmlns:{VIRTUP_PREFIX}");
        let mut attrs = vec![("kind", self.kind.as_str()), ("generation", &generation)];
        if qualified {
            attrs.insert(0, (xmlns.as_str(), VIRTUP_NS));
        }
        let root = q(TAG_ELEMENT);
        w.open(&root, &attrs);
        w.leaf(&q("name"), &[], &self.name);
        if let Some(t) = &self.template {
            w.leaf(&q("template"), &[], t);
        }
        if let Some(d) = &self.digest {
            w.leaf(&q("digest"), &[], d);
        }
        for v in &self.owned_volumes {
            w.leaf(&q("volume"), &[], v);
        }
        if let Some(u) = &self.user {
            w.leaf(&q("user"), &[], u);
        }
        if let Some(o) = &self.owner {
            w.leaf(&q("owner"), &[], o);
        }
        if let Some(f) = self.firstboot {
            w.leaf(&q("firstboot"), &[], &f.to_string());
        }
        w.close(&root);
    }

    /// The bare element for `virDomainSetMetadata(VIR_DOMAIN_METADATA_ELEMENT, …, "virtup", NS)`.
    pub fn to_metadata_element(&self) -> Result<String> {
        self.validate()?;
        let mut w = XmlWriter::new();
        self.write(&mut w, false);
        Ok(w.finish())
    }

    /// Puts the tag into a full domain XML (e.g. virt-install's `--print-xml` output), replacing
    /// any virtup tag already there, so that the domain is defined *with* its tag in one call:
    /// a crash between a define and a later `set_tag` would leave a domain virtup cannot recognise.
    pub fn insert_into_domain_xml(&self, domain_xml: &str) -> Result<String> {
        self.validate()?;
        let mut w = XmlWriter::new();
        self.write(&mut w, true);
        let element = w.finish();
        // The document must be a domain; checking it first keeps the text splice below honest.
        let root = xml::parse(domain_xml)
            .map_err(|e| crate::error::LibvirtError::parse("domain XML", e))?;
        if root.name != "domain" {
            return Err(crate::error::LibvirtError::invalid(
                "domain XML",
                root.name.as_str(),
                "expected a <domain> document",
            ));
        }
        if VirtupTag::from_domain_element(&root).is_some() {
            return Err(crate::error::LibvirtError::invalid(
                "domain XML",
                "<metadata>",
                "already carries a virtup tag",
            ));
        }
        let spliced = if let Some(open) = domain_xml.find("<metadata>") {
            let at = open + "<metadata>".len();
            format!("{}{element}{}", &domain_xml[..at], &domain_xml[at..])
        } else if let Some(close) = domain_xml.rfind("</domain>") {
            format!(
                "{}<metadata>{element}</metadata>\n{}",
                &domain_xml[..close],
                &domain_xml[close..]
            )
        } else {
            return Err(crate::error::LibvirtError::invalid(
                "domain XML",
                "<domain/>",
                "has no closing tag",
            ));
        };
        // Whatever we produced must read back as this very tag.
        match VirtupTag::from_domain_xml(&spliced) {
            Some(t) if t == *self => Ok(spliced),
            _ => Err(crate::error::LibvirtError::invalid(
                "domain XML",
                "<metadata>",
                "the tag did not survive insertion",
            )),
        }
    }

    /// Reads the tag out of a full domain XML; `None` if absent, foreign or malformed.
    pub fn from_domain_xml(domain_xml: &str) -> Option<VirtupTag> {
        let root = xml::parse(domain_xml).ok()?;
        Self::from_domain_element(&root)
    }

    pub(crate) fn from_domain_element(domain: &Element) -> Option<VirtupTag> {
        domain
            .child("metadata")?
            .children
            .iter()
            .find(|c| c.ns.as_deref() == Some(VIRTUP_NS) && c.name == TAG_ELEMENT)
            .and_then(Self::from_element)
    }

    /// Reads what `virDomainGetMetadata(ELEMENT, NS)` returns: libvirt hands the element back
    /// without its namespace (`<tag kind="…">`), so both spellings are accepted.
    pub fn from_metadata_element(element_xml: &str) -> Option<VirtupTag> {
        let root = xml::parse(element_xml).ok()?;
        Self::from_element(&root)
    }

    fn from_element(el: &Element) -> Option<VirtupTag> {
        let ours = |c: &&Element| c.ns.is_none() || c.ns.as_deref() == Some(VIRTUP_NS);
        if el.name != TAG_ELEMENT || !ours(&el) {
            return None;
        }
        let kids = |name: &'static str| {
            el.children
                .iter()
                .filter(ours)
                .filter(move |c| c.name == name && c.children.is_empty())
                .map(|c| c.text.clone())
        };
        let single = |name: &'static str| -> Option<Option<String>> {
            let mut all = kids(name);
            let first = all.next();
            // Two names or two templates would be ambiguous: refuse rather than guess.
            if all.next().is_some() {
                return None;
            }
            Some(first)
        };
        let kind = TagKind::parse(el.attr("kind")?)?;
        let generation = el.attr("generation")?.trim().parse().ok()?;
        let name = single("name")??;
        Some(VirtupTag {
            kind,
            name,
            template: single("template")?,
            generation,
            digest: single("digest")?,
            owned_volumes: kids("volume").collect(),
            user: single("user")?,
            owner: single("owner")?,
            // Unreadable is unknown, as in a tag written before it was recorded.
            firstboot: single("firstboot")?.and_then(|f| f.trim().parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_asks_kind_and_name_together() {
        let tag = VirtupTag::new(TagKind::Template, "debian-12");
        assert!(tag.is(TagKind::Template, "debian-12"));
        assert!(!tag.is(TagKind::Instance, "debian-12"));
        assert!(!tag.is(TagKind::Template, "debian-13"));
    }

    fn sample() -> VirtupTag {
        VirtupTag {
            kind: TagKind::Instance,
            name: "web1".into(),
            template: Some("debian-12".into()),
            generation: 7,
            digest: Some("sha256:0123abcd".into()),
            owned_volumes: vec!["web1.qcow2".into(), "web1-config.iso".into()],
            user: Some("virt".into()),
            owner: Some("0123456789abcdef0123456789abcdef".into()),
            firstboot: Some(2),
        }
    }

    fn in_domain(tag: &VirtupTag) -> String {
        let mut w = XmlWriter::new();
        w.open("domain", &[("type", "kvm")]);
        w.leaf("name", &[], "x");
        w.open("metadata", &[]);
        tag.write(&mut w, true);
        w.close("metadata");
        w.close("domain");
        w.finish()
    }

    #[test]
    fn insert_into_domain_xml_with_and_without_metadata() {
        let mut tag = VirtupTag::new(TagKind::Template, "debian-12");
        tag.generation = 2;
        tag.digest = Some("abc".into());
        for xml in [
            "<domain type='qemu'><name>VIRTUP-x</name><metadata><libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'><libosinfo:os id='http://debian.org/debian/11'/></libosinfo:libosinfo></metadata></domain>",
            "<domain type=\"kvm\">\n  <name>VIRTUP-x</name>\n</domain>\n",
        ] {
            let out = tag.insert_into_domain_xml(xml).unwrap();
            assert_eq!(VirtupTag::from_domain_xml(&out), Some(tag.clone()), "{out}");
            assert!(tag.insert_into_domain_xml(&out).is_err(), "a second tag must be refused");
        }
        assert!(tag.insert_into_domain_xml("<network/>").is_err());
    }

    #[test]
    fn round_trips_through_domain_xml_and_bare_element() {
        let tag = sample();
        assert_eq!(
            VirtupTag::from_domain_xml(&in_domain(&tag)),
            Some(tag.clone())
        );
        let bare = tag.to_metadata_element().unwrap();
        assert!(!bare.contains("xmlns"), "{bare}");
        assert_eq!(VirtupTag::from_metadata_element(&bare), Some(tag));
    }

    #[test]
    fn owner_decides_which_data_dir_may_claim_the_domain() {
        let tag = sample();
        let a = Some("0123456789abcdef0123456789abcdef");
        assert_eq!(tag.names_owner(a), Some(true));
        assert_eq!(
            tag.names_owner(Some("ffffffffffffffffffffffffffffffff")),
            Some(false)
        );
        assert_eq!(
            tag.names_owner(None),
            Some(false),
            "no id owns no owned domain"
        );
        let legacy = VirtupTag {
            owner: None,
            ..sample()
        };
        // Written before owner ids: the caller decides from its own records.
        assert_eq!(
            (legacy.names_owner(a), legacy.names_owner(None)),
            (None, None)
        );
        // Two owners are ambiguous: the element is no tag at all.
        let twice = in_domain(&tag).replace(
            "<virtup:owner>",
            "<virtup:owner>ffffffffffffffffffffffffffffffff</virtup:owner><virtup:owner>",
        );
        assert_eq!(VirtupTag::from_domain_xml(&twice), None);
    }

    #[test]
    fn hostile_values_stay_text() {
        let mut tag = sample();
        tag.name = "a\"><evil/>&amp;<virtup:name>b</virtup:name>".into();
        tag.owned_volumes = vec!["v</virtup:volume><virtup:volume>/etc/passwd".into()];
        let xml = in_domain(&tag);
        assert!(!xml.contains("<evil/>"), "{xml}");
        let back = VirtupTag::from_domain_xml(&xml).unwrap();
        assert_eq!(back, tag);
        assert_eq!(back.owned_volumes.len(), 1);
    }

    #[test]
    fn control_characters_are_refused() {
        let mut tag = sample();
        tag.digest = Some("x\ny".into());
        let err = tag.to_metadata_element().unwrap_err().to_string();
        assert!(err.starts_with("invalid tag digest"), "{err}");
    }

    #[test]
    fn reads_libvirt_canonical_forms() {
        // What libvirt 11 prints back from dumpxml and from `virsh metadata` (seen on test:///default).
        let dumped = r#"<domain type='qemu'>
  <name>t1</name>
  <metadata>
    <foo:bar xmlns:foo="http://example.com/foo">x</foo:bar>
    <v:tag xmlns:v="https://virtup.dev/xmlns/domain/1" kind="template" generation="3">
      <v:name>a&amp;b</v:name>
    </v:tag>
  </metadata>
</domain>"#;
        let tag = VirtupTag::from_domain_xml(dumped).unwrap();
        assert_eq!(
            (tag.kind, tag.name.as_str(), tag.generation),
            (TagKind::Template, "a&b", 3)
        );
        assert_eq!((tag.template, tag.digest), (None, None));
        assert!(tag.owned_volumes.is_empty());

        let element = "<tag kind=\"instance\" generation=\"0\">\n  <name>w</name>\n  <volume>w.qcow2</volume>\n</tag>\n";
        let tag = VirtupTag::from_metadata_element(element).unwrap();
        assert_eq!(tag.owned_volumes, vec!["w.qcow2".to_owned()]);
    }

    #[test]
    fn foreign_or_malformed_metadata_is_no_tag() {
        let cases = [
            // No metadata at all.
            "<domain><name>x</name></domain>".to_owned(),
            // Same local name, other namespace.
            r#"<domain><metadata><o:tag xmlns:o="https://example.com/other" kind="instance" generation="1"><o:name>x</o:name></o:tag></metadata></domain>"#.to_owned(),
            // Un-namespaced inside a domain: not ours either.
            r#"<domain><metadata><tag kind="instance" generation="1"><name>x</name></tag></metadata></domain>"#.to_owned(),
            // Our namespace, but broken content.
            in_domain(&sample()).replace("kind=\"instance\"", "kind=\"pet\""),
            in_domain(&sample()).replace("generation=\"7\"", "generation=\"-1\""),
            in_domain(&sample()).replace("<virtup:name>web1</virtup:name>", ""),
            in_domain(&sample()).replace(
                "<virtup:name>web1</virtup:name>",
                "<virtup:name>a</virtup:name><virtup:name>b</virtup:name>",
            ),
            // Not XML.
            "<domain><metadata>".to_owned(),
        ];
        for xml in &cases {
            assert_eq!(VirtupTag::from_domain_xml(xml), None, "{xml}");
        }
        assert_eq!(
            VirtupTag::from_metadata_element("<other kind=\"instance\"/>"),
            None
        );
    }
}
