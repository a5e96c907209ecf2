//! Errors of the library.
//!
//! Every variant that comes from the user's input names the file (or flag) and says what is wrong, with the
//! expected and the actual value where there is one. The binary maps [`Error::exit_code`] to the process exit
//! status: 2 for bad input or bad arguments, 1 for failures of the machine or of the program itself.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// All errors the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file exists but its content is unusable (malformed, wrong shape, NaN, ...).
    #[error("{}: {problem}", path.display())]
    BadInput { path: PathBuf, problem: String },

    /// Two inputs disagree: e.g. token files of different shapes.
    #[error("{}: {what} is {actual}, but {reference} has {expected}", path.display())]
    Mismatch {
        path: PathBuf,
        what: String,
        expected: String,
        actual: String,
        reference: String,
    },

    /// The batch as a whole cannot be scored (too few collections, empty folder, ...).
    #[error("{}: {problem}", path.display())]
    BadBatch { path: PathBuf, problem: String },

    /// A flag or configuration value is invalid; `flag` names the flag that fixes it.
    #[error("invalid value for {flag}: {problem}")]
    BadArgument { flag: String, problem: String },

    /// The output location cannot be used as asked (non-empty without --force, ...).
    #[error("{}: {problem}", path.display())]
    BadOutput { path: PathBuf, problem: String },

    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A limit set by the user (e.g. --memory-budget) cannot be met.
    #[error("{0}")]
    Resource(String),

    /// A fault of the program or of the machine, not of the user's input (a value that does not
    /// serialise, a thread that cannot start, an embedded asset that does not load): exit 1.
    #[error("internal error: {0}")]
    Internal(String),

    /// The inference backend (ONNX Runtime) failed while running a model that loaded fine.
    #[error("{what}: {problem}")]
    Backend { what: String, problem: String },
}

impl Error {
    /// The process exit code the binary uses for this error: 2 for anything the user can fix in the input or
    /// the arguments, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput { .. }
            | Error::Mismatch { .. }
            | Error::BadBatch { .. }
            | Error::BadArgument { .. }
            | Error::BadOutput { .. } => 2,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => 2,
                _ => 1,
            },
            Error::Resource(_) => 2,
            Error::Internal(_) | Error::Backend { .. } => 1,
        }
    }

    /// Shorthand for [`Error::BadInput`].
    pub fn bad_input(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::BadInput {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(what: impl std::fmt::Display) -> Self {
        Error::Internal(what.to_string())
    }

    /// Shorthand for [`Error::BadArgument`].
    pub fn bad_argument(flag: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::BadArgument {
            flag: flag.into(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_faults_exit_1_and_user_limits_exit_2() {
        assert_eq!(Error::internal("a value did not serialise").exit_code(), 1);
        assert!(Error::internal("x")
            .to_string()
            .starts_with("internal error: "));
        assert_eq!(
            Error::Resource("raise --memory-budget".into()).exit_code(),
            2
        );
        assert_eq!(Error::bad_argument("--size", "odd").exit_code(), 2);
    }
}
