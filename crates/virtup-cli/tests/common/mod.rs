//! Fixtures shared by the module-binary test files (each test binary includes this module).

/// The owner id in the tags of [`TEMPLATE_NODE_XML`]: a data dir with it (see [`own`]) made `t`.
pub const FIXTURE_OWNER: &str = "0123456789abcdef0123456789abcdef";

/// Makes the data dir at `data` the one whose owner id is [`FIXTURE_OWNER`].
pub fn own(data: &std::path::Path) {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("owner-id"), format!("{FIXTURE_OWNER}\n")).unwrap();
}

/// A test-driver node with a built template `t` (generation 1, shut off) in `default-pool`, made by
/// the data dir whose owner id is [`FIXTURE_OWNER`].
pub const TEMPLATE_NODE_XML: &str = r#"<node>
  <domain type="test" xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
    <name>VIRTUP-t</name><memory>65536</memory><os><type>hvm</type></os>
    <metadata><virtup:tag xmlns:virtup="https://virtup.dev/xmlns/domain/1" kind="template" generation="1"><virtup:name>t</virtup:name><virtup:user>virt</virtup:user><virtup:owner>0123456789abcdef0123456789abcdef</virtup:owner></virtup:tag></metadata>
    <devices><disk type="file" device="disk"><source file="/default-pool/VIRTUP-t-g1.qcow2"/><target dev="vda"/></disk></devices>
    <test:runstate>5</test:runstate>
  </domain>
  <pool type="dir">
    <name>default-pool</name>
    <uuid>dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566</uuid>
    <capacity>107374182400</capacity><allocation>0</allocation><available>107374182400</available>
    <target><path>/default-pool</path></target>
    <volume type="file"><name>VIRTUP-t-g1.qcow2</name><capacity>1048576</capacity><target><path>/default-pool/VIRTUP-t-g1.qcow2</path><format type="qcow2"/></target></volume>
  </pool>
</node>"#;
