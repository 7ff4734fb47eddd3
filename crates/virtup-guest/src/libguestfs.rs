//! libguestfs environment: forcing TCG for the appliance where KVM exists but cannot run guests.

use virtup_core::VirtType;

use crate::Cmd;

/// Sets the environment a libguestfs tool (virt-builder, virt-customize, virt-sysprep) needs
/// under `virt_type`: with TCG (`qemu`), `LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg`.
/// With KVM nothing changes, so a host's own libguestfs settings stay in force.
pub fn apply_env(cmd: &mut Cmd, virt_type: VirtType) -> &mut Cmd {
    if virt_type == VirtType::Qemu {
        cmd.env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn tcg_forces_the_direct_backend() {
        let mut cmd = Cmd::new("virt-customize");
        apply_env(&mut cmd, VirtType::Qemu);
        assert_eq!(
            cmd.get_env("LIBGUESTFS_BACKEND"),
            Some(Some(OsStr::new("direct")))
        );
        assert_eq!(
            cmd.get_env("LIBGUESTFS_BACKEND_SETTINGS"),
            Some(Some(OsStr::new("force_tcg")))
        );
        let mut cmd = Cmd::new("virt-customize");
        apply_env(&mut cmd, VirtType::Kvm);
        assert_eq!(cmd.get_env("LIBGUESTFS_BACKEND"), None);
    }
}
