//! A thin FHIR R4 REST client on `reqwest`.
//!
//! Why not fhir-sdk's own client: it retries POSTs on timeout (which
//! duplicates resources), has no `If-None-Exist`, and decodes whole Bundles at
//! once so one bad entry fails a page. Here:
//!
//! * every call has a timeout and a cap on the response size;
//! * only idempotent requests (GET, and PUT with `If-Match`) are retried, on
//!   connection failures, timeouts, 429 and 502–504, honouring `Retry-After`;
//! * we send `Accept: application/fhir+json` with no `fhirVersion` parameter
//!   (servers answer R4; fhir-sdk's R4B models decode it);
//! * searches ask for `Prefer: handling=strict`, so an unsupported search
//!   parameter is an error instead of a silently wider result;
//! * searchsets are decoded entry by entry ([`SearchPage::resources`]), and
//!   reads of many pages can keep each page as text and decode a resource
//!   only when it is reached ([`LazyPage`]);
//! * `next` links are followed only when they point back to the same server,
//!   so a server cannot send us (and, with auth, our token) elsewhere.

use std::time::Duration;

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::decode::{decode, operation_outcome_message};
use super::error::FhirError;

/// The FHIR JSON media type, R4, without a `fhirVersion` parameter.
pub const FHIR_JSON: &str = "application/fhir+json";

/// How long an idle connection is kept for reuse. Node's HTTP server (Medplum
/// among others) and Apache close idle keep-alive connections after 5 s: a
/// request sent on one at that moment is reset by the server, after it left
/// here. Measured with Medplum under load: a GET reset by peer on a
/// connection idle for about 5 s. Dropping ours first avoids the race.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

const RETRIES: u32 = 2;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// Limits that apply to every call, and how the bulk readers may read the
/// population ([`crate::bulk::BulkSettings`]: whether by FHIR Bulk Data
/// export, from which Group, and how long to wait for it).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub bulk: crate::bulk::BulkSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_response_bytes: 16 * 1024 * 1024,
            bulk: crate::bulk::BulkSettings::default(),
        }
    }
}

/// Supplies bearer tokens to a [`FhirClient`] (a SMART launch or a backend
/// services client), so the FHIR layer knows nothing of OAuth.
pub trait Authorizer: Send + Sync {
    /// The access token to send now (refreshed first if about to expire).
    fn token(&self) -> BoxFuture<'_, Result<String, FhirError>>;
    /// The server answered 401 to `rejected`: the token to retry with, or
    /// `None` when no fresh token can be had (the user must launch again).
    fn after_unauthorized<'a>(
        &'a self,
        rejected: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, FhirError>>;
}

/// A client for one FHIR base URL. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct FhirClient {
    pub(crate) http: reqwest::Client,
    base: Url,
    pub(crate) limits: Limits,
    pub(crate) auth: Option<Arc<dyn Authorizer>>,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

/// A resource with the version the server gave it (for `If-Match`).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub resource: T,
    pub version: Option<String>,
}

/// One page of a searchset.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// `(search mode, resource)` for every entry that has a resource.
    pub entries: Vec<(Option<String>, Value)>,
    pub next: Option<Url>,
    pub total: Option<u64>,
}

/// Resources of one type decoded from a page, and how many entries of that
/// type could not be read (they were logged and skipped).
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    pub items: Vec<T>,
    pub skipped: usize,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            items: Vec::new(),
            skipped: 0,
        }
    }
}

impl SearchPage {
    /// Decode the entries of `resource_type`, one by one: a bad entry is
    /// logged (its index and the JSON path at fault, no values) and skipped.
    pub fn resources<T: DeserializeOwned>(&self, resource_type: &str) -> Decoded<T> {
        let mut out = Decoded::default();
        for (index, (_, value)) in self.entries.iter().enumerate() {
            if value.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
                continue;
            }
            match decode::<T>(value.clone(), resource_type) {
                Ok(item) => out.items.push(item),
                Err(err) => {
                    tracing::warn!(resource_type, index, error = %err, "skipped a search entry that is not valid FHIR R4");
                    out.skipped += 1;
                }
            }
        }
        out
    }

    /// The raw resources of one type (for writing back or exporting).
    pub fn raw(&self, resource_type: &str) -> impl Iterator<Item = &Value> {
        self.entries
            .iter()
            .map(|(_, v)| v)
            .filter(move |v| v.get("resourceType").and_then(Value::as_str) == Some(resource_type))
    }
}

/// A search page whose resources stay JSON text until read, one at a time:
/// about the size of the response instead of a decoded tree per resource
/// (roughly ten times larger), for reading many pages in little memory.
#[derive(Debug)]
pub struct LazyPage {
    /// `(resourceType, resource JSON)` for every entry that has a resource.
    entries: Vec<(String, Box<RawValue>)>,
    pub next: Option<Url>,
}

impl LazyPage {
    /// The entries of `resource_type`, each decoded as it is reached and
    /// dropped by the caller before the next.
    pub fn resources<'a>(&'a self, resource_type: &'a str) -> impl Iterator<Item = Value> + 'a {
        self.entries
            .iter()
            .filter(move |(t, _)| t == resource_type)
            .filter_map(|(_, raw)| serde_json::from_str(raw.get()).ok())
    }

    /// How many entries are of `resource_type`.
    pub fn count(&self, resource_type: &str) -> usize {
        self.entries
            .iter()
            .filter(|(t, _)| t == resource_type)
            .count()
    }
}

/// A searchset as [`LazyPage`] reads it: entries kept as text.
#[derive(Deserialize)]
struct LazyBundle {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    link: Vec<LazyLink>,
    #[serde(default)]
    entry: Option<Vec<LazyEntry>>,
}

#[derive(Deserialize)]
struct LazyLink {
    relation: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct LazyEntry {
    resource: Option<Box<RawValue>>,
}

/// Only the `resourceType` of a resource's text.
#[derive(Deserialize)]
struct ResourceKind {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
}

/// What a create returned.
#[derive(Debug, Clone)]
pub struct Created {
    /// `Type/id` of the resource (new, or the existing match of `If-None-Exist`).
    pub reference: Option<String>,
    pub version: Option<String>,
    /// False when `If-None-Exist` matched an existing resource (200 instead of 201).
    pub created: bool,
}

/// A valid FHIR resource id (`[A-Za-z0-9\-\.]{1,64}`): the only ids we put in a URL path.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Redirects are followed only on the origin (scheme, host and port) the
/// request was sent to, and at most 10: a server, or whoever answers in its
/// place, cannot send Passerelle's bearer token and the patient's query to
/// another host. Stopped, the redirect itself is the answer (an error).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(Url::origin);
        if attempt.previous().len() > 10 || first != Some(attempt.url().origin()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// A FHIR `id` (R4 datatype `id`: 1 to 64 of `A-Z a-z 0-9 - .`), checked
/// where it enters Passerelle (a page's address, a form) so that only a
/// valid id is ever put into a request URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// The only way in: a string that is a valid FHIR id.
    pub fn parse(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        if is_valid_id(&id) {
            Ok(Id(id))
        } else {
            Err(InvalidId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Id::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A string that is not a FHIR id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid FHIR id (1 to 64 letters, digits, '-' or '.')")]
pub struct InvalidId;

/// A valid resource type name (letters only, starting upper case).
fn is_valid_type(t: &str) -> bool {
    t.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && t.bytes().all(|b| b.is_ascii_alphabetic())
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl FhirClient {
    /// A client for `base`; `http` is shared across clients (one pool).
    pub fn new(http: reqwest::Client, mut base: Url, limits: Limits) -> Self {
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        FhirClient {
            http,
            base,
            limits,
            auth: None,
        }
    }

    /// The same client, sending bearer tokens from `auth`. Tokens go only to
    /// this base URL (paging links to other servers are refused).
    pub fn with_authorizer(mut self, auth: Arc<dyn Authorizer>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The HTTP client every FHIR call should share.
    pub fn http_client() -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent(concat!("passerelle/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(32)
            .redirect(same_origin_redirects())
            .build()
            .expect("the TLS backend initialises")
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("paths we build are relative and valid")
    }

    fn resource_url(&self, resource_type: &str, id: &str) -> Result<Url, FhirError> {
        if !is_valid_type(resource_type) || !is_valid_id(id) {
            return Err(FhirError::Request(format!(
                "{resource_type}/{id} is not a valid FHIR reference"
            )));
        }
        Ok(self.url(&format!("{resource_type}/{id}")))
    }

    /// Read one resource as JSON, with its version.
    pub async fn read_json(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Versioned<Value>, FhirError> {
        let url = self.resource_url(resource_type, id)?;
        let what = format!("{resource_type} {id}");
        let answer = self.send(Method::GET, url, None, &[], true, &what).await?;
        let version = etag_version(&answer.headers);
        let value = parse_json(&answer.body, &what)?;
        if value.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
            return Err(FhirError::Invalid {
                what,
                detail: "resourceType does not match".into(),
            });
        }
        let version = version.or_else(|| {
            value
                .pointer("/meta/versionId")
                .and_then(Value::as_str)
                .map(String::from)
        });
        Ok(Versioned {
            resource: value,
            version,
        })
    }

    /// Read and decode one resource.
    pub async fn read<T: DeserializeOwned>(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Versioned<T>, FhirError> {
        let Versioned { resource, version } = self.read_json(resource_type, id).await?;
        let resource = decode(resource, resource_type).map_err(|e| FhirError::Invalid {
            what: format!("{resource_type} {id}"),
            detail: e.to_string(),
        })?;
        Ok(Versioned { resource, version })
    }

    /// One page of `GET [base]/[type]?params`.
    pub async fn search(
        &self,
        resource_type: &str,
        params: &[(&str, String)],
    ) -> Result<SearchPage, FhirError> {
        let url = self.search_address(resource_type, params)?;
        self.search_url(url, resource_type).await
    }

    /// `[base]/[type]?params`, for a resource type's name only.
    fn search_address(
        &self,
        resource_type: &str,
        params: &[(&str, String)],
    ) -> Result<Url, FhirError> {
        if !is_valid_type(resource_type) {
            return Err(FhirError::Request(format!(
                "{resource_type} is not a resource type"
            )));
        }
        let mut url = self.url(resource_type);
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        Ok(url)
    }

    /// GET one page of a search. Strict: a server that does not know one of
    /// our search parameters must say so, not ignore it and return every
    /// patient's resources.
    async fn get_page(&self, url: Url, what: &str) -> Result<Answer, FhirError> {
        let strict = [("prefer", "handling=strict".to_string())];
        self.send(Method::GET, url, None, &strict, true, what).await
    }

    /// The page after `page`, if any.
    pub async fn next_page(
        &self,
        page: &SearchPage,
        resource_type: &str,
    ) -> Result<Option<SearchPage>, FhirError> {
        match &page.next {
            Some(url) => self.search_url(url.clone(), resource_type).await.map(Some),
            None => Ok(None),
        }
    }

    /// Every page of a search, up to `max_pages`, as one page.
    pub async fn search_all(
        &self,
        resource_type: &str,
        params: &[(&str, String)],
        max_pages: usize,
    ) -> Result<SearchPage, FhirError> {
        let mut all = self.search(resource_type, params).await?;
        let mut pages = 1;
        while pages < max_pages {
            let Some(next) = self.next_page(&all, resource_type).await? else {
                break;
            };
            all.entries.extend(next.entries);
            all.next = next.next;
            pages += 1;
        }
        Ok(all)
    }

    async fn search_url(&self, url: Url, resource_type: &str) -> Result<SearchPage, FhirError> {
        let what = format!("the {resource_type} search");
        let answer = self.get_page(url, &what).await?;
        let bundle = parse_json(&answer.body, &what)?;
        self.page_from_bundle(bundle, &what)
    }

    /// A search read as a [`LazyPage`].
    pub async fn search_lazy(
        &self,
        resource_type: &str,
        params: &[(&str, String)],
    ) -> Result<LazyPage, FhirError> {
        let url = self.search_address(resource_type, params)?;
        self.lazy_url(url, resource_type).await
    }

    /// The page after `page`, if any, read as a [`LazyPage`].
    pub async fn next_lazy(
        &self,
        page: &LazyPage,
        resource_type: &str,
    ) -> Result<Option<LazyPage>, FhirError> {
        match &page.next {
            Some(url) => self.lazy_url(url.clone(), resource_type).await.map(Some),
            None => Ok(None),
        }
    }

    async fn lazy_url(&self, url: Url, resource_type: &str) -> Result<LazyPage, FhirError> {
        let what = format!("the {resource_type} search");
        let answer = self.get_page(url, &what).await?;
        self.lazy_page(&answer.body, &what)
    }

    /// A searchset's text as a [`LazyPage`]; an entry without a resource or
    /// a `resourceType` is left out, as [`SearchPage`] does.
    fn lazy_page(&self, body: &[u8], what: &str) -> Result<LazyPage, FhirError> {
        let invalid = |detail: String| FhirError::Invalid {
            what: what.into(),
            detail,
        };
        let bundle: LazyBundle = serde_json::from_slice(body).map_err(|e| {
            invalid(format!(
                "malformed search Bundle at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        if bundle.resource_type.as_deref() != Some("Bundle") {
            return Err(invalid("expected a Bundle".into()));
        }
        let next = bundle
            .link
            .iter()
            .find(|l| l.relation.as_deref() == Some("next"))
            .and_then(|l| l.url.as_deref())
            .map(|u| self.same_server(u))
            .transpose()?;
        let entries = bundle
            .entry
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                let raw = e.resource?;
                let kind: ResourceKind = serde_json::from_str(raw.get()).ok()?;
                Some((kind.resource_type?, raw))
            })
            .collect();
        Ok(LazyPage { entries, next })
    }

    fn page_from_bundle(&self, mut bundle: Value, what: &str) -> Result<SearchPage, FhirError> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(FhirError::Invalid {
                what: what.into(),
                detail: "expected a Bundle".into(),
            });
        }
        let next = bundle
            .get("link")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
            .and_then(|l| l.get("url").and_then(Value::as_str))
            .map(|u| self.same_server(u))
            .transpose()?;
        let total = bundle.get("total").and_then(Value::as_u64);
        let entries = match bundle.get_mut("entry").map(Value::take) {
            Some(Value::Array(entries)) => entries
                .into_iter()
                .filter_map(|mut e| {
                    let mode = e
                        .pointer("/search/mode")
                        .and_then(Value::as_str)
                        .map(String::from);
                    e.get_mut("resource")
                        .map(Value::take)
                        .filter(Value::is_object)
                        .map(|r| (mode, r))
                })
                .collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(FhirError::Invalid {
                    what: what.into(),
                    detail: "Bundle.entry is not a list".into(),
                });
            }
        };
        Ok(SearchPage {
            entries,
            next,
            total,
        })
    }

    /// A URL the server gave us, accepted only if it is under our base.
    pub(crate) fn same_server(&self, link: &str) -> Result<Url, FhirError> {
        let url = self.base.join(link).map_err(|_| FhirError::Invalid {
            what: "a paging link".into(),
            detail: "not a URL".into(),
        })?;
        if url.origin() != self.base.origin()
            || !url
                .path()
                .starts_with(self.base.path().trim_end_matches('/'))
        {
            return Err(FhirError::Invalid {
                what: "a paging link".into(),
                detail: "it points to another server".into(),
            });
        }
        Ok(url)
    }

    /// POST a transaction or batch Bundle; never retried automatically (the
    /// caller makes it idempotent with `ifNoneExist` and identifiers, and
    /// decides when to send it again). The answer is read, not trusted: a
    /// 2xx whose Bundle is not a `transaction-response` with one 2xx entry
    /// per entry sent is an error naming the entry
    /// ([`crate::bundle::check_transaction_response`]).
    pub async fn transaction(&self, bundle: &Value) -> Result<Value, FhirError> {
        let response = self.post_bundle(bundle).await?;
        crate::bundle::check_transaction_response(bundle, &response)?;
        Ok(response)
    }

    /// POST a Bundle and parse the answer, whatever its entries say (for
    /// `check`, which reports them itself).
    pub async fn post_bundle(&self, bundle: &Value) -> Result<Value, FhirError> {
        let body = serde_json::to_vec(bundle).map_err(|e| FhirError::Request(e.to_string()))?;
        let answer = self
            .send(
                Method::POST,
                self.base.clone(),
                Some(body),
                &[],
                false,
                "the transaction",
            )
            .await?;
        parse_json(&answer.body, "the transaction response")
    }

    /// Create a resource; with `if_none_exist` (a search query such as
    /// `identifier=sys|val`) nothing is created when a match exists.
    pub async fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&str>,
    ) -> Result<Created, FhirError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !is_valid_type(resource_type) {
            return Err(FhirError::Request(
                "the resource has no resourceType".into(),
            ));
        }
        let body = serde_json::to_vec(resource).map_err(|e| FhirError::Request(e.to_string()))?;
        let headers: Vec<(&str, String)> = if_none_exist
            .map(|q| ("if-none-exist", q.to_string()))
            .into_iter()
            .collect();
        let what = format!("the new {resource_type}");
        let answer = self
            .send(
                Method::POST,
                self.url(resource_type),
                Some(body),
                &headers,
                false,
                &what,
            )
            .await?;
        let reference = answer
            .headers
            .get(header::LOCATION)
            .or_else(|| answer.headers.get(header::CONTENT_LOCATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| reference_from_location(loc, resource_type))
            .or_else(|| {
                serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|v| {
                        v.get("id")
                            .and_then(Value::as_str)
                            .map(|id| format!("{resource_type}/{id}"))
                    })
            });
        Ok(Created {
            reference,
            version: etag_version(&answer.headers),
            created: answer.status == StatusCode::CREATED,
        })
    }

    /// PUT a resource at its id. With `if_match` (a version id) a stale
    /// update is refused by the server (412) and reported as a conflict.
    pub async fn update(
        &self,
        resource: &Value,
        if_match: Option<&str>,
    ) -> Result<Versioned<Value>, FhirError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let url = self.resource_url(resource_type, id)?;
        let body = serde_json::to_vec(resource).map_err(|e| FhirError::Request(e.to_string()))?;
        let headers: Vec<(&str, String)> = if_match
            .map(|v| ("if-match", format!("W/\"{v}\"")))
            .into_iter()
            .collect();
        let what = format!("{resource_type} {id}");
        // A PUT is idempotent only when guarded: an unguarded retry could
        // overwrite someone else's change made in between.
        let answer = self
            .send(
                Method::PUT,
                url,
                Some(body),
                &headers,
                if_match.is_some(),
                &what,
            )
            .await?;
        let version = etag_version(&answer.headers);
        let resource = if answer.body.is_empty() {
            resource.clone()
        } else {
            parse_json(&answer.body, &what)?
        };
        Ok(Versioned { resource, version })
    }

    /// Delete a resource (idempotent: deleting twice is not an error).
    pub async fn delete(&self, resource_type: &str, id: &str) -> Result<(), FhirError> {
        let url = self.resource_url(resource_type, id)?;
        match self
            .send(
                Method::DELETE,
                url,
                None,
                &[],
                true,
                &format!("{resource_type} {id}"),
            )
            .await
        {
            Ok(_) | Err(FhirError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The server's CapabilityStatement (`GET [base]/metadata`).
    pub async fn capabilities(&self) -> Result<Value, FhirError> {
        let answer = self
            .send(
                Method::GET,
                self.url("metadata"),
                None,
                &[],
                true,
                "the CapabilityStatement",
            )
            .await?;
        parse_json(&answer.body, "the CapabilityStatement")
    }

    /// Send one request, with retries when `idempotent`, and with the bearer
    /// token of the authorizer. A 401 from the server (RFC 6750 §3.1, the
    /// token expired or was revoked early) asks the authorizer once for a
    /// fresh token and sends the request once more with it, POSTs included:
    /// a 401 means the request was not processed.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        idempotent: bool,
        what: &str,
    ) -> Result<Answer, FhirError> {
        let mut token = match &self.auth {
            Some(a) => Some(a.token().await?),
            None => None,
        };
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let result = self
                .send_once(
                    method.clone(),
                    url.clone(),
                    body.clone(),
                    headers,
                    token.as_deref(),
                    what,
                )
                .await;
            if let (Err(FhirError::Unauthorized { .. }), Some(auth), Some(rejected), false) =
                (&result, &self.auth, &token, refreshed)
            {
                refreshed = true;
                match auth.after_unauthorized(rejected).await? {
                    Some(fresh) => {
                        token = Some(fresh);
                        continue;
                    }
                    None => return result,
                }
            }
            let retry_after = match &result {
                Err(FhirError::RateLimited { retry_after }) => {
                    Some(retry_after.map(Duration::from_secs))
                }
                Err(FhirError::Server {
                    status: 502..=504, ..
                })
                | Err(FhirError::Timeout { .. })
                | Err(FhirError::Unreachable { .. }) => Some(None),
                _ => None,
            };
            match retry_after {
                Some(wait) if idempotent && attempt < RETRIES => {
                    attempt += 1;
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt));
                    let wait = wait.unwrap_or(backoff).min(MAX_RETRY_WAIT);
                    tracing::info!(method = %method, attempt, wait_ms = wait.as_millis() as u64, "retrying a FHIR request");
                    tokio::time::sleep(wait).await;
                }
                _ => return result,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        bearer: Option<&str>,
        what: &str,
    ) -> Result<Answer, FhirError> {
        let started = std::time::Instant::now();
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.limits.timeout)
            .header(header::ACCEPT, FHIR_JSON);
        if let Some(body) = body {
            request = request.header(header::CONTENT_TYPE, FHIR_JSON).body(body);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.read_body(response).await?;
        tracing::debug!(method = %method, resource_type = resource_type_of(&url), status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "FHIR request");
        if status.is_success() {
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        let message = operation_outcome_message(&body).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string()
        });
        tracing::warn!(method = %method, resource_type = resource_type_of(&url), status = status.as_u16(), "FHIR request failed");
        Err(match status.as_u16() {
            // RFC 6750 §3.1 `invalid_token`: the authorizer may refresh once.
            401 => FhirError::Unauthorized { message },
            404 | 410 => FhirError::NotFound {
                what: capitalise(what),
            },
            409 | 412 => FhirError::Conflict {
                status: status.as_u16(),
                message,
            },
            429 => FhirError::RateLimited {
                retry_after: headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
            s @ 500..=599 => FhirError::Server { status: s, message },
            s => FhirError::Refused { status: s, message },
        })
    }

    pub(crate) fn transport_error(&self, err: &reqwest::Error) -> FhirError {
        if err.is_timeout() {
            FhirError::Timeout {
                after: self.limits.timeout,
            }
        } else if err.is_connect() {
            FhirError::Unreachable {
                base: self.base.to_string(),
            }
        } else {
            // The message of a reqwest error holds the URL, which may carry
            // search parameters: say what failed without it.
            FhirError::Unreachable {
                base: self.base.to_string(),
            }
        }
    }

    /// Read a body, refusing it as soon as it passes the size limit.
    async fn read_body(&self, response: reqwest::Response) -> Result<Vec<u8>, FhirError> {
        let limit = self.limits.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|n| n as usize > limit)
        {
            return Err(FhirError::TooLarge { limit });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(&e))?;
            if body.len() + chunk.len() > limit {
                return Err(FhirError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The resource type a FHIR URL is about (its first capitalised path
/// segment): what log lines name instead of the id or the query.
fn resource_type_of(url: &Url) -> &str {
    url.path_segments()
        .and_then(|mut s| s.find(|seg| seg.starts_with(|c: char| c.is_ascii_uppercase())))
        .unwrap_or("(base)")
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn parse_json(body: &[u8], what: &str) -> Result<Value, FhirError> {
    serde_json::from_slice(body).map_err(|e| FhirError::Invalid {
        what: what.into(),
        detail: format!("malformed JSON at line {} column {}", e.line(), e.column()),
    })
}

/// `W/"3"` → `3`.
fn etag_version(headers: &header::HeaderMap) -> Option<String> {
    let raw = headers.get(header::ETAG)?.to_str().ok()?;
    Some(raw.trim_start_matches("W/").trim_matches('"').to_string())
}

/// `http://x/fhir/Task/12/_history/1` → `Task/12`.
pub fn reference_from_location(location: &str, resource_type: &str) -> Option<String> {
    let mut parts = location.split('/').skip_while(|p| *p != resource_type);
    let t = parts.next()?;
    let id = parts.next()?;
    is_valid_id(id).then(|| format!("{t}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_reach_a_url() {
        assert!(is_valid_id("passerelle-p01"));
        assert_eq!(Id::parse("pas-t1").unwrap().as_str(), "pas-t1");
        assert_eq!(Id::parse("../metadata"), Err(InvalidId));
        assert!(serde_json::from_str::<Id>(r#""a/b""#).is_err());
        assert_eq!(
            serde_json::from_str::<Id>(r#""t.1""#).unwrap().as_str(),
            "t.1"
        );
        assert!(is_valid_id("123.a"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("../metadata"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a?b"));
        assert!(!is_valid_id(&"a".repeat(65)));
    }

    #[test]
    fn lazy_pages_decode_entries_as_they_are_read() {
        let client = FhirClient::new(
            FhirClient::http_client(),
            Url::parse("http://h/fhir/").unwrap(),
            Limits::default(),
        );
        let body = br#"{"resourceType":"Bundle","type":"searchset",
            "link":[{"relation":"self","url":"http://h/fhir/Task"},
                    {"relation":"next","url":"http://h/fhir/Task?page=2"}],
            "entry":[{"resource":{"resourceType":"Task","id":"t1","status":"requested"}},
                     {"resource":{"resourceType":"ServiceRequest","id":"s1"},"search":{"mode":"include"}},
                     {"fullUrl":"http://h/fhir/Task/gone"},
                     {"resource":{"id":"no-type"}},
                     {"resource":{"resourceType":"Task","id":"t2","status":"completed"}}]}"#;
        let page = client.lazy_page(body, "the Task search").unwrap();
        assert_eq!(page.count("Task"), 2);
        assert_eq!(page.count("ServiceRequest"), 1);
        let ids: Vec<String> = page
            .resources("Task")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["t1", "t2"]);
        assert_eq!(
            page.next.as_ref().map(Url::as_str),
            Some("http://h/fhir/Task?page=2")
        );

        // A page with no entries, then what is refused, each with a clear error.
        let empty = client
            .lazy_page(br#"{"resourceType":"Bundle","type":"searchset"}"#, "w")
            .unwrap();
        assert_eq!(empty.count("Task"), 0);
        assert!(empty.next.is_none());
        let error = |body: &[u8]| {
            client
                .lazy_page(body, "the Task search")
                .unwrap_err()
                .to_string()
        };
        assert!(error(b"{\"resourceType\":\"Bundle\",").contains("malformed search Bundle"));
        assert!(error(br#"{"resourceType":"Patient"}"#).contains("expected a Bundle"));
        assert!(
            error(br#"{"resourceType":"Bundle","entry":{"resource":{}}}"#)
                .contains("malformed search Bundle")
        );
        assert!(
            error(br#"{"resourceType":"Bundle","link":[{"relation":"next","url":"http://elsewhere/fhir/Task"}]}"#)
                .contains("another server")
        );
    }

    #[test]
    fn locations_become_references() {
        assert_eq!(
            reference_from_location("http://h/fhir/Task/12/_history/1", "Task").as_deref(),
            Some("Task/12")
        );
        assert_eq!(
            reference_from_location("Task/ab-1", "Task").as_deref(),
            Some("Task/ab-1")
        );
        assert_eq!(
            reference_from_location("http://h/fhir/Patient/1", "Task"),
            None
        );
    }

    #[test]
    fn paging_links_must_stay_on_the_server() {
        let c = FhirClient::new(
            reqwest::Client::new(),
            Url::parse("http://h:8080/fhir").unwrap(),
            Limits::default(),
        );
        assert!(c.same_server("http://h:8080/fhir/Task?page=2").is_ok());
        assert!(c.same_server("Task?page=2").is_ok());
        assert!(c.same_server("http://evil:8080/fhir/Task?page=2").is_err());
        assert!(c.same_server("http://h:8080/other/Task").is_err());
    }

    #[test]
    fn a_bad_entry_is_skipped_and_the_others_kept() {
        let c = FhirClient::new(
            reqwest::Client::new(),
            Url::parse("http://h/fhir/").unwrap(),
            Limits::default(),
        );
        let bundle = serde_json::json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "Task", "id": "a", "status": "requested", "intent": "order"}},
                {"resource": {"resourceType": "Task", "id": "b", "status": "not-a-status", "intent": "order"}},
                {"resource": {"resourceType": "Task", "id": "c", "status": "accepted", "intent": "order"}},
                {"resource": {"resourceType": "Patient", "id": "p"}}
            ]
        });
        let page = c.page_from_bundle(bundle, "test").unwrap();
        let tasks: Decoded<fhir_sdk::r4b::resources::Task> = page.resources("Task");
        assert_eq!(tasks.items.len(), 2);
        assert_eq!(tasks.skipped, 1);
        let ids: Vec<_> = tasks.items.iter().map(|t| t.id.clone().unwrap()).collect();
        assert_eq!(ids, vec!["a", "c"]);
    }
}
