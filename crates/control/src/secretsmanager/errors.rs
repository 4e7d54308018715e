//! Secrets Manager's errors, worded as Secrets Manager words them. No message ever holds a
//! secret's value: at most its name, a version id or a staging label.

use gantry_model::EcsError;

pub fn not_found() -> EcsError {
    EcsError::new(
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
    )
}

pub fn marked_for_deletion() -> EcsError {
    EcsError::new(
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
    )
}

pub fn already_exists(name: &str) -> EcsError {
    EcsError::new(
        "ResourceExistsException",
        format!("The operation failed because the secret {name} already exists."),
    )
}

pub fn scheduled_for_deletion() -> EcsError {
    EcsError::new(
        "InvalidRequestException",
        "You can't create this secret because a secret with this name is already scheduled for deletion.",
    )
}

pub fn version_exists() -> EcsError {
    EcsError::new(
        "ResourceExistsException",
        "You can't modify an existing version, you can only create a new version.",
    )
}

pub fn no_value_for_stage(stage: &str) -> EcsError {
    EcsError::new(
        "ResourceNotFoundException",
        format!("Secrets Manager can't find the specified secret value for staging label: {stage}"),
    )
}

pub fn no_value_for_version(version_id: &str) -> EcsError {
    EcsError::new(
        "ResourceNotFoundException",
        format!(
            "Secrets Manager can't find the specified secret value for VersionId: {version_id}"
        ),
    )
}

pub fn decryption_failure() -> EcsError {
    EcsError::new(
        "DecryptionFailure",
        "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
    )
}

pub fn encryption_failure() -> EcsError {
    EcsError::new(
        "EncryptionFailure",
        "Secrets Manager can't encrypt the protected secret text using the provided KMS key.",
    )
}

pub fn invalid_parameter(message: impl Into<String>) -> EcsError {
    EcsError::new("InvalidParameterException", message)
}

pub fn invalid_request(message: impl Into<String>) -> EcsError {
    EcsError::new("InvalidRequestException", message)
}

/// A constraint failure worded as AWS's model validation words it, for the checks the model
/// cannot express (a blob's decoded length, the name's characters).
pub fn validation(message: impl Into<String>) -> EcsError {
    EcsError::new("ValidationException", message)
}

pub fn invalid_next_token() -> EcsError {
    EcsError::new(
        "InvalidNextTokenException",
        "The NextToken value is invalid.",
    )
}

/// Secrets Manager names its server fault `InternalServiceError`: the store's and the
/// plane's `ServerException`s (a missing master key included) are answered as that.
pub fn as_secrets_manager(e: EcsError) -> EcsError {
    if e.code == "ServerException" {
        EcsError::new("InternalServiceError", e.message)
    } else {
        e
    }
}
