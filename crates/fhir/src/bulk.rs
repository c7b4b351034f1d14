//! FHIR Bulk Data export (Bulk Data Access IG 2.0.0, `export.html`), the
//! client side: kick-off, status polling, the manifest, NDJSON output read
//! line by line as it streams in, and the clean-up `DELETE`.
//!
//! * Kick-off (§ "Bulk Data Kick-off Request"): `GET [base]/Patient/$export`
//!   or `GET [base]/Group/[id]/$export` with `_type`, `Accept:
//!   application/fhir+json` and `Prefer: respond-async`; the server answers
//!   `202 Accepted` with the status URL in `Content-Location`. A server that
//!   does not offer the operation answers 404, 405 or 501 (or does not list
//!   it in its CapabilityStatement): [`Kickoff::NotOffered`].
//! * Status (§ "Bulk Data Status Request"): `202` while in progress (with
//!   `Retry-After`, honoured up to [`BulkSettings::max_poll_interval`]),
//!   `200` with the manifest when complete, `4xx`/`5xx` with an
//!   OperationOutcome when the export failed. The whole wait is bounded by
//!   [`BulkSettings::max_wait`].
//! * Output (§ "File Request"): each file is NDJSON, one resource a line;
//!   the bearer token goes with it only when the manifest says
//!   `requiresAccessToken: true`, and only to this server.
//! * Clean-up (§ "Bulk Data Delete Request"): `DELETE` on the status URL
//!   once the files are read, so the server can drop them.
//!
//! A status URL or a file URL is followed only when it is on this server
//! (as paging links are), so an answer cannot send our token elsewhere.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, header};
use serde::Deserialize;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use url::Url;

use super::client::FhirClient;
use super::decode::operation_outcome_message;
use super::error::FhirError;

/// How the patterns view reads the population (the EHR entry's `backend`
/// settings): see [`crate::domain::patterns::ReadMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSettings {
    pub mode: crate::domain::patterns::ReadMode,
    /// `Group/[id]/$export` of this Group (the practice's patients) instead
    /// of `Patient/$export` (every patient on the server).
    pub group: Option<GroupId>,
    /// The longest the export may take, kick-off to manifest.
    pub max_wait: Duration,
    /// The longest pause between two status polls, whatever `Retry-After`
    /// says (hfs always suggests 120 s, however small the export).
    pub max_poll_interval: Duration,
}

impl Default for BulkSettings {
    fn default() -> Self {
        BulkSettings {
            mode: crate::domain::patterns::ReadMode::Auto,
            group: None,
            max_wait: Duration::from_secs(3600),
            max_poll_interval: Duration::from_secs(10),
        }
    }
}

/// The id of a Group, held inline so that the settings stay `Copy` like
/// the rest of [`crate::Limits`]: a FHIR id is 1 to 64 of `A-Z a-z 0-9 - .`
/// (FHIR R4 datatypes.html#id), checked by [`GroupId::parse`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GroupId {
    bytes: [u8; 64],
    len: u8,
}

impl GroupId {
    pub fn parse(id: &str) -> Result<GroupId, crate::InvalidId> {
        if !crate::client::is_valid_id(id) || id.len() > 64 {
            return Err(crate::InvalidId);
        }
        let mut bytes = [0u8; 64];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        Ok(GroupId {
            bytes,
            len: id.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("checked ASCII")
    }
}

impl std::fmt::Debug for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group/{}", self.as_str())
    }
}

/// The answer to a kick-off.
#[derive(Debug)]
pub enum Kickoff {
    /// The export runs; poll here.
    Started(Url),
    /// The server does not offer this export (why, in words).
    NotOffered(String),
}

/// One output file of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct OutputFile {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: String,
}

/// The complete-status manifest (§ "Response - Complete Status").
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "requiresAccessToken", default)]
    pub requires_access_token: bool,
    #[serde(default)]
    pub output: Vec<OutputFile>,
    /// OperationOutcome files: resources the server could not export.
    #[serde(default)]
    pub error: Vec<OutputFile>,
}

/// Whether the CapabilityStatement declares a Patient- or Group-level
/// `export` operation (Bulk Data IG §"Server CapabilityStatement": the
/// operations `patient-export`, `group-export` or `export`, at the server
/// level or on the Patient or Group resource). `None` when it says nothing
/// either way (no `rest` at all).
pub fn offers_export(capabilities: &serde_json::Value, group: bool) -> Option<bool> {
    let rest = capabilities["rest"].as_array()?;
    let wanted = if group {
        ["group-export", "Group"]
    } else {
        ["patient-export", "Patient"]
    };
    let named = |ops: &serde_json::Value| {
        ops.as_array().into_iter().flatten().any(|o| {
            let def = o["definition"].as_str().unwrap_or_default();
            o["name"] == "export" || o["name"] == wanted[0] || def.ends_with(wanted[0])
        })
    };
    Some(rest.iter().any(|r| {
        r["operation"].as_array().into_iter().flatten().any(|o| {
            let def = o["definition"].as_str().unwrap_or_default();
            o["name"] == wanted[0] || def.ends_with(&format!("/{}", wanted[0]))
        }) || r["resource"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|res| res["type"] == wanted[1] && named(&res["operation"]))
    }))
}

impl FhirClient {
    /// Kick off an export of `types` for the Group `group` (or every
    /// patient), full population (no `_since`).
    pub async fn export_kickoff(
        &self,
        group: Option<GroupId>,
        types: &[&str],
    ) -> Result<Kickoff, FhirError> {
        let path = match group {
            Some(g) => format!("Group/{}/$export", g.as_str()),
            None => "Patient/$export".to_string(),
        };
        let mut url = self.base().join(&path).expect("a relative path");
        url.query_pairs_mut().append_pair("_type", &types.join(","));
        let answer = self
            .send(
                Method::GET,
                url,
                None,
                &[("prefer", "respond-async".to_string())],
                false,
                "the Bulk Data export",
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(FhirError::NotFound { .. }) => {
                return Ok(Kickoff::NotOffered(format!("{path} answered 404")));
            }
            Err(FhirError::Refused { status: 405, .. }) => {
                return Ok(Kickoff::NotOffered(format!("{path} answered 405")));
            }
            Err(FhirError::Server { status: 501, .. }) => {
                return Ok(Kickoff::NotOffered(format!("{path} answered 501")));
            }
            Err(e) => return Err(e),
        };
        if answer.status.as_u16() != 202 {
            return Err(FhirError::Invalid {
                what: "an answer to the export kick-off".into(),
                detail: format!("status {} instead of 202 Accepted", answer.status.as_u16()),
            });
        }
        let location = answer
            .headers
            .get(header::CONTENT_LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| FhirError::Invalid {
                what: "an answer to the export kick-off".into(),
                detail: "no Content-Location status URL".into(),
            })?;
        Ok(Kickoff::Started(self.same_server(location)?))
    }

    /// Poll `status` until the manifest, honouring `Retry-After` up to
    /// `max_poll_interval` (a first poll after a second, then doubling),
    /// for at most `max_wait`; `progress` gets the server's `X-Progress`.
    pub async fn export_wait(
        &self,
        status: &Url,
        max_wait: Duration,
        max_poll_interval: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<Manifest, FhirError> {
        let started = Instant::now();
        let mut backoff = Duration::from_secs(1);
        let mut wait = backoff.min(max_poll_interval);
        loop {
            if started.elapsed() + wait > max_wait {
                return Err(FhirError::ExportTooSlow { after: max_wait });
            }
            tokio::time::sleep(wait).await;
            let answer = self
                .send(
                    Method::GET,
                    status.clone(),
                    None,
                    &[],
                    true,
                    "the Bulk Data export status",
                )
                .await?;
            match answer.status.as_u16() {
                200 => {
                    return serde_json::from_slice(&answer.body).map_err(|e| FhirError::Invalid {
                        what: "a Bulk Data manifest".into(),
                        detail: format!("malformed at line {} column {}", e.line(), e.column()),
                    });
                }
                202 => {
                    if let Some(p) = answer
                        .headers
                        .get("x-progress")
                        .and_then(|v| v.to_str().ok())
                    {
                        progress(p);
                    }
                    backoff = (backoff * 2).min(max_poll_interval);
                    let hinted = answer
                        .headers
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    wait = hinted.unwrap_or(backoff).min(max_poll_interval);
                }
                s => {
                    return Err(FhirError::Invalid {
                        what: "a Bulk Data export status".into(),
                        detail: format!("status {s}, neither 202 nor 200"),
                    });
                }
            }
        }
    }

    /// Read one output file line by line as it arrives (never the whole
    /// file in memory): `each` gets every non-empty line. A line longer
    /// than the response size limit is an error.
    pub async fn export_lines(
        &self,
        file: &OutputFile,
        requires_access_token: bool,
        mut each: impl FnMut(&str),
    ) -> Result<(), FhirError> {
        let url = self
            .same_server(&file.url)
            .map_err(|_| FhirError::Invalid {
                what: "a Bulk Data output file".into(),
                detail: "its URL is on another server".into(),
            })?;
        let mut request = self
            .http
            .request(Method::GET, url)
            .header(header::ACCEPT, "application/fhir+ndjson");
        if requires_access_token && let Some(auth) = &self.auth {
            request = request.bearer_auth(auth.token().await?);
        }
        let response = tokio::time::timeout(self.limits.timeout, request.send())
            .await
            .map_err(|_| FhirError::Timeout {
                after: self.limits.timeout,
            })?
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            let message = operation_outcome_message(&body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason").into());
            return Err(FhirError::Refused {
                status: status.as_u16(),
                message: format!("the {} output file: {message}", file.resource_type),
            });
        }
        let bytes = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let reader = tokio_util::io::StreamReader::new(bytes);
        let mut lines = FramedRead::new(
            reader,
            LinesCodec::new_with_max_length(self.limits.max_response_bytes),
        );
        loop {
            let next = tokio::time::timeout(self.limits.timeout, lines.next())
                .await
                .map_err(|_| FhirError::Timeout {
                    after: self.limits.timeout,
                })?;
            match next {
                None => return Ok(()),
                Some(Ok(line)) => {
                    if !line.trim().is_empty() {
                        each(&line);
                    }
                }
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    return Err(FhirError::TooLarge {
                        limit: self.limits.max_response_bytes,
                    });
                }
                Some(Err(LinesCodecError::Io(_))) => {
                    return Err(FhirError::Unreachable {
                        base: self.base().to_string(),
                    });
                }
            }
        }
    }

    /// Tell the server the files are read (or the export abandoned), so it
    /// can delete them. A failure is logged, not an error: the server's own
    /// retention expires them anyway.
    pub async fn export_delete(&self, status: &Url) {
        let done = self
            .send(
                Method::DELETE,
                status.clone(),
                None,
                &[],
                true,
                "the Bulk Data export status",
            )
            .await;
        if let Err(e) = done {
            tracing::warn!(kind = e.kind(), "the Bulk Data export could not be deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn export_is_offered_when_the_capability_statement_lists_it() {
        let hfs_like = json!({ "rest": [{ "operation": [
            { "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export" },
            { "name": "patient-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export" }
        ], "resource": [] }] });
        assert_eq!(offers_export(&hfs_like, false), Some(true));
        assert_eq!(offers_export(&hfs_like, true), Some(false));
        let on_resource = json!({ "rest": [{ "resource": [{ "type": "Group", "operation": [
            { "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export" }
        ] }] }] });
        assert_eq!(offers_export(&on_resource, true), Some(true));
        assert_eq!(offers_export(&on_resource, false), Some(false));
        let none = json!({ "rest": [{ "resource": [{ "type": "Patient" }] }] });
        assert_eq!(offers_export(&none, false), Some(false));
        assert_eq!(offers_export(&json!({}), false), None);
    }

    #[test]
    fn a_group_id_is_a_fhir_id() {
        assert_eq!(
            GroupId::parse("practice-1.a").unwrap().as_str(),
            "practice-1.a"
        );
        assert!(GroupId::parse("").is_err());
        assert!(GroupId::parse("a/b").is_err());
        assert!(GroupId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_manifest_reads_its_files_and_token_posture() {
        let m: Manifest = serde_json::from_value(json!({
            "transactionTime": "2026-12-07T06:05:03Z", "request": "x",
            "requiresAccessToken": true,
            "output": [{ "type": "Patient", "url": "http://h/export-file/j/Patient-0", "count": 1 }],
            "error": []
        }))
        .unwrap();
        assert!(m.requires_access_token);
        assert_eq!(m.output[0].resource_type, "Patient");
        assert!(m.error.is_empty());
    }
}
