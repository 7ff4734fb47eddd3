//! An instance's network interfaces (`nics`): what the user asks for, checked, and where each NIC's stable MAC is kept.
//!
//! The first NIC is the one virtup reaches the guest through (its address comes from that libvirt
//! network's leases or reservation), so it must be on a libvirt network; the others may be on a
//! libvirt network, a host bridge, or a host device through macvtap (`direct`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{self, Shown, ValidationError};

/// The most NICs one instance may have: each takes a PCI slot (of 32, shared with up to 16 data
/// disks and the other devices).
pub const MAX_NICS: usize = 8;

/// How a `direct` NIC's macvtap device talks to its host device (libvirt's `<source mode>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectMode {
    Bridge,
    Vepa,
    Private,
    Passthrough,
}

impl DirectMode {
    pub const WORDS: [&'static str; 4] = ["bridge", "vepa", "private", "passthrough"];

    pub fn as_str(self) -> &'static str {
        match self {
            DirectMode::Bridge => "bridge",
            DirectMode::Vepa => "vepa",
            DirectMode::Private => "private",
            DirectMode::Passthrough => "passthrough",
        }
    }

    pub fn parse(word: &str) -> Option<DirectMode> {
        match word {
            "bridge" => Some(DirectMode::Bridge),
            "vepa" => Some(DirectMode::Vepa),
            "private" => Some(DirectMode::Private),
            "passthrough" => Some(DirectMode::Passthrough),
            _ => None,
        }
    }
}

/// The device a guest sees for a NIC (`nics[N].model`, libvirt's `<model type>`). Every one is a
/// PCI device QEMU emulates on x86 and arm, so a warm clone hot-plugs it as it does virtio; the
/// others are for guests without virtio drivers, or whose network config names a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    #[default]
    Virtio,
    E1000,
    E1000e,
    Rtl8139,
}

impl NicModel {
    pub const WORDS: [&'static str; 4] = ["virtio", "e1000", "e1000e", "rtl8139"];

    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }

    pub fn is_virtio(&self) -> bool {
        *self == NicModel::Virtio
    }

    pub fn parse(word: &str) -> Option<NicModel> {
        Self::WORDS
            .iter()
            .zip([
                NicModel::Virtio,
                NicModel::E1000,
                NicModel::E1000e,
                NicModel::Rtl8139,
            ])
            .find_map(|(w, m)| (*w == word).then_some(m))
    }
}

/// Where a NIC is plugged in on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nic {
    /// A libvirt network, by name.
    Network(String),
    /// A host bridge (a Linux bridge the user made), by interface name.
    Bridge(String),
    /// A host device, shared through macvtap.
    Direct { dev: String, mode: DirectMode },
}

impl Nic {
    /// Where it plugs in, in one word: libvirt's `<interface type>` and the option's key.
    pub fn kind(&self) -> &'static str {
        match self {
            Nic::Network(_) => "network",
            Nic::Bridge(_) => "bridge",
            Nic::Direct { .. } => "direct",
        }
    }

    /// The network, bridge or host device it plugs into.
    pub fn source(&self) -> &str {
        match self {
            Nic::Network(name) | Nic::Bridge(name) | Nic::Direct { dev: name, .. } => name,
        }
    }

    /// The macvtap mode of a `direct` NIC.
    pub fn mode(&self) -> Option<DirectMode> {
        match self {
            Nic::Direct { mode, .. } => Some(*mode),
            _ => None,
        }
    }

    /// `network default`, `bridge br0`, `direct eth0 (bridge)`: for messages and diffs.
    pub fn describe(&self) -> String {
        match self.mode() {
            Some(mode) => format!("{} {} ({})", self.kind(), self.source(), mode.as_str()),
            None => format!("{} {}", self.kind(), self.source()),
        }
    }
}

/// One NIC of an instance: where it plugs in and the device the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicDevice {
    pub nic: Nic,
    pub model: NicModel,
}

impl NicDevice {
    /// A virtio NIC on `nic`: what every NIC was before `model`.
    pub fn virtio(nic: Nic) -> NicDevice {
        NicDevice {
            nic,
            model: NicModel::Virtio,
        }
    }

    /// `network default`, `direct eth0 (vepa)`, `bridge br0 (e1000)`, `direct eth0 (vepa, e1000)`:
    /// the model is named when it is not virtio.
    pub fn describe(&self) -> String {
        let notes: Vec<&str> = self
            .nic
            .mode()
            .map(DirectMode::as_str)
            .into_iter()
            .chain((!self.model.is_virtio()).then_some(self.model.as_str()))
            .collect();
        match notes.as_slice() {
            [] => format!("{} {}", self.nic.kind(), self.nic.source()),
            _ => format!(
                "{} {} ({})",
                self.nic.kind(),
                self.nic.source(),
                notes.join(", ")
            ),
        }
    }
}

/// A NIC an instance was made with, and its MAC (the first NIC's is the metadata's `mac`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeNic {
    pub nic: Nic,
    pub mac: String,
    /// Virtio in records from before `model`, as every NIC then was.
    #[serde(default)]
    pub model: NicModel,
}

/// The key of NIC `index` (0-based) of `instance` in `macaddrs.json`. The first NIC's is the
/// instance name, as virt-up keeps it; the others' carry `#`, which no instance name has, so a
/// NIC's entry is never an instance's.
pub fn mac_key(instance: &str, index: usize) -> String {
    if index == 0 {
        instance.to_owned()
    } else {
        format!("{instance}#nic{}", index + 1)
    }
}

/// Parses the `nics` option: a list of `{network}`, `{bridge}` or `{direct, mode}`, each with an
/// optional `model`; every error names the item and the key (`nics[2].bridge`). The first must be
/// on a libvirt network.
pub fn parse_list(option: &str, value: &Value) -> Result<Vec<NicDevice>, ValidationError> {
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(ValidationError::new(
                option,
                format!("must be a list of NICs, not {}", validate::json_kind(other)),
            ))
        }
    };
    if items.is_empty() {
        return Err(ValidationError::new(
            option,
            "is empty; an instance has at least the NIC virtup reaches it through (leave `nics` out for one on `network`)",
        ));
    }
    if items.len() > MAX_NICS {
        return Err(ValidationError::new(
            option,
            format!("lists {} NICs; at most {MAX_NICS} are allowed", items.len()),
        ));
    }
    let nics = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_one(&format!("{option}[{}]", i + 1), item))
        .collect::<Result<Vec<_>, _>>()?;
    // Passthrough gives the guest the device whole: no other NIC can sit on it.
    for (i, nic) in nics.iter().enumerate() {
        if let Nic::Direct { dev, mode } = &nic.nic {
            let clash = nics.iter().enumerate().find(|(j, other)| {
                *j != i
                    && matches!(&other.nic, Nic::Direct { dev: d, mode: m }
                        if d == dev && (*mode == DirectMode::Passthrough || *m == DirectMode::Passthrough))
            });
            if let Some((j, _)) = clash {
                return Err(ValidationError::new(
                    &format!("{option}[{}].direct", i.max(j) + 1),
                    format!(
                        "{} is the device of another NIC too, and passthrough mode takes it whole",
                        Shown(dev)
                    ),
                ));
            }
        }
    }
    if !matches!(nics[0].nic, Nic::Network(_)) {
        return Err(ValidationError::new(
            &format!("{option}[1]"),
            format!(
                "is {}, but the first NIC must be on a libvirt network: virtup finds the guest's address \
                 through that network's DHCP (a bridge or a direct NIC can come second)",
                nics[0].nic.describe()
            ),
        ));
    }
    Ok(nics)
}

const KEYS: [&str; 5] = ["network", "bridge", "direct", "mode", "model"];

fn parse_one(at: &str, item: &Value) -> Result<NicDevice, ValidationError> {
    let map = validate::dict_item(
        at,
        item,
        "a NIC (a dictionary with `network`, `bridge` or `direct`)",
        &KEYS,
    )?;
    let text = |key: &str| validate::item_text(at, map, key);
    let model = match text("model")? {
        None => NicModel::Virtio,
        Some(m) => NicModel::parse(&m).ok_or_else(|| {
            ValidationError::new(
                &format!("{at}.model"),
                format!(
                    "{} is not a NIC model virtup offers (expected {})",
                    Shown(&m),
                    NicModel::WORDS.join(", ")
                ),
            )
        })?,
    };
    Ok(NicDevice {
        nic: parse_source(at, map)?,
        model,
    })
}

fn parse_source(at: &str, map: &serde_json::Map<String, Value>) -> Result<Nic, ValidationError> {
    let text = |key: &str| validate::item_text(at, map, key);
    let sources: Vec<(&str, String)> = ["network", "bridge", "direct"]
        .into_iter()
        .filter_map(|k| text(k).map(|v| v.map(|v| (k, v))).transpose())
        .collect::<Result<_, _>>()?;
    let (key, value) = match sources.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(ValidationError::new(
                at,
                "needs one of `network`, `bridge` or `direct`",
            ))
        }
        [a, b, ..] => {
            return Err(ValidationError::new(
                at,
                format!("has both `{}` and `{}`; a NIC is on one of them", a.0, b.0),
            ))
        }
    };
    let mode = text("mode")?;
    if mode.is_some() && key != "direct" {
        return Err(ValidationError::new(
            &format!("{at}.mode"),
            "applies to a `direct` NIC only",
        ));
    }
    let field = format!("{at}.{key}");
    Ok(match key {
        "network" => {
            validate::name(&field, &value)?;
            Nic::Network(value)
        }
        "bridge" => Nic::Bridge(interface_name(&field, &value)?),
        _ => {
            let mode = match mode.as_deref() {
                None => DirectMode::Bridge,
                Some(m) => DirectMode::parse(m).ok_or_else(|| {
                    ValidationError::new(
                        &format!("{at}.mode"),
                        format!(
                            "{} is not a macvtap mode (expected {})",
                            Shown(m),
                            DirectMode::WORDS.join(", ")
                        ),
                    )
                })?,
            };
            Nic::Direct {
                dev: interface_name(&field, &value)?,
                mode,
            }
        }
    })
}

/// A host interface name as Linux takes it: 1 to 15 bytes, not `.` or `..`, made of letters,
/// digits, `.`, `_` and `-` (stricter than the kernel, which refuses only `/`, `:` and white space,
/// so that the name is safe in XML, messages and paths).
fn interface_name(option: &str, value: &str) -> Result<String, ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    if value.len() > 15 {
        return bad("is longer than 15 bytes, which no Linux interface name is");
    }
    if value == "." || value == ".." {
        return bad("is not an interface name");
    }
    if value
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        return bad("has a character other than letters, digits, `.`, `_` and `-`");
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nic_models_read_back_as_written() {
        for word in NicModel::WORDS {
            assert_eq!(NicModel::parse(word).map(NicModel::as_str), Some(word));
        }
        assert_eq!(NicModel::parse("E1000"), None);
        assert_eq!(NicModel::default().as_str(), "virtio");
    }

    #[test]
    fn three_kinds_parse_and_the_first_is_the_network() {
        let nics = parse_list(
            "nics",
            &json!([{"network": "default"}, {"bridge": "br0", "model": "e1000"}, {"direct": "eth0", "mode": "vepa"}, {"direct": "eth1", "mode": null, "model": "rtl8139"}]),
        )
        .unwrap();
        let models: Vec<&str> = nics.iter().map(|n| n.model.as_str()).collect();
        assert_eq!(models, ["virtio", "e1000", "virtio", "rtl8139"]);
        let described: Vec<String> = nics.iter().map(NicDevice::describe).collect();
        assert_eq!(
            described,
            [
                "network default",
                "bridge br0 (e1000)",
                "direct eth0 (vepa)",
                "direct eth1 (bridge, rtl8139)"
            ]
        );
        assert_eq!(
            nics.into_iter().map(|n| n.nic).collect::<Vec<_>>(),
            [
                Nic::Network("default".into()),
                Nic::Bridge("br0".into()),
                Nic::Direct {
                    dev: "eth0".into(),
                    mode: DirectMode::Vepa
                },
                Nic::Direct {
                    dev: "eth1".into(),
                    mode: DirectMode::Bridge
                },
            ]
        );
    }

    #[test]
    fn bad_lists_name_the_item_and_key() {
        let cases = [
            (json!("default"), "nics", "must be a list of NICs"),
            (json!([]), "nics", "is empty"),
            (
                Value::Array(vec![json!({"network": "n"}); 9]),
                "nics",
                "at most 8",
            ),
            (
                json!([{"bridge": "br0"}]),
                "nics[1]",
                "first NIC must be on a libvirt network",
            ),
            (json!([{"network": "n"}, "br0"]), "nics[2]", "must be a NIC"),
            (json!([{"network": "n"}, {}]), "nics[2]", "needs one of"),
            (
                json!([{"network": "n"}, {"network": "a", "bridge": "b"}]),
                "nics[2]",
                "has both `network` and `bridge`",
            ),
            (
                json!([{"network": "n"}, {"bridge": "b", "mode": "vepa"}]),
                "nics[2].mode",
                "applies to a `direct` NIC only",
            ),
            (
                json!([{"network": "n"}, {"direct": "eth0", "mode": "passthru"}]),
                "nics[2].mode",
                "not a macvtap mode",
            ),
            (
                json!([{"network": "n", "model": "ne2k_pci"}]),
                "nics[1].model",
                "not a NIC model virtup offers (expected virtio, e1000, e1000e, rtl8139)",
            ),
            (
                json!([{"network": "n"}, {"bridge": "b", "model": ["e1000"]}]),
                "nics[2].model",
                "must be a string",
            ),
            (
                json!([{"network": "n"}, {"bridge": "a-very-long-bridge"}]),
                "nics[2].bridge",
                "longer than 15",
            ),
            (
                json!([{"network": "n"}, {"bridge": "br0/x"}]),
                "nics[2].bridge",
                "has a character",
            ),
            (
                json!([{"network": "n"}, {"bridge": ".."}]),
                "nics[2].bridge",
                "not an interface name",
            ),
            (
                json!([{"network": "n"}, {"bridge": ""}]),
                "nics[2].bridge",
                "must not be empty",
            ),
            (
                json!([{"network": "n"}, {"bridge": true}]),
                "nics[2].bridge",
                "must be a string, not a boolean",
            ),
            (
                json!([{"network": "n"}, {"netwrok": "x"}]),
                "nics[2]",
                "unknown key `netwrok`",
            ),
            (
                json!([{"network": "bad name"}]),
                "nics[1].network",
                "contains",
            ),
        ];
        for (value, option, text) in cases {
            let e = parse_list("nics", &value).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{option}`")) && e.contains(text),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn mac_keys_never_name_an_instance() {
        assert_eq!(mac_key("web1", 0), "web1");
        assert_eq!(mac_key("web1", 1), "web1#nic2");
        assert!(validate::name("name", &mac_key("web1", 1)).is_err());
    }
}
