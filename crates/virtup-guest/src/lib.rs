//! External tools as values: one subprocess helper, and virt-builder, virt-customize, qemu-img and friends.
//!
//! Every external program is reached through [`Cmd`], a printable value built by a pure function and
//! run in one place, so argv builders are unit-tested without running anything. The guest side of
//! per-instance identity lives here too: the config disk written at clone time ([`config_disk`]) and
//! the first-boot payload installed into templates that reads it ([`firstboot`]).

pub mod builder;
pub mod checksum;
mod cmd;
pub mod config_disk;
pub mod customize;
mod error;
pub mod firstboot;
pub mod gpg;
pub mod identity;
pub mod libguestfs;
pub mod qemu_img;
#[cfg(feature = "script")]
pub mod script;
pub mod space;
pub mod ssh;
pub mod sysprep;
pub mod virt_install;
pub mod xz;

pub use builder::VirtBuilder;
pub use cmd::{shell_quote, Cmd, CmdError, Stream};
pub use customize::{CustomizeOp, VirtCustomize};
pub use error::GuestError;
pub use identity::{DataFilesystem, HostKey, Identity, PrivateKey, StaticIpv4};
pub use sysprep::VirtSysprep;
pub use virt_install::VirtInstall;

/// Looks `program` up in `$PATH` the way `execvp` would; `None` when absent.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
