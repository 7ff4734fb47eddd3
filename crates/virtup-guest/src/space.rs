//! Free space of the file system a tool wrote to, because some tools (virt-builder) fail without saying they ran out of it.

use std::path::Path;

/// Below this many free bytes a failed write is taken to have run out of space.
const NEARLY_FULL: u64 = 64 << 20;

/// `(available to unprivileged writers, total)` bytes of the file system holding `path` (or its
/// parent directory, when `path` itself is gone).
pub fn of(path: &Path) -> Option<(u64, u64)> {
    let probe = if path.exists() { path } else { path.parent()? };
    let st = rustix::fs::statvfs(probe).ok()?;
    Some((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

/// Whether a file system with `avail` of `total` bytes free is full for practical purposes.
pub fn is_full(avail: u64, total: u64) -> bool {
    avail < NEARLY_FULL || avail.saturating_mul(100) < total
}

/// When a tool that wrote `output` failed while its file system is full: the sentence to put before
/// the tool's own error, e.g. "no space left on the file system of `/pool` (3 MiB free of 1100 MiB)".
/// Call it before deleting the partial output, which is what filled the file system.
pub fn exhausted(output: &Path) -> Option<String> {
    let (avail, total) = of(output)?;
    is_full(avail, total).then(|| {
        format!(
            "no space left on the file system of `{}` ({} MiB free of {} MiB)",
            output.parent().unwrap_or(output).display(),
            avail >> 20,
            total >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fullness() {
        assert!(is_full(0, 1 << 30));
        assert!(is_full(8 << 20, 1 << 30));
        assert!(is_full(1 << 30, 200 << 30));
        assert!(!is_full(512 << 20, 1 << 30));
        assert!(!is_full(100 << 30, 200 << 30));
    }

    #[test]
    fn a_missing_file_is_measured_by_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (avail, total) = of(&dir.path().join("gone.part")).unwrap();
        assert!(total > 0 && avail <= total);
        assert!(of(Path::new("/nonexistent-dir/x")).is_none());
    }
}
