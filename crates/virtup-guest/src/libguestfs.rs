//! libguestfs environment: forcing TCG for the appliance where KVM exists but cannot run guests.

use crate::Cmd;

/// How guests (and libguestfs' appliance) are accelerated on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization: libguestfs' defaults apply.
    Kvm,
    /// Software emulation: the appliance must not even try KVM.
    Tcg,
}

/// The variable through which the lab (and users on such hosts) say that KVM is unusable:
/// `VIRTUP_VIRT_TYPE=qemu`. libvirt still reports KVM there, so it cannot be read from capabilities.
pub const VIRT_TYPE_ENV: &str = "VIRTUP_VIRT_TYPE";

impl Accel {
    /// From a libvirt domain type: `kvm` → Kvm, `qemu` → Tcg.
    pub fn from_virt_type(virt_type: &str) -> Option<Accel> {
        match virt_type {
            "kvm" => Some(Accel::Kvm),
            "qemu" => Some(Accel::Tcg),
            _ => None,
        }
    }

    /// What `VIRTUP_VIRT_TYPE` says, if it is set to `kvm` or `qemu`; otherwise the caller probes.
    pub fn from_env() -> Option<Accel> {
        std::env::var(VIRT_TYPE_ENV)
            .ok()
            .and_then(|v| Accel::from_virt_type(v.trim()))
    }
}

/// Sets the environment a libguestfs tool (virt-builder, virt-customize, virt-sysprep) needs
/// under `accel`: with TCG, `LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg`.
/// With KVM nothing changes, so a host's own libguestfs settings stay in force.
pub fn apply_env(cmd: &mut Cmd, accel: Accel) -> &mut Cmd {
    if accel == Accel::Tcg {
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
        apply_env(&mut cmd, Accel::Tcg);
        assert_eq!(
            cmd.get_env("LIBGUESTFS_BACKEND"),
            Some(Some(OsStr::new("direct")))
        );
        assert_eq!(
            cmd.get_env("LIBGUESTFS_BACKEND_SETTINGS"),
            Some(Some(OsStr::new("force_tcg")))
        );
        let mut cmd = Cmd::new("virt-customize");
        apply_env(&mut cmd, Accel::Kvm);
        assert_eq!(cmd.get_env("LIBGUESTFS_BACKEND"), None);
    }

    #[test]
    fn virt_types() {
        assert_eq!(Accel::from_virt_type("qemu"), Some(Accel::Tcg));
        assert_eq!(Accel::from_virt_type("kvm"), Some(Accel::Kvm));
        assert_eq!(Accel::from_virt_type("xen"), None);
    }
}
