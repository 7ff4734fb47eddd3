//! virtup's operations as a library: a caller builds a typed request, decides the [`Mode`] once, and
//! gets a typed report back (the inventory's `collect`, which changes nothing, takes no mode and
//! returns a listing). Nothing here knows Ansible's JSON or the command line; the module binaries
//! and `virt-up` are adapters around it.

pub mod adopt;
pub mod cloud_init;
pub mod context;
pub mod host;
pub mod identity;
pub mod instance;
pub mod inventory;
pub mod owner;
pub mod playbook;
pub mod power;
pub mod reach;
pub mod reservation;
pub mod template;
#[cfg(test)]
mod test_support;
mod virt_choice;
mod volume_copy;
pub mod warm;

/// Runs a tool to completion; its failure names what the run was for (the tool's own error is the cause).
pub(crate) fn run_tool(cmd: &virtup_guest::Cmd, what: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    cmd.output().map(drop).with_context(|| what.to_owned())
}

/// The accelerator of a libguestfs appliance working for `hv`: the one its guests get (`hypervisor`,
/// asked only then) when `hv` is this machine, else this machine's (see
/// [`virtup_libvirt::remote_appliance_virt_type`]); a remote hypervisor's is never probed for it.
pub(crate) fn appliance_virt_type(
    hv: &virtup_libvirt::Hypervisor,
    hypervisor: impl FnOnce() -> anyhow::Result<virtup_core::VirtType>,
) -> anyhow::Result<virtup_core::VirtType> {
    if hv.is_local() {
        hypervisor()
    } else {
        Ok(virtup_libvirt::remote_appliance_virt_type()?)
    }
}

/// Makes a libguestfs tool (virt-builder, virt-customize, virt-sysprep) run on this machine for
/// `hv`, under `appliance` (see [`appliance_virt_type`]). A libvirt backend of
/// libguestfs must not follow the default URI to a remote hypervisor, whose paths are not this
/// machine's: on a local hypervisor it is that one (whatever the environment names); for a remote
/// one the images are worked on here.
pub(crate) fn appliance_env(
    cmd: &mut virtup_guest::Cmd,
    hv: &virtup_libvirt::Hypervisor,
    appliance: virtup_core::VirtType,
) {
    virtup_guest::libguestfs::apply_env(cmd, appliance);
    if hv.is_local() {
        cmd.env("LIBVIRT_DEFAULT_URI", hv.uri());
    } else {
        cmd.env_remove("LIBVIRT_DEFAULT_URI");
        // Nor may libvirt.conf's `uri_default` send it there: the direct backend (Debian's default)
        // unless the user chose a backend.
        if std::env::var_os("LIBGUESTFS_BACKEND").is_none() {
            cmd.env("LIBGUESTFS_BACKEND", "direct");
        }
    }
}

/// Whether a run may change anything. Decided once by the caller (from Ansible's check mode for the
/// modules); below it, only `converge` looks at it, to stop after the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Observe and plan; report what would change; no side effect at all.
    Check,
    /// Observe, plan and apply the plan.
    Apply,
}

/// Receives what a run wants a human or the caller to know while it works.
///
/// `changed` matters to the Ansible modules: a run that fails after a side effect must still
/// report `changed`, so every step calls it before it touches anything.
pub trait Reporter {
    /// A side effect is about to happen.
    fn changed(&self) {}
    /// A new stage of long work begins.
    fn stage(&self, _text: &str) {}
    /// A one-off remark.
    fn note(&self, _text: &str) {}
}

/// A reporter that keeps nothing; for callers that only want the report.
pub struct Quiet;

impl Reporter for Quiet {}
