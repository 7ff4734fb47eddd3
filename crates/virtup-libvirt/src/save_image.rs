//! libvirt's QEMU save image header: reads the domain XML a memory image carries and writes a header carrying another, so one template seed's image restores as many instances.
//!
//! Why rewrite the header instead of passing `virsh restore --xml`: libvirt's restore refuses an XML
//! whose UUID differs from the saved one ("Target domain uuid … does not match source"), and each
//! instance has its own UUID. Name, UUID, `<genid>`, disk paths and metadata may all change in the
//! header as long as the devices do not (libvirt checks the ABI on restore either way).
//!
//! Layout (libvirt's `src/qemu/qemu_saveimage.h`, version 2; probed with libvirt 11.3, see
//! LAB-NOTES.md "Memory images and restore"): 92 bytes = the magic `LibvirtQemudSave`, then
//! little-endian u32 `version`, `data_len`, `was_running`, `compressed`, `cookieOffset` and 14
//! unused u32; then `data_len` bytes holding the domain XML and a NUL, the migration cookie (also
//! NUL-terminated) at `cookieOffset` when that is non-zero, and NUL padding; then the memory
//! stream. Only this leading region changes, so a copy's memory stream is never read or written.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{LibvirtError, Result};

/// A finished image starts with this.
const SAVE_MAGIC: &[u8; 16] = b"LibvirtQemudSave";
/// libvirt writes this first and the real magic only once the image is complete.
const PARTIAL_MAGIC: &[u8; 16] = b"LibvirtQemudPart";
/// The only layout this module knows (libvirt has written it since 0.9).
const SUPPORTED_VERSION: u32 = 2;
/// Bytes before the data: the magic and 19 u32.
pub const SAVE_HEADER_LEN: usize = 16 + 19 * 4;
/// libvirt reserves about 64 KiB for the XML; a length far beyond means a damaged header, not a
/// big domain, and must not make us allocate it.
const MAX_DATA_LEN: u32 = 16 << 20;

/// What a save image's leading region says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveImageHeader {
    pub version: u32,
    /// Bytes reserved for the XML, the cookie and padding: fixed once the image is written.
    pub data_len: u32,
    pub was_running: u32,
    /// The memory stream's compression (0 = raw); the XML is never compressed.
    pub compressed: u32,
    /// The domain XML as saved (without its NUL).
    pub xml: String,
    /// The migration cookie (QEMU's, as XML), when the image has one.
    pub cookie: Option<String>,
    unused: [u32; 14],
}

impl SaveImageHeader {
    /// Reads the leading region of the image at `path`, and nothing of its memory stream.
    pub fn read(path: &Path) -> Result<SaveImageHeader> {
        let io = |error| LibvirtError::Io {
            path: path.to_owned(),
            error,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut head = vec![0u8; SAVE_HEADER_LEN];
        read_all(&mut file, &mut head, path)?;
        let data_len = check_head(path, &head)?.1;
        head.resize(SAVE_HEADER_LEN + data_len as usize, 0);
        read_all(&mut file, &mut head[SAVE_HEADER_LEN..], path)?;
        SaveImageHeader::parse(path, &head)
    }

    /// Parses a leading region (`bytes` holds at least the header and its data); `path` only
    /// names the image in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SaveImageHeader> {
        let (version, data_len) = check_head(path, bytes)?;
        let end = SAVE_HEADER_LEN + data_len as usize;
        let data = bytes
            .get(SAVE_HEADER_LEN..end)
            .ok_or_else(|| damaged(path, format!("it ends before its {data_len} bytes of XML")))?;
        let word = |i: usize| le_u32(bytes, 16 + 4 * i);
        let cookie_offset = word(4);
        let xml_len = data
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| damaged(path, "its domain XML is not NUL-terminated"))?;
        let xml = text(path, "domain XML", &data[..xml_len])?;
        let cookie = match cookie_offset as usize {
            0 => None,
            at if at <= xml_len || at >= data.len() => {
                return Err(damaged(
                    path,
                    format!(
                        "its cookie offset {at} is not between the XML's end ({xml_len}) and the data's ({})",
                        data.len()
                    ),
                ))
            }
            at => {
                let len = data[at..]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| damaged(path, "its cookie is not NUL-terminated"))?;
                Some(text(path, "cookie", &data[at..at + len])?)
            }
        };
        let mut unused = [0u32; 14];
        for (i, u) in unused.iter_mut().enumerate() {
            *u = word(5 + i);
        }
        Ok(SaveImageHeader {
            version,
            data_len,
            was_running: word(2),
            compressed: word(3),
            xml,
            cookie,
            unused,
        })
    }

    /// Bytes of the leading region, which [`SaveImageHeader::with_xml`] rewrites in full.
    pub fn region_len(&self) -> usize {
        SAVE_HEADER_LEN + self.data_len as usize
    }

    /// The leading region with `xml` in place of the saved XML and the cookie moved after it:
    /// exactly [`SaveImageHeader::region_len`] bytes, to write over a copy's first bytes.
    /// Refused when `xml` does not fit the space the image reserved (its size is fixed: the
    /// memory stream follows).
    pub fn with_xml(&self, xml: &str) -> Result<Vec<u8>> {
        if xml.contains('\0') {
            return Err(LibvirtError::invalid(
                "save image XML",
                "(domain XML)",
                "contains a NUL byte",
            ));
        }
        let mut data = Vec::with_capacity(self.data_len as usize);
        data.extend_from_slice(xml.as_bytes());
        data.push(0);
        let cookie_offset = match &self.cookie {
            None => 0,
            Some(cookie) => {
                let at = data.len();
                data.extend_from_slice(cookie.as_bytes());
                data.push(0);
                at
            }
        };
        if data.len() > self.data_len as usize {
            return Err(LibvirtError::invalid(
                "save image XML",
                &format!("({} bytes with the cookie)", data.len()),
                format!(
                    "does not fit the {} bytes the image reserves for it",
                    self.data_len
                ),
            ));
        }
        data.resize(self.data_len as usize, 0);
        let cookie_offset = u32::try_from(cookie_offset).expect("below data_len, a u32");
        let mut region = Vec::with_capacity(self.region_len());
        region.extend_from_slice(SAVE_MAGIC);
        for word in [
            self.version,
            self.data_len,
            self.was_running,
            self.compressed,
            cookie_offset,
        ]
        .into_iter()
        .chain(self.unused)
        {
            region.extend_from_slice(&word.to_le_bytes());
        }
        region.extend_from_slice(&data);
        Ok(region)
    }
}

/// Checks the magic, the version and the data length; returns (version, data_len).
fn check_head(path: &Path, bytes: &[u8]) -> Result<(u32, u32)> {
    let head = bytes
        .get(..SAVE_HEADER_LEN)
        .ok_or_else(|| damaged(path, format!("it is shorter than {SAVE_HEADER_LEN} bytes")))?;
    if &head[..16] == PARTIAL_MAGIC {
        return Err(damaged(
            path,
            "its save never finished (libvirt marks an image complete last)",
        ));
    }
    if &head[..16] != SAVE_MAGIC {
        return Err(damaged(path, "it is not a libvirt QEMU save image"));
    }
    let (version, data_len) = (le_u32(head, 16), le_u32(head, 20));
    if version != SUPPORTED_VERSION {
        return Err(damaged(
            path,
            format!("its layout version is {version}; virtup reads version {SUPPORTED_VERSION}"),
        ));
    }
    if data_len == 0 || data_len > MAX_DATA_LEN {
        return Err(damaged(
            path,
            format!("its XML length {data_len} is not between 1 and {MAX_DATA_LEN}"),
        ));
    }
    Ok((version, data_len))
}

/// The little-endian u32 at `at` (inside the header, which the caller has checked is there).
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_all(file: &mut File, buf: &mut [u8], path: &Path) -> Result<()> {
    file.read_exact(buf).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            damaged(path, "it ends inside its header")
        } else {
            LibvirtError::Io {
                path: path.to_owned(),
                error,
            }
        }
    })
}

fn text(path: &Path, what: &str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| damaged(path, format!("its {what} is not UTF-8")))
}

fn damaged(path: &Path, reason: impl Into<String>) -> LibvirtError {
    LibvirtError::parse(format!("save image `{}`", path.display()), reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='qemu'><name>seed</name><uuid>1</uuid></domain>";
    const COOKIE: &str = "<qemu-migration><cpu/></qemu-migration>";
    const MEMORY: &[u8] = b"QEVM memory stream";

    /// An image as libvirt writes one: header, XML, cookie, padding, then the memory stream.
    fn image(data_len: u32, cookie: bool) -> Vec<u8> {
        let mut data = XML.as_bytes().to_vec();
        data.push(0);
        let cookie_offset = if cookie {
            let at = data.len() as u32;
            data.extend_from_slice(COOKIE.as_bytes());
            data.push(0);
            at
        } else {
            0
        };
        data.resize(data_len as usize, 0);
        let mut out = SAVE_MAGIC.to_vec();
        for w in [2, data_len, 1, 0, cookie_offset] {
            out.extend_from_slice(&u32::to_le_bytes(w));
        }
        out.extend_from_slice(&[0u8; 14 * 4]);
        out.extend_from_slice(&data);
        out.extend_from_slice(MEMORY);
        out
    }

    fn path() -> &'static Path {
        Path::new("/pool/seed.save")
    }

    fn err(bytes: &[u8]) -> String {
        format!(
            "{:#}",
            anyhow::Error::from(SaveImageHeader::parse(path(), bytes).unwrap_err())
        )
    }

    #[test]
    fn reads_the_xml_and_the_cookie() {
        let header = SaveImageHeader::parse(path(), &image(4096, true)).unwrap();
        assert_eq!(header.xml, XML);
        assert_eq!(header.cookie.as_deref(), Some(COOKIE));
        assert_eq!(
            (header.version, header.data_len, header.was_running),
            (2, 4096, 1)
        );
        assert_eq!(header.region_len(), 92 + 4096);
        let bare = SaveImageHeader::parse(path(), &image(4096, false)).unwrap();
        assert_eq!(bare.cookie, None);
    }

    #[test]
    fn a_longer_xml_moves_the_cookie_and_keeps_the_memory_stream() {
        let mut bytes = image(4096, true);
        let header = SaveImageHeader::parse(path(), &bytes).unwrap();
        let longer = XML.replace("seed", "an-instance-with-a-much-longer-name");
        let region = header.with_xml(&longer).unwrap();
        assert_eq!(region.len(), header.region_len());
        bytes[..region.len()].copy_from_slice(&region);
        let again = SaveImageHeader::parse(path(), &bytes).unwrap();
        assert_eq!(again.xml, longer);
        assert_eq!(again.cookie.as_deref(), Some(COOKIE));
        assert_eq!(&bytes[header.region_len()..], MEMORY);
        // Everything but the XML and the cookie's place is as it was.
        assert_eq!(
            (
                again.version,
                again.data_len,
                again.was_running,
                again.compressed
            ),
            (
                header.version,
                header.data_len,
                header.was_running,
                header.compressed
            )
        );
        // The same XML back gives the same bytes libvirt wrote.
        assert_eq!(
            header.with_xml(XML).unwrap(),
            image(4096, true)[..92 + 4096]
        );
    }

    #[test]
    fn reads_a_file_without_its_memory_stream() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seed.save");
        std::fs::write(&file, image(8192, true)).unwrap();
        let header = SaveImageHeader::read(&file).unwrap();
        assert_eq!(header.xml, XML);
        std::fs::write(&file, &image(8192, true)[..100]).unwrap();
        let e = format!(
            "{:#}",
            anyhow::Error::from(SaveImageHeader::read(&file).unwrap_err())
        );
        assert!(
            e.contains("seed.save") && e.contains("ends inside its header"),
            "{e}"
        );
    }

    #[test]
    fn an_xml_that_does_not_fit_is_refused() {
        let header = SaveImageHeader::parse(path(), &image(256, true)).unwrap();
        let e = format!(
            "{:#}",
            anyhow::Error::from(header.with_xml(&"x".repeat(300)).unwrap_err())
        );
        assert!(e.contains("does not fit the 256 bytes"), "{e}");
        assert!(header.with_xml("a\0b").is_err());
    }

    #[test]
    fn damaged_images_are_named_and_refused() {
        let good = image(4096, true);
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..50].to_vec(), "shorter than 92 bytes"),
            (with(0, PARTIAL_MAGIC), "save never finished"),
            (with(0, b"QFI\xfb"), "not a libvirt QEMU save image"),
            (with(16, &3u32.to_le_bytes()), "layout version is 3"),
            (with(20, &0u32.to_le_bytes()), "XML length 0"),
            (with(20, &u32::MAX.to_le_bytes()), "XML length 4294967295"),
            (good[..200].to_vec(), "ends before its 4096 bytes"),
            (
                with(32, &5u32.to_le_bytes()),
                "cookie offset 5 is not between",
            ),
            (with(32, &5000u32.to_le_bytes()), "cookie offset 5000"),
            (with(92, &[0xff]), "domain XML is not UTF-8"),
        ];
        for (bytes, want) in cases {
            let e = err(&bytes);
            assert!(
                e.contains("/pool/seed.save") && e.contains(want),
                "{want}: {e}"
            );
        }
        // An XML that fills the data with no NUL.
        let mut full = good.clone();
        for b in &mut full[92..92 + 4096] {
            *b = b'x';
        }
        assert!(err(&full).contains("not NUL-terminated"));
    }
}
