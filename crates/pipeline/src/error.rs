use phivault_store::StoreError;
use thiserror::Error;

/// Errors of the job queue. Messages name what went wrong, never a job's subject.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The job is no longer running under this lease: it expired and another worker
    /// claimed the job, or it was already completed or failed. Whatever the caller wrote
    /// in the same transaction must be rolled back.
    #[error("the job's lease was lost")]
    LeaseLost,
    /// A job kind outside `[a-z0-9_]{1,64}`.
    #[error("invalid job kind")]
    InvalidKind,
    /// An error code outside `[a-z0-9_]{1,64}`.
    #[error("invalid error code")]
    InvalidErrorCode,
    /// A worker id outside `[A-Za-z0-9._:-]{1,128}`.
    #[error("invalid worker id")]
    InvalidWorkerId,
    /// A lease duration or attempt limit out of range.
    #[error("invalid {0}")]
    InvalidArgument(&'static str),
    /// The transaction is bound to a different tenant than the job.
    #[error("the transaction belongs to another tenant than the job")]
    WrongTenant,
    /// A job row holds a state this version does not know.
    #[error("a job row holds an unknown state")]
    CorruptRow,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PipelineError {
    /// A stable machine code for logs and API answers.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::LeaseLost => "lease_lost",
            PipelineError::InvalidKind => "invalid_kind",
            PipelineError::InvalidErrorCode => "invalid_error_code",
            PipelineError::InvalidWorkerId => "invalid_worker_id",
            PipelineError::InvalidArgument(_) => "invalid_argument",
            PipelineError::WrongTenant => "wrong_tenant",
            PipelineError::CorruptRow => "corrupt_row",
            PipelineError::Store(_) => "store",
        }
    }
}
