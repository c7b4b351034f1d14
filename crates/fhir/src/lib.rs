//! The FHIR layer: the only code that speaks HTTP to FHIR servers and knows
//! FHIR JSON. The crate `passerelle-fhir`, which the app re-exports as
//! `passerelle::fhir`; it depends on the domain rules (`passerelle-domain`,
//! seen here as [`crate::domain`]) and on no other part of Passerelle.
//!
//! * [`client`]: a thin R4 REST client (read, search with paging and
//!   `_include`, transaction, conditional create, update with `If-Match`);
//! * [`bulk`]: FHIR Bulk Data export (kick-off, status, NDJSON files, delete);
//! * [`decode`]: FHIR JSON into fhir-sdk's R4B models, one resource at a time;
//! * [`views`]: R4B models into the plain values of [`crate::domain`];
//! * [`context`]: the visit context, loaded concurrently;
//! * [`people`]: the patient, the patient pickers, the signed-in practitioner;
//! * [`screening`], [`referral`], [`appeal`], [`letter`], [`task`],
//!   [`queue`], [`patterns`], [`measure`]: each feature's reads (returning
//!   plain values) and the resources it writes;
//! * [`service`]: a directory service as HealthcareService, Organization
//!   and Location, written inside the referral that first names it;
//! * [`profiles`]: canonical URLs of the profiles and extensions we write;
//! * [`sdoh`]: SDOH evidence in any standard shape (Observations, panels,
//!   QuestionnaireResponses, coded Conditions), for [`crate::domain::evidence`];
//! * [`schema`]: validation of what we write against the R4 JSON schema;
//! * [`searches`]: every search Passerelle sends, for `passerelle check`;
//! * [`transactions`]: the largest transaction Passerelle sends and what
//!   makes each entry safe to send again, for `passerelle check`.
//!
//! The web layer (`passerelle::http`) only calls these functions: it never
//! decodes a FHIR resource itself.
//!
//! Keeping FHIR here also keeps compile times sane: fhir-sdk's `Resource`
//! enum is large, and only this crate instantiates its decoders, so a change
//! in the web layer does not compile them again.

/// The domain rules, by the name the app gives them (`passerelle::domain`).
pub use passerelle_domain as domain;

pub mod appeal;
pub mod bulk;
pub mod bundle;
pub mod client;
pub mod context;
pub mod decode;
pub mod error;
pub mod letter;
pub mod measure;
pub mod patterns;
pub mod people;
pub mod profiles;
pub mod questionnaire;
pub mod queue;
pub mod referral;
pub mod schema;
pub mod screening;
pub mod sdoh;
pub mod searches;
pub mod service;
pub mod subscription;
pub mod task;
pub mod transactions;
pub mod views;

pub use client::{
    Authorizer, Created, Decoded, FhirClient, Id, InvalidId, Limits, POOL_IDLE_TIMEOUT, SearchPage,
    Versioned,
};
pub use error::{FhirError, ReadError};
pub use schema::SchemaValidator;

/// Where the set-up scripts install the FHIR R4 definitions, for the tests
/// that validate against the real schema: `PASSERELLE_DEFINITIONS_DIR`, else
/// `$XDG_CACHE_HOME/passerelle/definitions` (or `~/.cache/…`), as
/// `passerelle --help` documents for the app.
#[cfg(test)]
pub(crate) fn test_definitions_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os("PASSERELLE_DEFINITIONS_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("passerelle")
        .join("definitions")
}
