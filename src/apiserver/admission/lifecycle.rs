//! NamespaceLifecycle's refusals beyond the registry's own (writes into a missing or terminating
//! namespace are refused where objects are created): the system namespaces cannot be deleted.

use axum::response::Response;

use super::{Attributes, Operation};

/// The namespaces upstream never lets go.
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Refuses deleting a system namespace.
pub fn validate(a: &Attributes<'_>) -> Result<(), Response> {
    if a.op == Operation::Delete && a.is("", "namespaces") && IMMORTAL.contains(&a.name) {
        return Err(a.forbidden("this namespace may not be deleted"));
    }
    Ok(())
}
