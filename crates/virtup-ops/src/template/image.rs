//! Where a template's image comes from when it is not virt-builder's: a local file or a download,
//! verified against its checksum (and the checksum file's signature) before anything uses it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::{validate, DataDir};
use virtup_guest::checksum::{self, Checksum};
use virtup_guest::{gpg, qemu_img, xz, Cmd};

use crate::run_tool;

/// `sha256:<hex>` / `sha512:<hex>` become a checksum; anything else names a checksum file.
pub(super) fn parse_checksum_spec(spec: &str) -> Result<Option<Checksum>> {
    for (prefix, algorithm) in [
        ("sha256:", checksum::Algorithm::Sha256),
        ("sha512:", checksum::Algorithm::Sha512),
    ] {
        if let Some(hex) = spec.strip_prefix(prefix) {
            return Checksum::from_hex(algorithm, hex).map(Some).ok_or_else(|| {
                anyhow!(
                    "invalid value for `checksum`: `{prefix}` needs {} hex digits",
                    algorithm.hex_len()
                )
            });
        }
    }
    if spec.contains(':') && !spec.starts_with('/') && !spec.contains("://") {
        bail!("invalid value for `checksum`: expected sha256:<hex>, sha512:<hex> or a checksum file, got `{spec}`");
    }
    Ok(None)
}

/// An image ready to be verified: a local file, or a download in the data dir's `cache/`.
/// Derefs to its path, so the build reads it like any file.
pub(super) struct Fetched {
    path: PathBuf,
    /// What a checksum file lists the image as: the file name of the path or of the URL (never
    /// the cache's own `<hex>-<name>`).
    name: String,
    /// A cached download: one that fails its checksum is removed, so the next run downloads again.
    cached: bool,
}

impl std::ops::Deref for Fetched {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The last path segment of a URL, without query or fragment: the name sums files list.
fn url_file_name(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let name = url.rsplit('/').next().unwrap_or(url);
    if name.is_empty() {
        "image"
    } else {
        name
    }
}

/// `curl` into `out`: HTTP(S) only, also across redirects; an error status is a failure.
fn download(url: &str, out: &Path, what: &str) -> Result<()> {
    let mut cmd = Cmd::new("curl");
    cmd.args([
        "--fail",
        "--location",
        "--proto",
        "=http,https",
        "--proto-redir",
        "=http,https",
        "--silent",
        "--show-error",
        "--output",
    ])
    .arg(out)
    .arg(url);
    run_tool(&cmd, &format!("failed to download {what} `{url}`"))
}

/// A local path for the image: local paths and `file://` as they are, downloads cached by URL.
/// A download goes to a scratch dir of this run first (swept if the run is killed) and only a
/// complete one is moved into the cache; every build verifies it again.
pub(super) fn fetch_image(data: &DataDir, location: &str) -> Result<Fetched> {
    let local = |path: &Path| -> Result<Fetched> {
        Ok(Fetched {
            path: existing(path)?,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cached: false,
        })
    };
    if let Some(path) = location.strip_prefix("file://") {
        return local(Path::new(path));
    }
    if !is_url(location) {
        return local(Path::new(location));
    }
    let cache = data.root().join("cache");
    virtup_core::datadir::ensure_private_dir(&cache)?;
    let key = virtup_core::InputDigest::new("virtup-download-v1")
        .field("url", location)
        .finish();
    let name = url_file_name(location);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = cache.join(format!("{}-{safe}", &key[..16]));
    if !path.is_file() {
        let scratch = data.scratch()?;
        let part = scratch.path().join("download");
        download(location, &part, "image")?;
        std::fs::rename(&part, &path)
            .with_context(|| format!("failed to move the download into `{}`", path.display()))?;
    }
    Ok(Fetched {
        path,
        name: name.to_owned(),
        cached: true,
    })
}

fn existing(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "invalid value for `image`: `{}` does not exist or is not a file",
            path.display()
        );
    }
    Ok(path.to_owned())
}

/// Checks the image against a `sha256:`/`sha512:` spec or a (optionally GPG-signed) checksum file,
/// in which the image is looked up by the name it has at its source. A checksum file is read anew
/// on every build (never cached: it is what tells a changed image). A cached download that fails
/// is removed, so no later run finds a file that once failed.
pub(super) fn verify_image(
    image: &Fetched,
    spec: &str,
    gpg_key: Option<&str>,
    data: &DataDir,
) -> Result<()> {
    let expected = expected_sum(image, spec, gpg_key, data)?;
    let verified = checksum::verify_file(&image.path, &expected).with_context(|| {
        format!(
            "image `{}` failed its `checksum` `{spec}`",
            if image.cached {
                &image.name
            } else {
                image.path.to_str().unwrap_or(&image.name)
            }
        )
    });
    if verified.is_err() && image.cached {
        let _ = std::fs::remove_file(&image.path);
    }
    verified
}

/// The digest `spec` gives for `image`: the spec itself, or the entry of the checksum file it names.
fn expected_sum(
    image: &Fetched,
    spec: &str,
    gpg_key: Option<&str>,
    data: &DataDir,
) -> Result<Checksum> {
    if let Some(c) = parse_checksum_spec(spec)? {
        return Ok(c);
    }
    // Kept until the file is read, then removed with the scratch dir.
    let scratch;
    let sums = if is_url(spec) {
        scratch = data.scratch()?;
        let out = scratch.path().join("checksums");
        download(spec, &out, "the checksum file given in `checksum`")?;
        out
    } else {
        let path = Path::new(spec.strip_prefix("file://").unwrap_or(spec));
        if !path.is_file() {
            bail!(
                "invalid value for `checksum`: `{}` does not exist or is not a file",
                path.display()
            );
        }
        path.to_owned()
    };
    let text = match gpg_key {
        Some(key) => {
            let body = gpg::verify_clearsigned(&sums, Path::new(key)).with_context(|| {
                format!("checksum file `{spec}` is not signed by `checksum_gpg_key` `{key}`")
            })?;
            String::from_utf8(body)
                .with_context(|| format!("checksum file `{spec}` is not text"))?
        }
        None => std::fs::read_to_string(&sums)
            .with_context(|| format!("failed to read checksum file `{spec}`"))?,
    };
    checksum::find_sum(&text, &image.name, spec)
        .with_context(|| format!("image `{}` failed its `checksum`", image.name))
}

/// Where an image import decompresses to, beside the build's partial (`<volume>.part` → `<volume>.xz.part`).
pub(super) fn import_partial(part: &Path) -> PathBuf {
    part.with_extension("xz.part")
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Turns the verified image into the template volume's format (decompressing `.xz`), grown to `size`.
pub(super) fn import_image(src: &Path, out: &Path, format: &str, size: Option<&str>) -> Result<()> {
    // Recorded in the ledger before the build starts, so the next run deletes it if this one is
    // killed while it exists.
    let decompressed = import_partial(out);
    let src = if xz::is_xz(src) {
        let r = xz::decompress_cmd(src, &decompressed).output();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&decompressed);
            return Err(e).context("failed to decompress image");
        }
        decompressed.as_path()
    } else {
        src
    };
    let info = qemu_img::info(src, None)?;
    let converted = qemu_img::convert_cmd(src, Some(&info.format), out, format).output();
    if src == decompressed {
        let _ = std::fs::remove_file(src);
    }
    converted.context("qemu-img could not convert the image")?;
    if let Some(size) = size {
        let bytes = validate::parse_size("size", size)?;
        if bytes > info.virtual_size {
            qemu_img::resize_cmd(out, format, bytes)
                .output()
                .context("qemu-img could not grow the image")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! `fetch_image` / `verify_image` against a small HTTP server on loopback in this process.
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::{Arc, Mutex};

    use super::*;

    type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

    /// Serves `files` (path → body) over HTTP/1.0 on 127.0.0.1; 404 for anything else.
    fn serve(files: Files) -> String {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = files.lock().unwrap().get(&path).cloned();
                let mut out = &stream;
                let _ = match body {
                    Some(b) => out
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                                .as_bytes(),
                        )
                        .and_then(|()| out.write_all(&b)),
                    None => out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
            }
        });
        base
    }

    const IMAGE: &[u8] = b"not really a disk image, but bytes with a digest\n";

    fn sha256_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        checksum::hash_file(&p, checksum::Algorithm::Sha256).unwrap()
    }

    fn setup() -> (tempfile::TempDir, DataDir, Files, String) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        let files: Files = Arc::default();
        let sum = sha256_of(IMAGE);
        {
            let mut f = files.lock().unwrap();
            f.insert("/d/debian-12.qcow2".into(), IMAGE.to_vec());
            f.insert(
                "/d/SHA256SUMS".into(),
                format!("{}  other.qcow2\n{sum} *debian-12.qcow2\n", "1".repeat(64)).into(),
            );
            f.insert(
                "/d/BSD".into(),
                format!("SHA256 (debian-12.qcow2) = {sum}\n").into(),
            );
            f.insert(
                "/d/WRONG".into(),
                format!("{}  debian-12.qcow2\n", "0".repeat(64)).into(),
            );
            f.insert("/d/OTHER".into(), format!("{sum}  other.qcow2\n").into());
        }
        let base = serve(files.clone());
        (dir, data, files, base)
    }

    fn leftovers(data: &DataDir) -> Vec<String> {
        std::fs::read_dir(data.tmp_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn url_file_names() {
        assert_eq!(url_file_name("https://h/a/b/img.qcow2"), "img.qcow2");
        assert_eq!(url_file_name("https://h/a/img.qcow2?x=1/2#f"), "img.qcow2");
        assert_eq!(url_file_name("https://h/a/"), "image");
    }

    /// The sums file is searched for the name the URL gives, never the cache's `<hex>-<name>`, in
    /// GNU (binary mode) and BSD style.
    #[test]
    fn a_download_is_looked_up_by_its_url_file_name() {
        let (_d, data, _files, base) = setup();
        let image = fetch_image(&data, &format!("{base}/d/debian-12.qcow2")).unwrap();
        assert_eq!(image.name, "debian-12.qcow2");
        assert!(image.cached);
        let cache_name = image.path.file_name().unwrap().to_str().unwrap();
        assert!(cache_name.ends_with("-debian-12.qcow2") && cache_name.len() == 16 + 1 + 15);
        assert_eq!(std::fs::read(&image.path).unwrap(), IMAGE);
        for sums in ["SHA256SUMS", "BSD"] {
            verify_image(&image, &format!("{base}/d/{sums}"), None, &data).unwrap();
        }
        let spec = format!("sha256:{}", sha256_of(IMAGE));
        verify_image(&image, &spec, None, &data).unwrap();
        assert!(image.path.is_file(), "a verified download stays cached");
        assert_eq!(
            leftovers(&data),
            Vec::<String>::new(),
            "no scratch dir is left"
        );
    }

    /// A download that fails is removed from the cache; one that is not listed names the checksum
    /// file; the sums file is fetched anew each time (a corrected one is seen at once).
    #[test]
    fn failed_verification_leaves_nothing_a_later_run_would_trust() {
        let (_d, data, files, base) = setup();
        let url = format!("{base}/d/debian-12.qcow2");
        let image = fetch_image(&data, &url).unwrap();
        let wrong = format!("{base}/d/WRONG");
        let e = format!(
            "{:#}",
            verify_image(&image, &wrong, None, &data).unwrap_err()
        );
        assert!(
            e.starts_with(&format!(
                "image `debian-12.qcow2` failed its `checksum` `{wrong}`: checksum mismatch"
            )),
            "{e}"
        );
        assert!(!image.path.exists(), "the failed download is removed");

        let image = fetch_image(&data, &url).unwrap();
        let other = format!("{base}/d/OTHER");
        let e = format!(
            "{:#}",
            verify_image(&image, &other, None, &data).unwrap_err()
        );
        assert!(
            e.contains(&format!("no checksum for `debian-12.qcow2` in `{other}`")),
            "{e}"
        );
        // The server's checksum file is corrected: the next verification sees it.
        let good = files.lock().unwrap()["/d/SHA256SUMS"].clone();
        files.lock().unwrap().insert("/d/OTHER".into(), good);
        verify_image(&image, &other, None, &data).unwrap();

        // A cached file that changed on disk is verified again, fails, and is removed.
        std::fs::write(&image.path, b"changed").unwrap();
        let again = fetch_image(&data, &url).unwrap();
        assert_eq!(again.path, image.path);
        assert!(verify_image(&again, &other, None, &data).is_err());
        assert!(!again.path.exists());

        let e = format!(
            "{:#}",
            verify_image(&again, &format!("{base}/d/MISSING"), None, &data).unwrap_err()
        );
        assert!(
            e.contains("failed to download the checksum file given in `checksum`"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            fetch_image(&data, &format!("{base}/d/missing.qcow2"))
                .map(drop)
                .unwrap_err()
        );
        assert!(e.contains("failed to download image"), "{e}");
        assert_eq!(
            leftovers(&data),
            Vec::<String>::new(),
            "no scratch dir is left"
        );
        assert_eq!(
            std::fs::read_dir(data.root().join("cache"))
                .unwrap()
                .count(),
            0,
            "no partial download is cached"
        );
    }

    /// Local images are looked up by their own file name, and a local checksum file works too.
    #[test]
    fn local_images_and_checksum_files() {
        let (d, data, _files, _base) = setup();
        let img = d.path().join("debian-12.qcow2");
        std::fs::write(&img, IMAGE).unwrap();
        let sums = d.path().join("SUMS");
        std::fs::write(&sums, format!("{} *debian-12.qcow2\n", sha256_of(IMAGE))).unwrap();
        for location in [
            img.display().to_string(),
            format!("file://{}", img.display()),
        ] {
            let image = fetch_image(&data, &location).unwrap();
            assert!(!image.cached);
            verify_image(&image, sums.to_str().unwrap(), None, &data).unwrap();
        }
        std::fs::write(&sums, format!("{}  debian-12.qcow2\n", "0".repeat(64))).unwrap();
        let image = fetch_image(&data, img.to_str().unwrap()).unwrap();
        assert!(verify_image(&image, sums.to_str().unwrap(), None, &data).is_err());
        assert!(img.exists(), "a local image is never removed");
        let e = format!(
            "{:#}",
            verify_image(&image, "/nonexistent/SUMS", None, &data).unwrap_err()
        );
        assert!(e.contains("invalid value for `checksum`"), "{e}");
    }
}
