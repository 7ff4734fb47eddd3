//! xz: decompressing downloaded `.xz` images with the system's xz (multi-threaded, and as fast as it gets).

use std::path::Path;

use crate::Cmd;

/// `xz --decompress --stdout -- SRC > DST`. Write `dst` under a temporary name and rename it once
/// this succeeded: a killed run leaves a truncated file behind.
pub fn decompress_cmd(src: &Path, dst: &Path) -> Cmd {
    let mut cmd = Cmd::new("xz");
    cmd.args(["--decompress", "--stdout", "--"])
        .arg(src)
        .stdout_file(dst);
    cmd
}

/// Whether `path` names an xz-compressed file by its extension.
pub fn is_xz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "xz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_redirect() {
        let cmd = decompress_cmd(Path::new("/c/d.raw.xz"), Path::new("/c/d.raw"));
        assert_eq!(
            cmd.argv(),
            ["xz", "--decompress", "--stdout", "--", "/c/d.raw.xz"]
        );
        assert_eq!(cmd.get_stdout_file(), Some(Path::new("/c/d.raw")));
        assert!(is_xz(Path::new("a.qcow2.xz")));
        assert!(!is_xz(Path::new("a.qcow2")));
    }
}
