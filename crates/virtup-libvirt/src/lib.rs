//! The only crate that talks to libvirt (through `virt`): domains, volumes, networks and their XML.
