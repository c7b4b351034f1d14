//! The FHIR layer: the only module that speaks HTTP to FHIR servers and knows
//! FHIR JSON.
//!
//! * [`client`]: a thin R4 REST client (read, search with paging and
//!   `_include`, transaction, conditional create, update with `If-Match`);
//! * [`decode`]: FHIR JSON into fhir-sdk's R4B models, one resource at a time;
//! * [`views`]: R4B models into the plain values of [`crate::domain`];
//! * [`context`]: the visit context, loaded concurrently;
//! * [`people`]: the patient, the patient pickers, the signed-in practitioner;
//! * [`screening`], [`referral`], [`appeal`], [`letter`], [`task`],
//!   [`queue`], [`patterns`], [`measure`]: each feature's reads (returning
//!   plain values) and the resources it writes;
//! * [`schema`]: validation of what we write against the R4 JSON schema.
//!
//! The web layer ([`crate::http`]) only calls these functions: it never
//! decodes a FHIR resource itself. The layer depends on [`crate::domain`]
//! alone (its tests also find the installed R4 schema through
//! [`crate::config`]).
//!
//! Keeping FHIR here also keeps compile times sane: fhir-sdk's `Resource`
//! enum is large, and only this module instantiates its decoders.

pub mod appeal;
pub mod bundle;
pub mod client;
pub mod context;
pub mod decode;
pub mod error;
pub mod letter;
pub mod measure;
pub mod patterns;
pub mod people;
pub mod questionnaire;
pub mod queue;
pub mod referral;
pub mod schema;
pub mod screening;
pub mod task;
pub mod views;

pub use client::{
    Authorizer, Created, Decoded, FhirClient, Id, InvalidId, Limits, SearchPage, Versioned,
};
pub use error::{FhirError, ReadError};
pub use schema::SchemaValidator;
