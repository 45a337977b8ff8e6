//! The runtime's error type: a small, copyable enum. Nothing in the core panics on input.

use core::fmt;

/// Everything that can go wrong when parsing or running a `.mote` model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The bytes do not start with the `MOTE` magic.
    BadMagic,
    /// The file was written for another format version.
    VersionMismatch {
        /// Version found in the file.
        found: u16,
        /// Version this runtime reads.
        expected: u16,
    },
    /// The buffer is shorter than the file claims to be.
    Truncated,
    /// The CRC-32 over the file body does not match the header.
    ChecksumMismatch,
    /// A table, offset or length points outside its section.
    OutOfBounds,
    /// A section or tensor is not aligned as the format requires.
    Misaligned,
    /// An unknown dtype, op kind, storage class or flag value.
    BadEnum,
    /// An op has the wrong number of inputs or outputs.
    BadArity,
    /// An op's inputs or outputs have shapes it cannot work with.
    BadShape,
    /// An op's inputs or outputs have dtypes it cannot work with.
    BadDType,
    /// An op's parameters are malformed.
    BadParams,
    /// A string in the file is not valid UTF-8.
    BadString,
    /// No entry point, input or output with that name or index.
    NotFound,
    /// The caller's arena or state buffer is smaller than the model needs.
    ArenaTooSmall {
        /// Bytes the model needs.
        needed: u32,
        /// Bytes the caller gave.
        given: u32,
    },
    /// A caller-provided buffer has the wrong number of elements.
    SizeMismatch,
    /// The KV cache (or other state) is full: the sequence outgrew the bound it was converted for.
    StateFull,
    /// An index input (token id, position) is outside the table it indexes.
    IndexOutOfRange,
    /// An external backend (tract) failed to load or run the model.
    Backend,
    /// An input value is NaN or infinite (at this element index of the input).
    NonFinite {
        /// Index of the first offending element.
        index: u32,
    },
    /// A diffusion sampler was run on a model without a noise schedule or sampler state
    /// (convert it from a graph carrying `mote.diffusion.alpha_bar` metadata).
    NotADiffusionModel,
    /// A diffusion model cannot sample with the requested number of steps.
    UnsupportedSteps {
        /// The step counts it supports.
        supported: crate::diffusion::StepCounts,
    },
    /// A classifier-free guidance scale outside
    /// [`MIN_GUIDANCE`](crate::diffusion::MIN_GUIDANCE)..=[`MAX_GUIDANCE`](crate::diffusion::MAX_GUIDANCE).
    GuidanceOutOfRange,
    /// Class conditioning or guidance was asked of a model without a class input (or without
    /// the unconditional class it needs).
    NoConditionalPath,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic => write!(f, "not a .mote file (bad magic)"),
            Error::VersionMismatch { found, expected } => write!(
                f,
                ".mote format version {found}, but this runtime reads version {expected}; re-convert the model"
            ),
            Error::Truncated => write!(f, "file is truncated"),
            Error::ChecksumMismatch => write!(f, "checksum mismatch: the file is corrupted"),
            Error::OutOfBounds => write!(f, "an offset or length points outside the file"),
            Error::Misaligned => write!(f, "a section or tensor is misaligned"),
            Error::BadEnum => write!(f, "unknown dtype, op kind or flag"),
            Error::BadArity => write!(f, "an op has the wrong number of operands"),
            Error::BadShape => write!(f, "an op has inconsistent shapes"),
            Error::BadDType => write!(f, "an op has unsupported dtypes"),
            Error::BadParams => write!(f, "an op has malformed parameters"),
            Error::BadString => write!(f, "a string is not valid UTF-8"),
            Error::NotFound => write!(f, "no such entry point, input or output"),
            Error::ArenaTooSmall { needed, given } => {
                write!(f, "buffer too small: needs {needed} bytes, got {given}")
            }
            Error::SizeMismatch => write!(f, "buffer has the wrong number of elements"),
            Error::StateFull => write!(f, "state is full: sequence longer than the converted bound"),
            Error::IndexOutOfRange => write!(f, "an index is outside the table it indexes"),
            Error::Backend => write!(f, "the tract backend failed to load or run the model"),
            Error::NonFinite { index } => write!(f, "input element {index} is NaN or infinite"),
            Error::NotADiffusionModel => write!(
                f,
                "not a diffusion model: no noise schedule or sampler state (convert a graph with \
                 mote.diffusion.alpha_bar metadata)"
            ),
            Error::UnsupportedSteps { supported } => {
                write!(f, "unsupported step count: this model samples with {supported} steps")
            }
            Error::GuidanceOutOfRange => write!(
                f,
                "guidance scale out of range: it must be within {}..={}",
                crate::diffusion::MIN_GUIDANCE,
                crate::diffusion::MAX_GUIDANCE
            ),
            Error::NoConditionalPath => {
                write!(f, "the model has no conditional path: it has no class input and samples unconditionally")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Shorthand for results in this crate.
pub type Result<T> = core::result::Result<T, Error>;
