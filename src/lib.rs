//! # Passerelle
//!
//! A SMART-on-FHIR sidecar for a medical practice's EHR. It opens during a
//! visit, reads the patient's context from the EHR's FHIR R4 server, screens
//! for social and financial barriers, and writes what it learns back as
//! standard FHIR resources so that the EHR stays the system of record.
//!
//! The repository is a Cargo workspace (see `docs/ARCHITECTURE.md`): the
//! rules and the FHIR layer are crates of their own, re-exported here so
//! every path reads `passerelle::domain::…` and `passerelle::fhir::…`; the
//! development EHR launcher and the local FHIR server runner are the dev
//! crate `passerelle-dev`. The modules follow the data:
//!
//! * [`config`]: every setting, as flags and `PASSERELLE_…` environment variables;
//! * [`telemetry`]: the log subscriber; logs never hold a token or patient data;
//! * [`auth`]: the SMART App Launch 2.2 client (EHR and standalone launches,
//!   Backend Services), sessions, scopes, signing keys, and the one
//!   constant-time secret comparison;
//! * [`store`]: Passerelle's own state in SQLite, or in PostgreSQL shared by
//!   several instances (sessions, the outbox and the queue's shared index,
//!   sealed with AES-GCM);
//! * [`cluster`]: several instances on PostgreSQL: the queue's one leader
//!   (an advisory lock) and the fan-out of queue changes (LISTEN/NOTIFY);
//! * [`http`]: the web app, one module per feature (launch, visit, screen,
//!   refer, appeal, task, letter, queue, patterns) over a few shared leaves
//!   (the launch extractors, the outbox write-through, the clock, errors
//!   turned into clear answers); it never decodes FHIR itself;
//! * [`outbox`]: sending kept writes, and sending them again until the FHIR
//!   server has them;
//! * [`queue`]: the coordinators' in-memory index of Tasks and its Backend
//!   Services poller;
//! * [`directory`]: where the community resource directory comes from (the
//!   shipped file, a local HSDS file or an HSDS API);
//! * [`pdf`]: letters as printable PDFs;
//! * [`fhir`] (crate `passerelle-fhir`): the only code that speaks HTTP to
//!   FHIR servers and knows FHIR JSON: a thin R4 client, decoding into R4B
//!   models, every feature's reads (returning plain values of [`domain`])
//!   and writes, the visit context loader, schema validation of what we
//!   write;
//! * [`domain`] (crate `passerelle-domain`): the rules (coverage gaps, appeal
//!   regimes, SDOH domains, the Task statuses and state machine, the
//!   directory search, letters, the queue's order), free of I/O so they are
//!   tested in microseconds; [`domain::patterns`], the measures across
//!   patients, is a folder with one module per measure family (denials,
//!   appeals, referrals, screening, coverage) beside the accumulation state,
//!   the merge of batches, the small-cell suppression and the exported
//!   report;
//! * [`seed`] and [`check`]: the integrator's tools (fixtures in, conformance
//!   probe out).

pub mod auth;
pub mod check;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod http;
pub mod outbox;
pub mod pdf;
pub mod queue;
pub mod seed;
pub mod store;
pub mod telemetry;

pub use passerelle_domain as domain;
pub use passerelle_fhir as fhir;
