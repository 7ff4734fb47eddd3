//! The crate's one error type: every message names the object and reads after "failed to …".

use std::path::PathBuf;

/// Anything that can go wrong between virtup and libvirt.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("failed to connect to `{uri}`: {message}")]
    Connect { uri: String, message: String },

    /// A libvirt call failed; `action` is a verb phrase such as "define domain".
    #[error("failed to {action} `{object}`: {message}")]
    Call {
        action: String,
        object: String,
        message: String,
    },

    #[error("domain `{0}` not found")]
    DomainNotFound(String),

    #[error("storage pool `{0}` not found")]
    PoolNotFound(String),

    #[error("volume `{volume}` not found in storage pool `{pool}`")]
    VolumeNotFound { pool: String, volume: String },

    #[error("network `{0}` not found")]
    NetworkNotFound(String),

    /// A value was refused before anything reached libvirt.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("failed to parse {what}: {message}")]
    Parse { what: String, message: String },

    /// The I/O cause is part of the message and deliberately not also a `source()`, which
    /// anyhow's `{:#}` would print a second time.
    #[error("failed to read `{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl LibvirtError {
    pub(crate) fn call(action: impl Into<String>, object: &str, err: &virt::error::Error) -> Self {
        use virt::enumutil::Enum;
        use virt::error::{ErrorDomain, ErrorNumber};
        let lost = err.domain() == Enum::Known(ErrorDomain::Rpc)
            || err.code() == Enum::Known(ErrorNumber::NoConnect);
        LibvirtError::Call {
            action: action.into(),
            object: object.to_owned(),
            message: call_message(err.message(), lost),
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        LibvirtError::Invalid {
            what,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn parse(what: impl Into<String>, message: impl Into<String>) -> Self {
        LibvirtError::Parse {
            what: what.into(),
            message: message.into(),
        }
    }

    /// True for the "does not exist" variants, so callers can treat absence as a state.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            LibvirtError::DomainNotFound(_)
                | LibvirtError::PoolNotFound(_)
                | LibvirtError::VolumeNotFound { .. }
                | LibvirtError::NetworkNotFound(_)
        )
    }
}

/// libvirt's words, saying so when the connection to the daemon itself failed: "Cannot write data:
/// Broken pipe" alone does not tell a user that libvirtd went away mid-operation.
fn call_message(message: &str, connection_lost: bool) -> String {
    if connection_lost {
        format!("lost the connection to libvirt ({message})")
    } else {
        message.to_owned()
    }
}

pub type Result<T, E = LibvirtError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_names_libvirt() {
        let e = LibvirtError::Call {
            action: "look up domain".into(),
            object: "web1".into(),
            message: call_message("Cannot write data: Broken pipe", true),
        };
        assert_eq!(
            e.to_string(),
            "failed to look up domain `web1`: lost the connection to libvirt (Cannot write data: Broken pipe)"
        );
        assert_eq!(call_message("domain not found", false), "domain not found");
    }

    /// `{:#}` (how `virt-up` and the modules render errors) shows the I/O cause once.
    #[test]
    fn an_io_cause_is_shown_once() {
        let e = || LibvirtError::Io {
            path: "/tmp/seed.iso".into(),
            error: std::io::Error::other("disk on fire"),
        };
        assert_eq!(
            e().to_string(),
            "failed to read `/tmp/seed.iso`: disk on fire"
        );
        let shown = format!("{:#}", anyhow::Error::from(e()));
        assert_eq!(shown.matches("disk on fire").count(), 1, "{shown}");
    }
}
