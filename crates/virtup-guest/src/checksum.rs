//! Checksums of downloaded images: `sha256:<hex>` specs, `SHA256SUMS`-style files, streamed hashing.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256, Sha512};

use crate::GuestError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex digits in a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_hex_len(len: usize) -> Option<Algorithm> {
        match len {
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// An expected digest: `sha256:<64 hex>` or `sha512:<128 hex>` (hex kept lowercase).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl FromStr for Checksum {
    type Err = GuestError;

    fn from_str(spec: &str) -> Result<Checksum, GuestError> {
        let bad = |reason: &str| GuestError::InvalidChecksum {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, hex) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected `sha256:<hex>` or `sha512:<hex>`"))?;
        let algorithm = match name.to_ascii_lowercase().as_str() {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad("the algorithm must be sha256 or sha512")),
        };
        Checksum::from_hex(algorithm, hex.trim()).ok_or_else(|| {
            bad(&format!(
                "a {} digest is {} hex digits",
                algorithm.name(),
                algorithm.hex_len()
            ))
        })
    }
}

impl Checksum {
    /// `None` unless `hex` is a digest of `algorithm`'s length.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Option<Checksum> {
        (hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(
            || Checksum {
                algorithm,
                hex: hex.to_ascii_lowercase(),
            },
        )
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// The lowercase hex digest of the file at `path`, read in 64 KiB blocks.
pub fn hash_file(path: &Path, algorithm: Algorithm) -> Result<String, GuestError> {
    let mut file = File::open(path).map_err(|e| GuestError::read(path, e))?;
    match algorithm {
        Algorithm::Sha256 => digest_reader::<Sha256>(&mut file),
        Algorithm::Sha512 => digest_reader::<Sha512>(&mut file),
    }
    .map_err(|e| GuestError::read(path, e))
}

fn digest_reader<D: Digest>(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = D::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks the file at `path` against `expected`.
pub fn verify_file(path: &Path, expected: &Checksum) -> Result<(), GuestError> {
    let actual = hash_file(path, expected.algorithm)?;
    if actual != expected.hex {
        return Err(GuestError::ChecksumMismatch {
            path: path.to_owned(),
            expected: expected.to_string(),
            actual: format!("{}:{actual}", expected.algorithm.name()),
        });
    }
    Ok(())
}

/// One line of a checksum file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumEntry {
    pub name: String,
    pub checksum: Checksum,
}

/// Parses checksum files as distributions publish them: GNU style (`<hex>  name`, `<hex> *name`)
/// and BSD style (`SHA256 (name) = <hex>`), with the algorithm told by the hex length in GNU style.
/// Comments, blank lines, PGP armor and unrecognised lines are skipped; for a clearsigned file,
/// parse the text [`crate::gpg::verify_clearsigned`] returns, never the file itself.
pub fn parse_sums(text: &str) -> Vec<SumEntry> {
    text.lines().filter_map(parse_sum_line).collect()
}

fn parse_sum_line(line: &str) -> Option<SumEntry> {
    let line = line.trim_end_matches('\r');
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    if let Some((head, hex)) = line.split_once(") = ") {
        let (name_alg, name) = head.split_once(" (")?;
        let algorithm = match name_alg.trim() {
            "SHA256" => Algorithm::Sha256,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        };
        return Some(SumEntry {
            name: name.to_owned(),
            checksum: Checksum::from_hex(algorithm, hex.trim())?,
        });
    }
    let (hex, rest) = line.split_once(' ')?;
    let algorithm = Algorithm::from_hex_len(hex.len())?;
    // `<hex>  name` (text mode) or `<hex> *name` (binary mode).
    let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
    if name.is_empty() {
        return None;
    }
    Some(SumEntry {
        name: name.to_owned(),
        checksum: Checksum::from_hex(algorithm, hex)?,
    })
}

/// The checksum listed for `name` in a checksum file's text; entries may carry a `./` prefix or a
/// directory, so the last path component is compared too. `source_name` names the file in errors.
pub fn find_sum(text: &str, name: &str, source_name: &str) -> Result<Checksum, GuestError> {
    let entries = parse_sums(text);
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_owned();
    entries
        .iter()
        .find(|e| e.name == name)
        .or_else(|| entries.iter().find(|e| base(&e.name) == base(name)))
        .map(|e| e.checksum.clone())
        .ok_or_else(|| GuestError::ChecksumNotListed {
            name: name.to_owned(),
            source_name: source_name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn specs() {
        let c: Checksum = format!("sha256:{A256}").parse().unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.to_string(), format!("sha256:{A256}"));
        let upper: Checksum = format!("SHA256:{}", A256.to_uppercase()).parse().unwrap();
        assert_eq!(upper, c);
        let c512: Checksum = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        assert_eq!(c512.algorithm, Algorithm::Sha512);

        let bad = [
            (
                "md5:abc",
                "invalid checksum `md5:abc`: the algorithm must be sha256 or sha512",
            ),
            (
                "nocolon",
                "invalid checksum `nocolon`: expected `sha256:<hex>` or `sha512:<hex>`",
            ),
            (
                "sha256:abc",
                "invalid checksum `sha256:abc`: a sha256 digest is 64 hex digits",
            ),
        ];
        for (spec, msg) in bad {
            assert_eq!(spec.parse::<Checksum>().unwrap_err().to_string(), msg);
        }
        assert!(format!("sha512:{A256}").parse::<Checksum>().is_err());
        assert!(format!("sha256:{}", "g".repeat(64))
            .parse::<Checksum>()
            .is_err());
    }

    #[test]
    fn sums_files() {
        let b512 = "cd".repeat(64);
        let text = format!(
            "# comment\n\
             {A256}  debian-12-generic-amd64.qcow2\n\
             {A256} *binary.img\r\n\
             {b512}  ./sub/dir/image.raw\n\
             SHA256 (Fedora-Cloud.qcow2) = {A256}\n\
             SHA512 (big.xz) = {b512}\n\
             garbage line\n\
             {A256}\n\
             -----BEGIN PGP SIGNATURE-----\n"
        );
        let entries = parse_sums(&text);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "debian-12-generic-amd64.qcow2",
                "binary.img",
                "./sub/dir/image.raw",
                "Fedora-Cloud.qcow2",
                "big.xz"
            ]
        );
        assert_eq!(entries[2].checksum.algorithm, Algorithm::Sha512);
        assert_eq!(entries[4].checksum.algorithm, Algorithm::Sha512);

        assert_eq!(
            find_sum(&text, "image.raw", "SUMS").unwrap().to_string(),
            format!("sha512:{b512}")
        );
        assert_eq!(
            find_sum(&text, "Fedora-Cloud.qcow2", "SUMS").unwrap().hex,
            A256
        );
        assert_eq!(
            find_sum(&text, "missing.qcow2", "SHA256SUMS")
                .unwrap_err()
                .to_string(),
            "no checksum for `missing.qcow2` in `SHA256SUMS`"
        );
    }
}
