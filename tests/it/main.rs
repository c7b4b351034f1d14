//! Passerelle's integration and browser tests, in one binary so the harness
//! and the ~390 crates behind it are compiled and linked once, not once per
//! file. Each module is one area, against a real Helios FHIR Server started
//! by [`common`] (and, for [`browser`], a headless Chromium).
//!
//! The two log-capture tests (`tests/logs.rs`, `tests/smart_logs.rs`) stay
//! binaries of their own: each installs the process's log subscriber.

#[path = "../common/mod.rs"]
mod common;

mod act;
mod browser;
mod conformance;
mod directory;
mod engines;
mod fhir_client;
mod hardening;
mod instances;
mod launcher;
mod medplum_smart;
mod patterns;
mod queue;
mod redirect;
mod screening;
mod seed_and_check;
mod smart;
mod visit;
