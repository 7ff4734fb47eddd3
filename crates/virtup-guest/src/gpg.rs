//! GPG verification of checksum files against one given key, in a throwaway GNUPGHOME.
//!
//! `gpgv` with a keyring made from the given key only: the user's keyrings and trust database are
//! never read or changed. For a clearsigned file only the signed text is returned, because text
//! outside the signature could be added by anyone.

use std::fs;
use std::path::Path;

use crate::{Cmd, CmdError, GuestError};

/// `gpg --homedir HOME --batch --no-tty --yes --output OUT --dearmor KEY`: armored key → keyring.
pub fn dearmor_cmd(home: &Path, armored_key: &Path, out: &Path) -> Cmd {
    let mut cmd = Cmd::new("gpg");
    cmd.arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--yes", "--output"])
        .arg(out)
        .arg("--dearmor")
        .arg(armored_key);
    cmd
}

/// `gpgv --homedir HOME --keyring KEYRING [--output -] SIGNATURE [DATA]`: with `DATA` the signature
/// is detached; with `signed_text_to_stdout` the verified text of a clearsigned file goes to stdout.
pub fn gpgv_cmd(
    home: &Path,
    keyring: &Path,
    signature: &Path,
    data: Option<&Path>,
    signed_text_to_stdout: bool,
) -> Cmd {
    let mut cmd = Cmd::new("gpgv");
    cmd.arg("--homedir").arg(home).arg("--keyring").arg(keyring);
    if signed_text_to_stdout {
        cmd.args(["--output", "-"]);
    }
    cmd.arg(signature);
    if let Some(data) = data {
        cmd.arg(data);
    }
    cmd
}

/// A 0700 GNUPGHOME holding `trusted.gpg` made from `key` (armored or binary); removed on drop.
struct Keyring {
    home: tempfile::TempDir,
}

impl Keyring {
    fn new(key: &Path) -> Result<Keyring, GuestError> {
        let home = tempfile::Builder::new()
            .prefix("virtup-gnupg-")
            .tempdir()
            .map_err(|e| GuestError::write(std::env::temp_dir(), e))?;
        let keyring = home.path().join("trusted.gpg");
        let bytes = fs::read(key).map_err(|e| GuestError::read(key, e))?;
        if contains(&bytes, b"-----BEGIN PGP") {
            dearmor_cmd(home.path(), key, &keyring).run()?;
        } else {
            fs::write(&keyring, &bytes).map_err(|e| GuestError::write(&keyring, e))?;
        }
        Ok(Keyring { home })
    }

    fn gpgv(&self, signature: &Path, data: Option<&Path>, text: bool) -> Cmd {
        gpgv_cmd(
            self.home.path(),
            &self.home.path().join("trusted.gpg"),
            signature,
            data,
            text,
        )
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn signature_error(path: &Path, error: CmdError) -> GuestError {
    match error {
        CmdError::Failed { stderr_tail, .. } => GuestError::Signature {
            path: path.to_owned(),
            reason: stderr_tail.replace('\n', "; "),
        },
        other => GuestError::Cmd(other),
    }
}

/// Verifies a clearsigned file (`SHA256SUMS.asc`, a virt-builder `index.asc`) against the key in
/// `key`, and returns the signed text only.
pub fn verify_clearsigned(signed: &Path, key: &Path) -> Result<Vec<u8>, GuestError> {
    let keyring = Keyring::new(key)?;
    let output = keyring
        .gpgv(signed, None, true)
        .output()
        .map_err(|e| signature_error(signed, e))?;
    Ok(output.stdout)
}

/// Verifies `data` against the detached `signature` (armored or binary) and the key in `key`.
pub fn verify_detached(data: &Path, signature: &Path, key: &Path) -> Result<(), GuestError> {
    let keyring = Keyring::new(key)?;
    keyring
        .gpgv(signature, Some(data), false)
        .run()
        .map_err(|e| signature_error(data, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv() {
        let p = Path::new;
        assert_eq!(
            dearmor_cmd(p("/h"), p("/k.asc"), p("/h/trusted.gpg")).argv(),
            [
                "gpg",
                "--homedir",
                "/h",
                "--batch",
                "--no-tty",
                "--yes",
                "--output",
                "/h/trusted.gpg",
                "--dearmor",
                "/k.asc"
            ]
        );
        assert_eq!(
            gpgv_cmd(p("/h"), p("/h/k.gpg"), p("/SUMS.asc"), None, true).argv(),
            [
                "gpgv",
                "--homedir",
                "/h",
                "--keyring",
                "/h/k.gpg",
                "--output",
                "-",
                "/SUMS.asc"
            ]
        );
        assert_eq!(
            gpgv_cmd(
                p("/h"),
                p("/h/k.gpg"),
                p("/SUMS.sig"),
                Some(p("/SUMS")),
                false
            )
            .argv(),
            [
                "gpgv",
                "--homedir",
                "/h",
                "--keyring",
                "/h/k.gpg",
                "/SUMS.sig",
                "/SUMS"
            ]
        );
    }
}
