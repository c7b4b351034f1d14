//! # Passerelle
//!
//! A SMART-on-FHIR sidecar for a medical practice's EHR. It opens during a
//! visit, reads the patient's context from the EHR's FHIR R4 server, screens
//! for social and financial barriers, and writes what it learns back as
//! standard FHIR resources so that the EHR stays the system of record.
//!
//! The modules follow the data:
//!
//! * [`config`]: every setting, as flags and `PASSERELLE_…` environment variables;
//! * [`http`]: the web app, one module per feature (launch, visit, screen,
//!   refer, appeal, task, letter, queue, patterns) over a few shared leaves
//!   (the launch extractors, the outbox write-through, the clock, errors
//!   turned into clear answers); it never decodes FHIR itself;
//! * [`fhir`]: the only module that speaks HTTP to FHIR servers and knows FHIR
//!   JSON: a thin R4 client, decoding into R4B models, every feature's reads
//!   (returning plain values of [`domain`]) and writes, the visit context
//!   loader, schema validation of what we write;
//! * [`domain`]: the rules (coverage gaps, appeal regimes, SDOH domains, the
//!   Task statuses and state machine), free
//!   of I/O so they are tested in microseconds; [`domain::patterns`], the
//!   measures across patients, is a folder with one module per measure
//!   family (denials, appeals, referrals, screening, coverage) beside the
//!   accumulation state, the merge of batches, the small-cell suppression
//!   and the exported report;
//! * [`seed`] and [`check`]: the integrator's tools (fixtures in, conformance
//!   probe out);
//! * [`dev`]: the local Helios FHIR Server runner used by `demo` and the tests.

pub mod auth;
pub mod check;
pub mod config;
pub mod dev;
pub mod directory;
pub mod domain;
pub mod fhir;
pub mod http;
pub mod outbox;
pub mod pdf;
pub mod queue;
pub mod seed;
pub mod store;
pub mod telemetry;
