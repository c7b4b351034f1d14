//! Authorization: the SMART App Launch 2.2 client (EHR launch, standalone
//! launch, backend services), sessions, and the keys Passerelle signs with.

pub mod keys;
pub mod scopes;
pub mod session;
pub mod smart;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::fhir::{Authorizer, FhirError};

/// A fixed bearer token (a backend-services or development token): no
/// refresh, so a 401 stands.
pub struct StaticToken(pub String);

impl Authorizer for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<String, FhirError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }

    fn after_unauthorized<'a>(
        &'a self,
        _rejected: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, FhirError>> {
        Box::pin(async move { Ok(None) })
    }
}

/// Equal secrets (a CSRF token, a client secret, a notification endpoint's
/// secret), compared in constant time through their SHA-256, so neither the
/// content nor the length leaks through timing: the one comparison every
/// secret check uses.
pub fn same_secret(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3cre"));
        assert!(!same_secret("s3cret", "s3cret "));
        assert!(!same_secret("", "x"));
        assert!(same_secret("", ""));
    }
}
