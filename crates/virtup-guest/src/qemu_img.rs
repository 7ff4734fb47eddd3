//! qemu-img: image inspection (JSON), linked-clone overlays, conversion and resizing.
//!
//! Formats are passed explicitly wherever known: letting qemu-img probe a raw image lets the
//! image's content pick its format (and a backing file on the host).

use std::path::Path;

use serde::Deserialize;

use crate::{Cmd, GuestError};

/// What `qemu-img info --output=json` says about an image.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
    #[serde(default)]
    pub actual_size: Option<u64>,
    /// The backing file as recorded in the image (may be relative to the image's directory).
    #[serde(default)]
    pub backing_filename: Option<String>,
    /// The backing file resolved by qemu-img.
    #[serde(default)]
    pub full_backing_filename: Option<String>,
    #[serde(default)]
    pub backing_filename_format: Option<String>,
    #[serde(default)]
    pub dirty_flag: Option<bool>,
    #[serde(default)]
    pub format_specific: Option<FormatSpecific>,
}

impl ImageInfo {
    /// The external data file a qcow2 image keeps its guest data in (`-o data_file=`), if any: a
    /// path on whatever machine opens the image, so an image from elsewhere that names one would
    /// have the tools here read and write that file.
    pub fn data_file(&self) -> Option<&str> {
        self.format_specific.as_ref()?.data.data_file.as_deref()
    }
}

/// `format-specific` of `qemu-img info`: only what virtup checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct FormatSpecific {
    #[serde(default)]
    pub data: FormatData,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FormatData {
    #[serde(default)]
    pub data_file: Option<String>,
}

/// `qemu-img info -U --output=json [-f FMT] PATH`; `-U` (force share) lets it read an image a
/// running guest has open.
pub fn info_cmd(path: &Path, format: Option<&str>) -> Cmd {
    let mut cmd = Cmd::new("qemu-img");
    cmd.args(["info", "-U", "--output=json"]);
    if let Some(format) = format {
        cmd.args(["-f", format]);
    }
    cmd.arg(path);
    cmd
}

/// Parses the JSON printed by [`info_cmd`].
pub fn parse_info(json: &[u8]) -> Result<ImageInfo, serde_json::Error> {
    serde_json::from_slice(json)
}

/// Runs [`info_cmd`] and parses its output.
pub fn info(path: &Path, format: Option<&str>) -> Result<ImageInfo, GuestError> {
    let cmd = info_cmd(path, format);
    let output = cmd.output()?;
    parse_info(&output.stdout).map_err(|e| GuestError::Parse {
        cmd: cmd.to_string(),
        reason: e.to_string(),
    })
}

/// `qemu-img create -f qcow2 -F BACKING_FMT -b BACKING OUT [SIZE]`: a linked clone. `backing` is
/// recorded as given, so pass an absolute path; `size` (bytes) grows the overlay beyond the backing.
pub fn create_overlay_cmd(backing: &Path, backing_fmt: &str, out: &Path, size: Option<u64>) -> Cmd {
    let mut cmd = Cmd::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", backing_fmt, "-b"])
        .arg(backing)
        .arg(out);
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    cmd
}

/// `qemu-img create -f FMT OUT SIZE`: an empty image of `size` bytes.
pub fn create_cmd(out: &Path, format: &str, size: u64) -> Cmd {
    let mut cmd = Cmd::new("qemu-img");
    cmd.args(["create", "-q", "-f", format])
        .arg(out)
        .arg(size.to_string());
    cmd
}

/// `qemu-img convert [-f SRC_FMT] -O DST_FMT SRC DST`: a full, standalone copy (full clones, and
/// turning a downloaded image into the pool's format).
pub fn convert_cmd(src: &Path, src_fmt: Option<&str>, dst: &Path, dst_fmt: &str) -> Cmd {
    let mut cmd = Cmd::new("qemu-img");
    cmd.arg("convert");
    if let Some(src_fmt) = src_fmt {
        cmd.args(["-f", src_fmt]);
    }
    cmd.args(["-O", dst_fmt]).arg(src).arg(dst);
    cmd
}

/// `qemu-img resize -f FMT PATH SIZE` (bytes). Shrinking is refused by qemu-img without
/// `--shrink`, which is never passed.
pub fn resize_cmd(path: &Path, format: &str, size: u64) -> Cmd {
    let mut cmd = Cmd::new("qemu-img");
    cmd.args(["resize", "-q", "-f", format])
        .arg(path)
        .arg(size.to_string());
    cmd
}

/// `qemu-img rebase -u -f qcow2 -F BACKING_FMT -b BACKING PATH`: rewrites only the backing file
/// name an overlay records (no data is read or copied, and `backing` need not exist here). Used to
/// point a copy of a remote overlay at a local copy of its backing image, and back again.
pub fn rebase_unsafe_cmd(path: &Path, backing: &str, backing_fmt: &str) -> Cmd {
    let mut cmd = Cmd::new("qemu-img");
    cmd.args([
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-F",
        backing_fmt,
        "-b",
        backing,
    ])
    .arg(path);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv() {
        let p = Path::new;
        let cases: Vec<(Cmd, &[&str])> = vec![
            (
                info_cmd(p("/pool/a.qcow2"), Some("qcow2")),
                &[
                    "qemu-img",
                    "info",
                    "-U",
                    "--output=json",
                    "-f",
                    "qcow2",
                    "/pool/a.qcow2",
                ],
            ),
            (
                info_cmd(p("/a"), None),
                &["qemu-img", "info", "-U", "--output=json", "/a"],
            ),
            (
                create_overlay_cmd(
                    p("/pool/t.qcow2"),
                    "qcow2",
                    p("/pool/i.qcow2"),
                    Some(10 << 30),
                ),
                &[
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    "/pool/t.qcow2",
                    "/pool/i.qcow2",
                    "10737418240",
                ],
            ),
            (
                create_overlay_cmd(p("/pool/t.raw"), "raw", p("/pool/i.qcow2"), None),
                &[
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    "/pool/t.raw",
                    "/pool/i.qcow2",
                ],
            ),
            (
                create_cmd(p("/x.raw"), "raw", 1024),
                &["qemu-img", "create", "-q", "-f", "raw", "/x.raw", "1024"],
            ),
            (
                convert_cmd(p("/d.img"), Some("raw"), p("/t.qcow2"), "qcow2"),
                &[
                    "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "/d.img", "/t.qcow2",
                ],
            ),
            (
                resize_cmd(p("/t.qcow2"), "qcow2", 2048),
                &[
                    "qemu-img", "resize", "-q", "-f", "qcow2", "/t.qcow2", "2048",
                ],
            ),
            (
                rebase_unsafe_cmd(p("/s/i.qcow2"), "/pool/t-gen1.qcow2", "qcow2"),
                &[
                    "qemu-img",
                    "rebase",
                    "-u",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    "/pool/t-gen1.qcow2",
                    "/s/i.qcow2",
                ],
            ),
        ];
        for (cmd, want) in cases {
            assert_eq!(cmd.argv(), want);
        }
    }

    // Printed by qemu-img 10.0 for an overlay.
    const OVERLAY: &str = r#"{
        "children": [ { "name": "file", "info": { "children": [], "virtual-size": 197120,
          "filename": "o.qcow2", "format": "file", "actual-size": 200704, "dirty-flag": false } } ],
        "backing-filename-format": "qcow2", "virtual-size": 134217728, "filename": "o.qcow2",
        "cluster-size": 65536, "format": "qcow2", "actual-size": 200704,
        "format-specific": { "type": "qcow2", "data": { "compat": "1.1" } },
        "full-backing-filename": "/tmp/b.qcow2", "backing-filename": "/tmp/b.qcow2", "dirty-flag": false
    }"#;

    #[test]
    fn parses_overlay_info() {
        let info = parse_info(OVERLAY.as_bytes()).unwrap();
        assert_eq!(
            info,
            ImageInfo {
                format: "qcow2".into(),
                virtual_size: 134217728,
                actual_size: Some(200704),
                backing_filename: Some("/tmp/b.qcow2".into()),
                full_backing_filename: Some("/tmp/b.qcow2".into()),
                backing_filename_format: Some("qcow2".into()),
                dirty_flag: Some(false),
                format_specific: Some(FormatSpecific::default()),
            }
        );
        assert_eq!(info.data_file(), None);
        // Printed by qemu-img 10.0 for an image made with `-o data_file=/tmp/rb/df.raw`.
        let with_data_file = parse_info(
            br#"{"format": "qcow2", "virtual-size": 1048576, "filename": "d.qcow2",
                "format-specific": {"type": "qcow2", "data": {"compat": "1.1",
                "data-file": "/tmp/rb/df.raw", "data-file-raw": false}}}"#,
        )
        .unwrap();
        assert_eq!(with_data_file.data_file(), Some("/tmp/rb/df.raw"));
        let raw =
            parse_info(br#"{"format": "raw", "virtual-size": 1024, "filename": "x"}"#).unwrap();
        assert_eq!(raw.format, "raw");
        assert_eq!(raw.backing_filename, None);
        assert!(parse_info(br#"{"format": "raw"}"#).is_err());
    }
}
