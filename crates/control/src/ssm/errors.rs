//! SSM's errors, with the codes its model names and AWS's wording. No message ever carries a
//! parameter's value: names, versions, labels and patterns only.

use gantry_model::EcsError;

/// SSM answers bad input with `ValidationException`, whatever the operation's model lists
/// (botocore leaves SSM's common errors out of each operation).
pub fn validation(message: impl Into<String>) -> EcsError {
    EcsError::new("ValidationException", message)
}

/// SSM's fault (HTTP 500).
pub fn internal(message: impl Into<String>) -> EcsError {
    EcsError::new("InternalServerError", message)
}

pub fn access_denied(message: impl Into<String>) -> EcsError {
    EcsError::new("AccessDeniedException", message)
}

/// The parameter a request named (as it named it) does not exist.
pub fn not_found(given: &str) -> EcsError {
    EcsError::new("ParameterNotFound", format!("Parameter {given} not found."))
}

pub fn version_not_found(name: &str, version: i64) -> EcsError {
    EcsError::new(
        "ParameterVersionNotFound",
        format!(
            "Systems Manager could not find version {version} of {name}. Verify the version and try again."
        ),
    )
}

pub fn already_exists() -> EcsError {
    EcsError::new(
        "ParameterAlreadyExists",
        "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
    )
}

pub fn hierarchy_too_deep() -> EcsError {
    EcsError::new(
        "HierarchyLevelLimitExceededException",
        "A hierarchy can have a maximum of 15 levels. For more information, see Requirements and constraints for parameter names in the AWS Systems Manager User Guide.",
    )
}

pub fn invalid_next_token() -> EcsError {
    EcsError::new("InvalidNextToken", "The specified token isn't valid.")
}

pub fn invalid_resource_id() -> EcsError {
    EcsError::new(
        "InvalidResourceId",
        "The resource ID isn't valid. Verify that you entered the correct ID and try again.",
    )
}

/// A store or vault failure, as SSM's fault.
pub fn fault(e: EcsError) -> EcsError {
    if e.code == "ServerException" {
        internal(e.message)
    } else {
        e
    }
}

/// A vault failure: the master key is missing or a sealed value does not open. The vault's
/// own messages name keys, never values.
pub fn vault(e: gantry_vault::VaultError) -> EcsError {
    internal(format!("Cannot use the parameter's encryption key: {e}"))
}
