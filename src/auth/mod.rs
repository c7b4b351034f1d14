//! Authorization: the SMART App Launch 2.2 client (EHR launch, standalone
//! launch, backend services), sessions, and the keys Passerelle signs with.

pub mod keys;
pub mod scopes;
pub mod session;
pub mod smart;

use futures::future::BoxFuture;

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
