//! Where the community resource directory comes from: the file shipped with
//! Passerelle, a local HSDS 3 JSON file, or an Open Referral HSDS 3 API,
//! cached on disk.
//!
//! The directory is read once, at start-up ([`load`]). There is no
//! background refresh: a directory fetched from an API is used from the
//! cache until it is older than the TTL (`PASSERELLE_DIRECTORY_CACHE_HOURS`),
//! and only a restart after that fetches it again.
//!
//! # The HSDS API
//!
//! As read in the GitHub repository `openreferral/specification`:
//! `schema/openapi.json` at commit `0adc618fc73f`, `docs/hsds/api_reference.md`
//! at `125f253edcc8` and `schema/compiled/service_list.json` at `0aadc412d959`.
//!
//! * `GET {base}/services?page=N&per_page=M` answers a `Page`: `total_items`,
//!   `total_pages`, `page_number`, `size`, `first_page`, `last_page`, `empty`
//!   (the only one the schema requires) and `contents`, the services with
//!   "only one-to-one fields": list entries "need not contain arrays of child
//!   entities". We also send `full=true`, the specification's parameter asking
//!   for fully nested services; a server may ignore it.
//! * `GET {base}/services/{id}` answers one fully nested service (the shape of
//!   `fixtures/directory/hsds.json`'s entries).
//!
//! Pages are numbered from 1. A list entry that lacks a part the search reads
//! (`attributes`, `service_at_locations`, `languages`, `phones` or
//! `organization`) is replaced by its full record, fetched at most
//! [`ApiLimits::concurrency`] at a time. Entries whose `status` is not
//! `active` are not fetched: the directory keeps active services only.
//! Query parameters of the base URL (an API key, say) are kept on every
//! request; user and password in the URL are sent as HTTP Basic
//! authentication.
//!
//! # Limits
//!
//! A broken or hostile server cannot hang start-up or exhaust memory: every
//! request has a timeout (body included), every answer a size limit, the
//! whole load a deadline, and the listing a maximum number of pages and of
//! services (see [`ApiLimits`]). A page that only repeats services already
//! seen (a server ignoring `page`) stops the load.
//!
//! # Cache
//!
//! A successful API load is written, compiled into the shape of the shipped
//! file (`{"hsds_version":"3.1","services":[...]}`), to
//! `<cache dir>/<first 16 hex digits of sha256(base URL)>.json`, atomically
//! (a temporary file renamed over it). Its age is the file's modification
//! time. At start-up a cache younger than the TTL is used without any
//! request; an older one is fetched again, and used (stale, with a warning)
//! only when the fetch fails. With no cache and a failed fetch, [`load`]
//! fails with the URL and the cause, and so does start-up.
//!
//! Log lines and errors name the base URL without its user, password or
//! query, which may hold credentials.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::DirectoryArgs;
use crate::domain::directory::{Directory, SHIPPED_DIRECTORY};

/// Where the directory is read from.
#[derive(Debug, Clone)]
pub enum DirectorySource {
    /// `fixtures/directory/hsds.json`, built into the binary.
    Shipped,
    /// A local HSDS JSON file in the shape of the shipped one.
    File(PathBuf),
    /// An HSDS 3 API, cached locally.
    Api(ApiSource),
}

/// An HSDS 3 API and its cache.
#[derive(Debug, Clone)]
pub struct ApiSource {
    /// The API's base URL (`{base}/services` is the list).
    pub base: Url,
    /// The folder the compiled directory is cached in.
    pub cache_dir: PathBuf,
    /// A cache younger than this is used without a request.
    pub ttl: Duration,
    pub limits: ApiLimits,
}

/// Bounds on what one API load may cost.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Time allowed for one request, from connecting to the end of the body.
    pub timeout: Duration,
    /// Time allowed for the whole load (every page and every record).
    pub deadline: Duration,
    /// Largest answer accepted, in bytes.
    pub max_response_bytes: usize,
    /// Most pages of `/services` read; a longer listing is refused.
    pub max_pages: u32,
    /// `per_page` asked for (the server may choose another size).
    pub per_page: u32,
    /// Most services accepted.
    pub max_services: usize,
    /// Full records (`/services/{id}`) fetched at once.
    pub concurrency: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            max_response_bytes: 16 * 1024 * 1024,
            max_pages: 1000,
            per_page: 100,
            max_services: 20_000,
            concurrency: 8,
        }
    }
}

/// Where the loaded directory came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// The directory shipped with Passerelle.
    Shipped,
    /// A local file.
    File(PathBuf),
    /// Fetched from the API just now (and cached).
    Api { url: String },
    /// Read from a cache younger than the TTL; no request was made.
    FreshCache { url: String, age: Duration },
    /// The API failed; read from an older cache.
    StaleCache {
        url: String,
        age: Duration,
        cause: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Shipped => write!(f, "the directory shipped with Passerelle"),
            Origin::File(path) => write!(f, "the file {}", path.display()),
            Origin::Api { url } => write!(f, "the HSDS API at {url}"),
            Origin::FreshCache { url, age } => {
                write!(f, "the cache of {url} ({} old)", human_age(*age))
            }
            Origin::StaleCache { url, age, cause } => write!(
                f,
                "a stale cache of {url} ({} old), because the API failed: {cause}",
                human_age(*age)
            ),
        }
    }
}

/// A directory and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub directory: Directory,
    pub origin: Origin,
    /// Active services in the directory.
    pub services: usize,
}

impl Loaded {
    fn new(directory: Directory, origin: Origin) -> Self {
        Loaded {
            services: directory.services.len(),
            directory,
            origin,
        }
    }
}

/// Why the directory could not be loaded; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "PASSERELLE_DIRECTORY_URL and PASSERELLE_DIRECTORY_FILE are both set: the directory comes from one of them"
    )]
    BothSources,
    #[error("the resource directory URL {0} is not an http or https URL")]
    BadUrl(String),
    #[error("cannot read the resource directory file {}: {cause}", .path.display())]
    File { path: PathBuf, cause: String },
    #[error("cannot load the resource directory from {url}: {cause}")]
    Api { url: String, cause: String },
}

impl DirectorySource {
    /// The source the settings name: the API, the file, else the shipped directory.
    pub fn from_args(args: &DirectoryArgs) -> Result<Self, DirectoryError> {
        match (&args.directory_url, &args.directory_file) {
            (Some(_), Some(_)) => Err(DirectoryError::BothSources),
            (Some(url), None) => Ok(DirectorySource::Api(ApiSource {
                base: url.clone(),
                cache_dir: args
                    .directory_cache_dir
                    .clone()
                    .unwrap_or_else(|| crate::config::cache_dir().join("directory")),
                ttl: Duration::from_secs(args.directory_cache_hours.saturating_mul(3600)),
                limits: ApiLimits::default(),
            })),
            (None, Some(path)) => Ok(DirectorySource::File(path.clone())),
            (None, None) => Ok(DirectorySource::Shipped),
        }
    }
}

/// Load the directory from `source` (see the module documentation).
pub async fn load(
    http: &reqwest::Client,
    source: &DirectorySource,
) -> Result<Loaded, DirectoryError> {
    match source {
        DirectorySource::Shipped => {
            let directory =
                Directory::parse(SHIPPED_DIRECTORY).map_err(|cause| DirectoryError::File {
                    path: "fixtures/directory/hsds.json".into(),
                    cause,
                })?;
            Ok(Loaded::new(directory, Origin::Shipped))
        }
        DirectorySource::File(path) => {
            let file_error = |cause: String| DirectoryError::File {
                path: path.clone(),
                cause,
            };
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| file_error(e.to_string()))?;
            let directory = Directory::parse(&text).map_err(file_error)?;
            Ok(Loaded::new(directory, Origin::File(path.clone())))
        }
        DirectorySource::Api(api) => load_api(http, api).await,
    }
}

/// The cache file for `base`.
pub fn cache_path(cache_dir: &Path, base: &Url) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(normalised(base).as_str().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    cache_dir.join(format!("{hex}.json"))
}

/// The base URL as log lines and errors show it: no user, password, query
/// or fragment.
pub fn redacted(base: &Url) -> String {
    let mut u = base.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The base with no trailing slash on its path (so `…/hsds` and `…/hsds/`
/// share a cache).
fn normalised(base: &Url) -> Url {
    let mut u = base.clone();
    let path = u.path().trim_end_matches('/').to_string();
    u.set_path(&path);
    u.set_fragment(None);
    u
}

async fn load_api(http: &reqwest::Client, api: &ApiSource) -> Result<Loaded, DirectoryError> {
    let url = redacted(&api.base);
    if !matches!(api.base.scheme(), "http" | "https") || api.base.cannot_be_a_base() {
        return Err(DirectoryError::BadUrl(url));
    }
    let path = cache_path(&api.cache_dir, &api.base);
    let cached = read_cache(&path).await;
    if let Some((text, age)) = &cached
        && *age < api.ttl
    {
        match Directory::parse(text) {
            Ok(directory) => {
                return Ok(Loaded::new(
                    directory,
                    Origin::FreshCache { url, age: *age },
                ));
            }
            Err(e) => {
                tracing::warn!(cache = %path.display(), error = %e, "the cached resource directory is unreadable; fetching it again");
            }
        }
    }
    let fetched = match tokio::time::timeout(api.limits.deadline, fetch(http, api)).await {
        Ok(Ok(text)) => Directory::parse(&text)
            .map(|d| (d, text))
            .map_err(|e| format!("the services are not a valid directory: {e}")),
        Ok(Err(cause)) => Err(cause),
        Err(_) => Err(format!(
            "the load took longer than {} s",
            api.limits.deadline.as_secs()
        )),
    };
    match fetched {
        Ok((directory, text)) => {
            if let Err(e) = write_cache(&path, &text).await {
                tracing::warn!(cache = %path.display(), error = %e, "cannot cache the resource directory; it will be fetched again at the next start");
            }
            Ok(Loaded::new(directory, Origin::Api { url }))
        }
        Err(cause) => {
            let Some((text, age)) = cached else {
                return Err(DirectoryError::Api {
                    url,
                    cause: format!("{cause} (and there is no cached copy)"),
                });
            };
            match Directory::parse(&text) {
                Ok(directory) => {
                    tracing::warn!(
                        url = %url,
                        age = %human_age(age),
                        error = %cause,
                        "the HSDS API failed; using the stale cached resource directory"
                    );
                    Ok(Loaded::new(
                        directory,
                        Origin::StaleCache { url, age, cause },
                    ))
                }
                Err(e) => Err(DirectoryError::Api {
                    url,
                    cause: format!("{cause} (and the cached copy is unreadable: {e})"),
                }),
            }
        }
    }
}

/// The cached text and its age, if there is a cache.
async fn read_cache(path: &Path) -> Option<(String, Duration)> {
    let read = async {
        let meta = tokio::fs::metadata(path).await?;
        let text = tokio::fs::read_to_string(path).await?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        Ok::<_, std::io::Error>((text, age))
    };
    match read.await {
        Ok(found) => Some(found),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "cannot read the cached resource directory");
            None
        }
    }
}

/// Write `text` to `path` atomically: a temporary file beside it, renamed.
async fn write_cache(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(
        ".{}.{}-{:016x}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("directory"),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(text.as_bytes()).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

/// One `/services` page; only `empty` is required by the schema.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    total_items: Option<u64>,
    #[serde(default)]
    total_pages: Option<u64>,
    #[serde(default)]
    last_page: Option<bool>,
    #[serde(default)]
    empty: Option<bool>,
    #[serde(default)]
    contents: Option<Vec<Value>>,
}

/// The parts of a service the search reads, which a list entry may lack.
const NESTED_ARRAYS: [&str; 4] = ["attributes", "service_at_locations", "languages", "phones"];

/// Every service, fully nested, as the JSON text of a directory file.
async fn fetch(http: &reqwest::Client, api: &ApiSource) -> Result<String, String> {
    let limits = api.limits;
    let mut entries: Vec<Value> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut total_items = None;
    let mut page_number: u32 = 1;
    loop {
        if page_number > limits.max_pages {
            return Err(format!(
                "the service list has more than {} pages",
                limits.max_pages
            ));
        }
        let mut url = endpoint(&api.base, &["services"]);
        url.query_pairs_mut()
            .append_pair("page", &page_number.to_string())
            .append_pair("per_page", &limits.per_page.to_string())
            .append_pair("full", "true");
        let what = format!("GET services?page={page_number}");
        let body = get(http, url, &limits)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| format!("{what}: the answer is not an HSDS Page: {e}"))?;
        if let Some(pages) = page.total_pages
            && pages > u64::from(limits.max_pages)
        {
            return Err(format!(
                "{what}: the service list has {pages} pages, more than the {} accepted",
                limits.max_pages
            ));
        }
        total_items = page.total_items.or(total_items);
        let contents = match page.contents {
            Some(c) => c,
            None if page.empty == Some(true) => Vec::new(),
            None => return Err(format!("{what}: the Page has no `contents`")),
        };
        if contents.is_empty() {
            break;
        }
        let mut new = 0;
        for entry in contents {
            let id = entry
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{what}: a service has no `id`"))?
                .to_string();
            if seen.insert(id) {
                entries.push(entry);
                new += 1;
            }
        }
        if new == 0 {
            return Err(format!(
                "{what}: the page repeats services already listed (is `page` ignored?)"
            ));
        }
        if entries.len() > limits.max_services {
            return Err(format!(
                "the service list has more than {} services",
                limits.max_services
            ));
        }
        let last = page.last_page == Some(true)
            || page
                .total_pages
                .is_some_and(|pages| u64::from(page_number) >= pages);
        if last {
            break;
        }
        page_number += 1;
    }
    if let Some(total) = total_items
        && total != entries.len() as u64
    {
        tracing::warn!(
            listed = entries.len(),
            total_items = total,
            "the HSDS API's service count differs from what its pages listed"
        );
    }
    let services: Vec<Value> = futures::stream::iter(entries.into_iter().map(|entry| async move {
        if is_complete(&entry) || !is_active(&entry) {
            return Ok(entry);
        }
        let id = entry.get("id").and_then(Value::as_str).unwrap_or_default();
        full_record(http, api, id).await
    }))
    .buffered(limits.concurrency.max(1))
    .try_collect()
    .await?;
    serde_json::to_string(&serde_json::json!({
        "hsds_version": "3.1",
        "source": redacted(&api.base),
        "services": services,
    }))
    .map_err(|e| e.to_string())
}

fn is_complete(entry: &Value) -> bool {
    NESTED_ARRAYS
        .iter()
        .all(|k| entry.get(k).is_some_and(Value::is_array))
        && entry.get("organization").is_some_and(Value::is_object)
}

fn is_active(entry: &Value) -> bool {
    entry
        .get("status")
        .and_then(Value::as_str)
        .is_none_or(|s| s == "active")
}

/// `GET {base}/services/{id}`.
async fn full_record(http: &reqwest::Client, api: &ApiSource, id: &str) -> Result<Value, String> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
    if !valid {
        return Err(format!(
            "the service id {:?} is not a valid id",
            truncate(id, 40)
        ));
    }
    let what = format!("GET services/{id}");
    let body = get(http, endpoint(&api.base, &["services", id]), &api.limits)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let record: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{what}: the answer is not JSON: {e}"))?;
    if !record.is_object() {
        return Err(format!("{what}: the answer is not a service"));
    }
    match record.get("id").and_then(Value::as_str) {
        Some(got) if got == id => Ok(record),
        _ => Err(format!("{what}: the answer is not the service asked for")),
    }
}

/// `{base}/a/b`, keeping the base's query parameters.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = normalised(base);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// One GET: a 2xx answer's body, within the time and size limits.
async fn get(http: &reqwest::Client, url: Url, limits: &ApiLimits) -> Result<Vec<u8>, String> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(limits.timeout)
        .send()
        .await
        .map_err(|e| describe(&e, limits))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let limit = limits.max_response_bytes;
    let too_large = || format!("the answer is larger than {limit} bytes");
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| describe(&e, limits))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error, without its URL (which may carry credentials).
fn describe(e: &reqwest::Error, limits: &ApiLimits) -> String {
    if e.is_timeout() {
        return format!(
            "no complete answer within {} s",
            limits.timeout.as_secs_f32()
        );
    }
    let mut text = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    if let Some(cause) = last {
        text.push_str(": ");
        text.push_str(&cause);
    }
    text
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// "3 h 12 min", "45 s".
pub fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_query_and_encode_the_id() {
        let base = Url::parse("https://u:p@hsds.example.org/api/v3/?key=abc").unwrap();
        assert_eq!(
            endpoint(&base, &["services"]).as_str(),
            "https://u:p@hsds.example.org/api/v3/services?key=abc"
        );
        assert_eq!(
            endpoint(&base, &["services", "a b"]).as_str(),
            "https://u:p@hsds.example.org/api/v3/services/a%20b?key=abc"
        );
        assert_eq!(redacted(&base), "https://hsds.example.org/api/v3/");
        let dir = Path::new("/c");
        assert_eq!(
            cache_path(dir, &base),
            cache_path(
                dir,
                &Url::parse("https://u:p@hsds.example.org/api/v3?key=abc").unwrap()
            )
        );
        assert_ne!(
            cache_path(dir, &base),
            cache_path(
                dir,
                &Url::parse("https://hsds.example.org/api/v3/?key=other").unwrap()
            )
        );
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(human_age(Duration::from_secs(42)), "42 s");
        assert_eq!(human_age(Duration::from_secs(600)), "10 min");
        assert_eq!(human_age(Duration::from_secs(3 * 3600 + 720)), "3 h 12 min");
    }
}
