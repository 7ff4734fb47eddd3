//! `GuestError`: the one error type of this crate; messages are lowercase and name the object.

use std::path::PathBuf;

use crate::cmd::{io_reason, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error(transparent)]
    Cmd(#[from] CmdError),

    #[error(transparent)]
    Data(#[from] virtup_core::DataError),

    #[error("failed to read `{}`: {}", .path.display(), io_reason(.error))]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("failed to write `{}`: {}", .path.display(), io_reason(.error))]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A tool printed something we could not understand.
    #[error("failed to parse the output of `{cmd}`: {reason}")]
    Parse { cmd: String, reason: String },

    /// A value that cannot be passed to a tool (e.g. a path holding the tool's separator).
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// A field of an [`Identity`](crate::Identity) that would be unsafe or wrong inside a guest.
    #[error("invalid {field} in the identity of `{hostname}`: {reason}")]
    InvalidIdentity {
        hostname: String,
        field: &'static str,
        reason: String,
    },

    #[error("invalid checksum `{spec}`: {reason}")]
    InvalidChecksum { spec: String, reason: String },

    #[error("checksum mismatch for `{}`: expected {expected}, got {actual}", .path.display())]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("no checksum for `{name}` in `{source_name}`")]
    ChecksumNotListed { name: String, source_name: String },

    #[error("failed to verify the signature of `{}`: {reason}", .path.display())]
    Signature { path: PathBuf, reason: String },

    #[error("failed to hash the password: {reason}")]
    PasswordHash { reason: String },
}

impl GuestError {
    pub(crate) fn read(path: impl Into<PathBuf>, error: std::io::Error) -> GuestError {
        GuestError::Read {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, error: std::io::Error) -> GuestError {
        GuestError::Write {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> GuestError {
        GuestError::InvalidArgument {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }
}
